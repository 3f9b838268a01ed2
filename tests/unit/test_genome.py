"""Genome operators always yield valid genomes; selection is seeded and keeps the elite."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dqn import DQNParams
from models.features import FeatureSpec
from models.genome import GENES, Genome, crossover, default_genome, mutate, random_genome
from models.search import Scored, SearchSettings, initial_population, next_generation
from models.train import objective

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def assert_valid(g: Genome) -> None:
    Genome(g.choices)  # re-validates every gene
    arch = g.architecture()
    assert arch.fast_hidden in GENES["fast_hidden"] and arch.slow_stride in GENES["slow_stride"]
    params = g.params(DQNParams())
    assert params.lr in GENES["lr"] and 0 < params.gamma < 1
    assert g.feature_spec(FeatureSpec()).return_windows in GENES["return_windows"]


@settings(max_examples=200, deadline=None)
@given(seeds)
def test_random_genomes_are_valid(seed: int) -> None:
    assert_valid(random_genome(np.random.default_rng(seed)))


@settings(max_examples=200, deadline=None)
@given(seeds, st.floats(min_value=0.0, max_value=1.0))
def test_mutation_keeps_genomes_valid_and_always_changes_something(seed: int, rate: float) -> None:
    rng = np.random.default_rng(seed)
    parent = random_genome(rng)
    child = mutate(parent, rng, rate)
    assert_valid(child)
    assert child != parent


@settings(max_examples=200, deadline=None)
@given(seeds)
def test_crossover_takes_each_gene_from_a_parent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_genome(rng), random_genome(rng)
    child = crossover(a, b, rng)
    assert_valid(child)
    assert all(c in (x, y) for c, x, y in zip(child.choices, a.choices, b.choices, strict=True))


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_genomes_round_trip_through_json_values(seed: int) -> None:
    g = random_genome(np.random.default_rng(seed))
    assert Genome.from_dict(g.to_dict()) == g
    assert Genome.from_dict(g.to_dict()).hash() == g.hash()


def test_invalid_genomes_are_refused() -> None:
    with pytest.raises(ValueError, match="genes"):
        Genome((0, 1))
    with pytest.raises(ValueError, match="outside"):
        Genome(tuple(99 for _ in GENES))
    with pytest.raises(ValueError, match="not one of"):
        Genome.from_dict({**default_genome().to_dict(), "fast_hidden": 7})


def test_the_builtin_defaults_are_a_genome() -> None:
    g = default_genome()
    assert g.architecture().fast_hidden == 64 and g.params(DQNParams()).lr == DQNParams().lr


def test_selection_is_seeded_and_keeps_the_elite() -> None:
    s = SearchSettings(population=8, elite=2, seed=3)
    population = initial_population(s)
    assert population == initial_population(s)
    scored = [Scored(g, float(i)) for i, g in enumerate(population)]
    nxt = next_generation(scored, 1, s)
    assert nxt == next_generation(scored, 1, s)
    assert len(nxt) == 8
    assert nxt[:2] == [population[7], population[6]]  # the two fittest, unchanged
    assert next_generation(scored, 1, SearchSettings(population=8, elite=2, seed=4)) != nxt


def test_fitness_is_the_promotion_objective() -> None:
    assert objective({"total_return": 0.10, "max_drawdown": 0.04}) == pytest.approx(0.06)
