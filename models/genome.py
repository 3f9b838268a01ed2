"""Genomes of the architecture search: Q-network shape and key training hyper-parameters, always valid.

Every gene is a choice among allowed values, so random draws, mutations and crossovers
can only ever produce valid genomes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.dqn import DQNParams
from models.features import FeatureSpec
from models.qnet import Architecture

# gene -> allowed values (the search space)
GENES: dict[str, tuple[Any, ...]] = {
    "fast_hidden": (16, 32, 64, 128),
    "fast_layers": (1, 2),
    "slow_hidden": (8, 16, 32, 64),
    "slow_layers": (1, 2),
    "slow_stride": (5, 10, 15, 30),
    "head_hidden": (16, 32, 64, 128),
    "dueling": (False, True),
    "return_windows": ((1, 5, 15, 60), (1, 5, 30), (1, 15, 60, 240)),
    "lr": (1e-4, 3e-4, 1e-3, 3e-3),
    "gamma": (0.9, 0.95, 0.99, 0.995),
    "batch_sessions": (8, 16, 32, 64),
    "target_update_every": (1, 5, 10, 25),
}
ARCH_GENES = (
    "fast_hidden",
    "fast_layers",
    "slow_hidden",
    "slow_layers",
    "slow_stride",
    "head_hidden",
    "dueling",
)
PARAM_GENES = ("lr", "gamma", "batch_sessions", "target_update_every")


@dataclass(frozen=True)
class Genome:
    """One individual: an index into GENES[name] for every gene."""

    choices: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.choices) != len(GENES):
            raise ValueError(f"a genome has {len(GENES)} genes, not {len(self.choices)}")
        for (name, options), i in zip(GENES.items(), self.choices, strict=True):
            if not 0 <= i < len(options):
                raise ValueError(f"gene {name}: choice {i} outside 0..{len(options) - 1}")

    @property
    def values(self) -> dict[str, Any]:
        return {
            name: options[i] for (name, options), i in zip(GENES.items(), self.choices, strict=True)
        }

    def architecture(self) -> Architecture:
        v = self.values
        return Architecture(**{k: v[k] for k in ARCH_GENES})

    def params(self, base: DQNParams) -> DQNParams:
        v = self.values
        return DQNParams.from_dict({**base.to_dict(), **{k: v[k] for k in PARAM_GENES}})

    def feature_spec(self, base: FeatureSpec) -> FeatureSpec:
        return FeatureSpec.from_dict(
            {**base.to_dict(), "return_windows": list(self.values["return_windows"])}
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genome:
        choices = []
        for name, options in GENES.items():
            value = tuple(d[name]) if isinstance(d[name], list) else d[name]
            if value not in options:
                raise ValueError(f"gene {name}: {value!r} is not one of {options}")
            choices.append(options.index(value))
        return cls(tuple(choices))

    def cost(self) -> float:
        """A rough relative training cost, for scheduling the largest evaluations first."""
        v = self.values
        per_step = (
            v["fast_hidden"] ** 2 * v["fast_layers"]
            + v["slow_hidden"] ** 2 * v["slow_layers"] / v["slow_stride"]
        )
        return float(per_step * v["batch_sessions"])

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def random_genome(rng: np.random.Generator) -> Genome:
    return Genome(tuple(int(rng.integers(len(options))) for options in GENES.values()))


def mutate(genome: Genome, rng: np.random.Generator, rate: float) -> Genome:
    """Redraw each gene with probability `rate`; at least one gene always changes."""
    choices = list(genome.choices)
    sizes = [len(o) for o in GENES.values()]
    flips = rng.random(len(choices)) < rate
    if not flips.any():
        flips[int(rng.integers(len(choices)))] = True
    for i in np.nonzero(flips)[0]:
        # Draw among the *other* options, so a flipped gene really changes.
        step = int(rng.integers(1, sizes[i]))
        choices[i] = (choices[i] + step) % sizes[i]
    return Genome(tuple(choices))


def crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    """Uniform crossover: each gene from either parent."""
    pick = rng.random(len(a.choices)) < 0.5
    return Genome(tuple(x if p else y for x, y, p in zip(a.choices, b.choices, pick, strict=True)))


def default_genome() -> Genome:
    """The built-in defaults (Architecture() and DQNParams()) as a genome."""
    arch, params, spec = Architecture(), DQNParams(), FeatureSpec()
    values = {
        **arch.to_dict(),
        **{k: getattr(params, k) for k in PARAM_GENES},
        "return_windows": spec.return_windows,
    }
    return Genome.from_dict({k: values[k] for k in GENES})
