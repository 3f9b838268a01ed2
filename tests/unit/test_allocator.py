"""SVM allocator: labels, capped weights, baselines, pickle-free export, planted signal vs noise."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from models.allocator import (
    ARRAYS,
    META,
    Allocator,
    AllocatorConfig,
    AllocatorFit,
    AllocatorParams,
    compute_labels,
    compute_weights,
    evaluate_allocator,
    export_allocator,
    load_allocator,
    save_allocator,
    split_by_period,
    train_allocator,
)
from models.registry import ModelLoadError

T0 = datetime(2020, 1, 6, tzinfo=UTC)
WEEKLY = 52.0
N_COINS = 14
COST_BPS = 20.0


def synthetic_panel(seed: int, periods: int, signal: float) -> pl.DataFrame:
    """14 coins, weekly; next_return = signal * (q_adv + forecast) / sqrt(2) + market + noise.

    The last period has no next_return (its outcome is not known yet), as in live use.
    """
    rng = np.random.default_rng(seed)
    shape = (periods, N_COINS)
    q_adv, forecast, sentiment = (rng.normal(size=shape) for _ in range(3))
    vol = np.abs(rng.normal(0.04, 0.01, size=shape))
    drawdown = -np.abs(rng.normal(0.0, 0.1, size=shape))
    market = rng.normal(0.0, 0.02, size=(periods, 1))
    next_return = (
        signal * (q_adv + forecast) / math.sqrt(2.0) + market + rng.normal(0.0, 0.03, size=shape)
    )
    frame = pl.DataFrame(
        {
            "period": [T0 + timedelta(weeks=t) for t in range(periods) for _ in range(N_COINS)],
            "symbol": [f"C{j:02d}" for _ in range(periods) for j in range(N_COINS)],
            "q_adv": q_adv.ravel(),
            "forecast": forecast.ravel(),
            "sentiment": sentiment.ravel(),
            "vol": vol.ravel(),
            "drawdown": drawdown.ravel(),
            "next_return": next_return.ravel(),
        }
    )
    last = T0 + timedelta(weeks=periods - 1)
    return frame.with_columns(
        next_return=pl.when(pl.col("period") == last).then(None).otherwise(pl.col("next_return"))
    )


def by_strategy(table: pl.DataFrame) -> dict[str, dict[str, float]]:
    return {str(row.pop("strategy")): row for row in table.iter_rows(named=True)}


@pytest.fixture(scope="module")
def planted() -> tuple[AllocatorFit, pl.DataFrame]:
    """An allocator tuned on the older 70% of a panel with a planted signal, and the held-out rest."""
    fit_part, test_part = split_by_period(synthetic_panel(seed=7, periods=200, signal=0.012), 0.3)
    return train_allocator(fit_part, AllocatorConfig(cost_bps=COST_BPS)), test_part


# --------------------------------------------------------------------------- labels and weights


def test_labels_beat_the_round_trip_cost() -> None:
    frame = pl.DataFrame({"next_return": [0.001, 0.0021, 0.002, -0.01, None]})
    assert compute_labels(frame, 20.0).get_column("label").to_list() == [0, 1, 0, 0, None]
    assert compute_labels(frame, 0.0).get_column("label").to_list() == [1, 1, 1, 0, None]


def test_weights_follow_probability_with_caps_and_cash() -> None:
    frame = pl.DataFrame(
        {
            "period": [T0, T0, T0, T0 + timedelta(weeks=1), T0 + timedelta(weeks=1)],
            "symbol": ["A", "B", "C", "A", "B"],
            "proba": [0.8, 0.6, 0.3, 0.55, 0.55],
        }
    )
    weights = compute_weights(frame, threshold=0.5, cap=0.5).get_column("weight").to_numpy()
    # Period 1: A's share 0.8 / 1.4 is cut to the cap, B keeps 0.6 / 1.4, C is below the
    # threshold; 1 - 0.5 - 0.4286 stays in cash. Period 2: two equal shares of 0.5.
    np.testing.assert_allclose(weights, [0.5, 0.6 / 1.4, 0.0, 0.5, 0.5], rtol=1e-12)


def test_every_probability_below_the_threshold_means_all_cash() -> None:
    frame = pl.DataFrame(
        {"period": [T0] * 4, "symbol": ["A", "B", "C", "D"], "proba": [0.49, 0.2, 0.0, 0.4999]}
    )
    assert (
        compute_weights(frame, threshold=0.5, cap=0.3).get_column("weight").to_list() == [0.0] * 4
    )


@settings(max_examples=150, deadline=None)
@given(
    periods=st.lists(
        st.lists(st.floats(0.0, 1.0), min_size=1, max_size=16), min_size=1, max_size=4
    ),
    threshold=st.floats(0.0, 1.0),
    cap=st.floats(0.01, 1.0),
)
def test_weights_are_long_only_capped_and_sum_to_at_most_one(
    periods: list[list[float]], threshold: float, cap: float
) -> None:
    frame = pl.DataFrame(
        {
            "period": [T0 + timedelta(weeks=t) for t, ps in enumerate(periods) for _ in ps],
            "symbol": [f"C{j}" for ps in periods for j in range(len(ps))],
            "proba": [p for ps in periods for p in ps],
        }
    )
    out = compute_weights(frame, threshold, cap)
    w = out.get_column("weight").to_numpy()
    p = out.get_column("proba").to_numpy()
    assert np.all(w >= 0.0)
    assert np.all(w <= cap + 1e-12)
    assert np.all(w[p < threshold] == 0.0)
    for _, group in out.group_by("period"):
        gw = group.get_column("weight").to_numpy()
        gp = group.get_column("proba").to_numpy()
        assert gw.sum() <= 1.0 + 1e-9
        selected = gp >= threshold
        if gp[selected].sum() == 0.0:  # nothing selected, or only zero probabilities
            assert np.all(gw == 0.0)
            continue
        # Below the cap a coin's weight is its share of the selected coins' probability.
        share = np.where(selected, gp, 0.0) / gp[selected].sum()
        np.testing.assert_allclose(gw, np.minimum(share, cap), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- evaluation


class FixedAllocator(Allocator):
    """Every coin gets the same probability: the allocator reduces to capped equal weight."""

    def __init__(self, proba: float, params: AllocatorParams) -> None:
        self.proba = proba
        self.params = params

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        return np.full(frame.height, self.proba)


def test_baselines_match_hand_computed_returns() -> None:
    periods = [T0 + timedelta(weeks=t) for t in range(3)]
    frame = pl.DataFrame(
        {
            "period": [p for p in periods for _ in range(2)],
            "symbol": ["A", "B"] * 3,
            "q_adv": [1.0, -1.0, -1.0, -1.0, 1.0, 1.0],
            "forecast": 0.0,
            "sentiment": 0.0,
            "vol": 0.0,
            "drawdown": 0.0,
            "next_return": [0.10, 0.0, -0.05, 0.10, 0.02, -0.10],
        }
    )
    params = AllocatorParams(c=1.0, gamma=0.1, threshold=0.5, cap=0.5, cost_bps=0.0)
    table = by_strategy(evaluate_allocator(FixedAllocator(0.9, params), frame, WEEKLY))
    equal = 1.05 * 1.025 * 0.96 - 1.0
    assert table["equal_weight"]["total_return"] == pytest.approx(equal, rel=1e-12)
    assert table["allocator"]["total_return"] == pytest.approx(equal, rel=1e-12)
    hold = (1.10 * 0.95 * 1.02 + 1.0 * 1.10 * 0.90) / 2.0 - 1.0
    assert table["buy_and_hold"]["total_return"] == pytest.approx(hold, rel=1e-12)
    # The agent alone holds its coin while q_adv > 0: A in periods 1 and 3, B in period 3.
    assert table["agent:A"]["total_return"] == pytest.approx(1.10 * 1.02 - 1.0, rel=1e-12)
    assert table["agent:B"]["total_return"] == pytest.approx(-0.10, rel=1e-12)
    assert table["agent:B"]["exposure"] == pytest.approx(1.0 / 3.0)
    assert table["agent:B"]["max_drawdown"] == pytest.approx(0.10, rel=1e-12)

    below = FixedAllocator(0.4, params)
    cash = by_strategy(evaluate_allocator(below, frame, WEEKLY))["allocator"]
    assert (cash["total_return"], cash["exposure"], cash["max_drawdown"]) == (0.0, 0.0, 0.0)


def test_costs_are_charged_on_every_change_of_position() -> None:
    periods = [T0 + timedelta(weeks=t) for t in range(3)]
    frame = pl.DataFrame(
        {
            "period": periods,
            "symbol": ["A"] * 3,
            "q_adv": [1.0, -1.0, 1.0],
            "forecast": 0.0,
            "sentiment": 0.0,
            "vol": 0.0,
            "drawdown": 0.0,
            "next_return": [0.0, 0.0, 0.0],
        }
    )
    params = AllocatorParams(c=1.0, gamma=0.1, threshold=0.5, cap=1.0, cost_bps=40.0)
    agent = by_strategy(evaluate_allocator(FixedAllocator(0.9, params), frame, WEEKLY))["agent:A"]
    # In, out, in again: three one-way trades at half the 40 bps round trip.
    assert agent["total_return"] == pytest.approx(0.998**3 - 1.0, rel=1e-12)


# --------------------------------------------------------------------------- export


def test_exported_model_reproduces_sklearn_probabilities(
    planted: tuple[AllocatorFit, pl.DataFrame], tmp_path: Path
) -> None:
    fit, held_out = planted
    sha = save_allocator(tmp_path / "alloc", fit.allocator, {"validation": "kept"})
    loaded = load_allocator(tmp_path / "alloc", sha)

    # Held-out rows, the newest one without an outcome included.
    expected = fit.allocator.predict_proba(held_out)
    np.testing.assert_allclose(loaded.predict_proba(held_out), expected, rtol=0, atol=1e-9)
    assert expected.std() > 0.01  # the comparison is over a model that discriminates
    assert loaded.params == fit.params
    assert loaded.meta["extra"] == {"validation": "kept"}
    np.testing.assert_allclose(
        loaded.weights(held_out).get_column("weight").to_numpy(),
        fit.allocator.weights(held_out).get_column("weight").to_numpy(),
        rtol=0,
        atol=1e-9,
    )
    # No pickle anywhere: the arrays load with allow_pickle=False, the rest is JSON.
    with np.load(tmp_path / "alloc" / ARRAYS, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["dual_coef", "scaler_mean", "scaler_scale", "support_vectors"]
    # Same model, same bytes: the sha256 identifies the model, not the moment it was saved.
    assert save_allocator(tmp_path / "again", export_allocator(fit.allocator)) == save_allocator(
        tmp_path / "again2", loaded
    )


def test_a_tampered_or_incomplete_artifact_is_refused(
    planted: tuple[AllocatorFit, pl.DataFrame], tmp_path: Path
) -> None:
    fit, _ = planted
    directory = tmp_path / "alloc"
    sha = save_allocator(directory, fit.allocator)

    meta_path = directory / META
    meta = json.loads(meta_path.read_text())
    meta["params"]["cap"] = 1.0
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True))
    with pytest.raises(ModelLoadError, match="does not match its registered sha256"):
        load_allocator(directory, sha)

    sha = save_allocator(directory, fit.allocator)
    arrays = bytearray((directory / ARRAYS).read_bytes())
    arrays[-1] ^= 0x01
    (directory / ARRAYS).write_bytes(bytes(arrays))
    with pytest.raises(ModelLoadError, match="does not match its registered sha256"):
        load_allocator(directory, sha)

    (directory / ARRAYS).unlink()
    with pytest.raises(ModelLoadError, match="lacks"):
        load_allocator(directory, sha)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_allocator(tmp_path / "missing", sha)


# --------------------------------------------------------------------------- tuning


def test_tuned_allocator_beats_equal_weight_on_a_planted_signal(
    planted: tuple[AllocatorFit, pl.DataFrame],
) -> None:
    fit, held_out = planted
    config = AllocatorConfig()
    assert fit.grid.height == (
        len(config.c_grid)
        * len(config.gamma_grid)
        * len(config.threshold_grid)
        * len(config.cap_grid)
    )
    best = fit.grid.row(0, named=True)
    assert (best["c"], best["gamma"], best["threshold"], best["cap"]) == (
        fit.params.c,
        fit.params.gamma,
        fit.params.threshold,
        fit.params.cap,
    )
    assert fit.split["fit"][1] < fit.split["validation"][0]  # time order, no shuffling
    assert fit.split["validation"][1] < held_out.get_column("period").sort()[0]
    validation = by_strategy(fit.validation)
    assert validation["allocator"]["calmar"] > validation["equal_weight"]["calmar"]

    table = by_strategy(evaluate_allocator(fit.allocator, held_out, WEEKLY))
    assert {"allocator", "equal_weight", "buy_and_hold"} <= table.keys()
    assert sum(name.startswith("agent:") for name in table) == N_COINS
    ours, equal = table["allocator"], table["equal_weight"]
    assert ours["total_return"] > equal["total_return"] + 0.1
    assert ours["calmar"] > equal["calmar"]
    assert 0.0 < ours["exposure"] <= 1.0


def test_on_pure_noise_no_large_edge_is_found() -> None:
    fit_part, held_out = split_by_period(synthetic_panel(seed=3, periods=200, signal=0.0), 0.3)
    fit = train_allocator(fit_part, AllocatorConfig(cost_bps=COST_BPS))
    labelled = held_out.filter(pl.col("next_return").is_not_null())
    proba = fit.allocator.predict_proba(labelled)
    beats = labelled.get_column("next_return").to_numpy() > COST_BPS / 1e4
    # Its probabilities rank held-out outcomes no better than chance ...
    assert abs(roc_auc_score(beats, proba) - 0.5) < 0.06
    # ... and it earns no more than the better of equal weight and cash, give or take 5%.
    table = by_strategy(evaluate_allocator(fit.allocator, held_out, WEEKLY))
    ceiling = max(table["equal_weight"]["total_return"], 0.0)
    assert table["allocator"]["total_return"] < ceiling + 0.05


def test_bad_inputs_are_refused_with_a_reason() -> None:
    frame = synthetic_panel(seed=1, periods=12, signal=0.0)
    with pytest.raises(ValueError, match="sentiment"):
        train_allocator(frame.with_columns(sentiment=pl.lit(None, pl.Float64)), AllocatorConfig())
    with pytest.raises(ValueError, match="lack"):
        train_allocator(frame.drop("vol"), AllocatorConfig())
    with pytest.raises(ValueError, match="duplicate"):
        train_allocator(pl.concat([frame, frame]), AllocatorConfig())
