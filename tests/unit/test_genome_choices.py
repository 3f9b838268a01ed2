"""The genome's issue-17 genes: they reach the params and the spec, and genomes stored before them load unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dqn import DQNParams
from models.features import FeatureSpec
from models.genome import GENES, LEGACY, Genome, default_genome, random_genome

# A genome as the search stored it before issue 17 (nas_individuals.genome, the registered JSON
# artifact), and the id models.genome.Genome.hash() gave it then: registry ids are genome-<hash>.
OLD_GENOME_JSON = (
    '{"batch_sessions": 16, "dueling": true, "fast_hidden": 64, "fast_layers": 2, "gamma": 0.9, '
    '"head_hidden": 64, "lr": 0.003, "return_windows": [1, 5, 15, 60], "slow_hidden": 8, '
    '"slow_layers": 2, "slow_stride": 10, "target_update_every": 5}'
)
OLD_GENOME_HASH = "774868e89d54"
OLD_DEFAULT_GENOME_HASH = "58018ad88ed7"  # default_genome().hash() before issue 17

NEW_PARAM_GENES = ("action_levels", "reward", "ensemble_size", "updates_per_block")


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_a_random_genomes_params_and_spec_carry_its_choices(seed: int) -> None:
    g = random_genome(np.random.default_rng(seed))
    v = g.values
    params = g.params(DQNParams(cycles=7))
    for name in NEW_PARAM_GENES:
        assert getattr(params, name) == v[name]
    assert params.cycles == 7  # what no gene covers comes from the base
    spy = g.feature_spec(FeatureSpec(symbols=("SPY", "VTI")))
    assert spy.sentiment_inputs == v["sentiment_inputs"]
    assert spy.return_windows == v["return_windows"] and spy.symbols == ("SPY", "VTI")
    # An index no post is about keeps the base spec's inputs: the genome trains the same network.
    index = g.feature_spec(FeatureSpec(symbols=("^GSPC",), timeframe="1Day"))
    assert index.sentiment_inputs == ()
    assert Genome.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_every_new_choice_reaches_the_params_and_the_spec() -> None:
    legacy = Genome.from_dict(json.loads(OLD_GENOME_JSON))
    names = list(GENES)
    for name in [*NEW_PARAM_GENES, "sentiment_inputs"]:
        for i, option in enumerate(GENES[name]):
            choices = list(legacy.choices)
            choices[names.index(name)] = i
            g = Genome(tuple(choices))
            if name == "sentiment_inputs":
                got = g.feature_spec(FeatureSpec(symbols=("BTC/USD",))).sentiment_inputs
            else:
                got = getattr(g.params(DQNParams()), name)
            assert got == option
            # Only a non-legacy choice is written down, and it changes the genome's id.
            assert (name in g.to_dict()) == (option != LEGACY[name])
            assert (g.hash() == OLD_GENOME_HASH) == (option == LEGACY[name])


def test_an_old_stored_genome_loads_to_the_legacy_choices_with_the_same_id() -> None:
    old = json.loads(OLD_GENOME_JSON)
    g = Genome.from_dict(old)
    assert g.hash() == OLD_GENOME_HASH
    assert g.to_dict() == old
    params = g.params(DQNParams())
    assert params.action_levels == () and params.reward == "log_growth"
    assert params.ensemble_size == 1
    assert params.updates_per_block == 1
    # The legacy choices are DQNParams' defaults: the params dict (and run keys) are as before.
    assert params.to_dict() == DQNParams.from_dict({**DQNParams().to_dict(), **old}).to_dict()
    spec = g.feature_spec(FeatureSpec(symbols=("SPY",)))
    assert spec.sentiment_inputs == ()
    assert "sentiment_inputs" not in spec.to_dict()
    assert g.architecture().fast_layers == 2 and g.architecture().dueling is True
    assert default_genome().hash() == OLD_DEFAULT_GENOME_HASH


def test_an_old_genome_without_an_old_gene_is_still_refused() -> None:
    old = json.loads(OLD_GENOME_JSON)
    del old["lr"]
    with pytest.raises(KeyError):
        Genome.from_dict(old)
    with pytest.raises(ValueError, match="not one of"):
        Genome.from_dict({**old, "lr": 1e-3, "reward": "sharpe"})


def test_ensembles_and_more_updates_cost_more() -> None:
    base = Genome.from_dict(json.loads(OLD_GENOME_JSON))
    big = Genome.from_dict({**base.to_dict(), "ensemble_size": 3, "updates_per_block": 4})
    assert big.cost() == pytest.approx(12 * base.cost())


def test_fixed_genes_hold_in_every_individual_and_leave_the_other_draws_alone() -> None:
    from models.search import Scored, SearchSettings, initial_population, next_generation

    fixed = {"ensemble_size": 1, "updates_per_block": 1, "action_levels": [0.0, 0.5, 1.0]}
    free, pinned = (
        SearchSettings(population=12, seed=5),
        SearchSettings(population=12, seed=5, fixed_genes=fixed),
    )
    names = list(GENES)
    first = initial_population(pinned)
    for a, b in zip(initial_population(free), first, strict=True):
        for i, name in enumerate(names):
            if name in fixed:
                assert b.values[name] == (tuple(fixed[name]) if name == "action_levels" else 1)
            else:
                assert a.choices[i] == b.choices[i], name
    scored = [Scored(g, float(i)) for i, g in enumerate(first)]
    for child in next_generation(scored, 1, pinned):
        assert child.values["ensemble_size"] == 1 and child.values["updates_per_block"] == 1
    with pytest.raises(ValueError, match="no gene"):
        SearchSettings(fixed_genes={"ensemble": 1})
    with pytest.raises(ValueError, match="is not one of"):
        SearchSettings(fixed_genes={"ensemble_size": 2})
