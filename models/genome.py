"""Genomes of the architecture search: Q-network shape, training choices and inputs, always valid.

Every gene is a choice among allowed values, so random draws, mutations and crossovers
can only ever produce valid genomes. The genes added with issue 17 (action set,
reward, budget, ensemble size, sentiment inputs) default to the choice that reproduces the
behaviour from before them: a genome stored earlier loads to exactly what it trained, and
keeps its id, because those genes are left out of to_dict() (and so of hash()) at that choice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS
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
    # Issue 17. The first choice of each is the behaviour from before the gene existed (LEGACY).
    "action_levels": ((), (0.0, 0.5, 1.0), (0.0, 0.25, 0.5, 0.75, 1.0)),
    "reward": ("log_growth", "drawdown", "diff_sharpe"),
    "ensemble_size": (1, 3),
    "updates_per_block": (1, 2, 4),
    "sentiment_inputs": (
        (),
        ("symbol_60m", "market_60m"),
        ("symbol_60m", "symbol_24h", "market_60m", "market_24h"),
    ),
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
PARAM_GENES = (
    "lr",
    "gamma",
    "batch_sessions",
    "target_update_every",
    "action_levels",
    "reward",
    "ensemble_size",
    "updates_per_block",
)
LEGACY: dict[str, Any] = {
    name: GENES[name][0]
    for name in (
        "action_levels",
        "reward",
        "ensemble_size",
        "updates_per_block",
        "sentiment_inputs",
    )
}
"""Genes a genome stored before issue 17 lacks, with the choice that reproduces how it trained."""


def sentiment_available(symbol: str) -> bool:
    """Whether posts can be about `symbol`: the universe models.sentiment.MentionMap matches posts to.

    A genome's sentiment inputs apply only to such a symbol (see Genome.feature_spec).
    """
    return symbol in EQUITY_SYMBOLS or symbol in COIN_SYMBOLS


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

    def with_overrides(
        self, architecture: Mapping[str, Any], base: DQNParams, params: Mapping[str, Any]
    ) -> tuple[Architecture, DQNParams]:
        """The genome's architecture and training settings on `base`, with a config's explicit
        `architecture` and `params` options on top (train-agent and nightly-retrain alike)."""
        arch = Architecture.from_dict({**self.architecture().to_dict(), **architecture})
        return arch, DQNParams.from_dict({**self.params(base).to_dict(), **params})

    def feature_spec(self, base: FeatureSpec) -> FeatureSpec:
        """The base spec with the genome's return windows and sentiment inputs.

        The sentiment inputs apply only where the traded symbol is one posts can be about
        (sentiment_available); elsewhere the base spec's are kept, so a searched genome trains
        the same network on an index without posts. On a window without posts the inputs
        read 0 (the loaders' note says so), as every sentiment input does.
        """
        v = self.values
        d: dict[str, Any] = {**base.to_dict(), "return_windows": list(v["return_windows"])}
        if sentiment_available(base.traded):
            d["sentiment_inputs"] = list(v["sentiment_inputs"])
        return FeatureSpec.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """Gene name -> value (tuples as lists); a LEGACY gene at its legacy choice is left out,
        so a genome stored before it existed keeps its dict and hash (its registry id)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in self.values.items()
            if not (k in LEGACY and v == LEGACY[k])
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genome:
        """The genome of a to_dict(); a missing LEGACY gene takes its legacy choice."""
        choices = []
        for name, options in GENES.items():
            raw = d[name] if name not in LEGACY else d.get(name, LEGACY[name])
            value = tuple(raw) if isinstance(raw, list) else raw
            if value not in options:
                raise ValueError(f"gene {name}: {value!r} is not one of {options}")
            choices.append(options.index(value))
        return cls(tuple(choices))

    def cost(self) -> float:
        """A rough relative training cost, for scheduling the largest evaluations first.

        An ensemble trains ensemble_size members; updates_per_block multiplies the updates.
        """
        v = self.values
        per_step = (
            v["fast_hidden"] ** 2 * v["fast_layers"]
            + v["slow_hidden"] ** 2 * v["slow_layers"] / v["slow_stride"]
        )
        updates = v["batch_sessions"] * v["updates_per_block"]
        return float(per_step * updates * v["ensemble_size"])

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def gene_choice(name: str, value: Any) -> int:
    """The index of `value` among GENES[name]'s options (lists read as tuples); ValueError otherwise."""
    if name not in GENES:
        raise ValueError(f"no gene {name!r}; the genes are {', '.join(GENES)}")
    options = GENES[name]
    wanted = tuple(value) if isinstance(value, list) else value
    if wanted not in options:
        raise ValueError(f"gene {name}: {value!r} is not one of {list(options)}")
    return options.index(wanted)


def pin(genome: Genome, fixed: Mapping[str, Any]) -> Genome:
    """`genome` with the genes named in `fixed` set to the given values (a narrower search
    space: e.g. {'ensemble_size': 1} where ensembles cost too much). The other genes, and the
    random draws that made them, are untouched."""
    if not fixed:
        return genome
    names = list(GENES)
    choices = list(genome.choices)
    for name, value in fixed.items():
        choice = gene_choice(name, value)
        choices[names.index(name)] = choice
    return Genome(tuple(choices))


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
        "sentiment_inputs": spec.sentiment_inputs,
    }
    return Genome.from_dict({k: values[k] for k in GENES})
