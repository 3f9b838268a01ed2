"""SVM allocator: out-of-sample rows only, the traded P&L as objective, labels, capped weights, baselines, pickle-free export, planted signal vs noise (SYNTHETIC panels)."""

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
    InSampleRowsError,
    allocator_returns,
    compute_labels,
    compute_weights,
    evaluate_allocator,
    export_allocator,
    load_allocator,
    save_allocator,
    split_out_of_sample,
    train_allocator,
)
from models.registry import ModelLoadError

T0 = datetime(2020, 1, 6, tzinfo=UTC)
WEEKLY = 52.0
N_COINS = 14
COST_BPS = 20.0


TRAINED_UNTIL = T0 - timedelta(days=1)
"""The SYNTHETIC agents' training end: every row's input day starts at or after it."""


def synthetic_panel(seed: int, periods: int, signal: float) -> pl.DataFrame:
    """SYNTHETIC: 14 coins, weekly; each agent's trading return next_trade_return =
    signal * (q_adv + forecast) / sqrt(2) + market + noise; the coins' own next_return is
    unrelated noise (the allocator must not read it).

    The last period has no outcome (it is not known yet), as in live use.
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
            "next_return": rng.normal(0.0, 0.03, size=shape).ravel(),
            "next_trade_return": next_return.ravel(),
            "agent_id": [f"dqn-C{j:02d}" for _ in range(periods) for j in range(N_COINS)],
            "agent_trained_until": TRAINED_UNTIL,
        }
    )
    last = T0 + timedelta(weeks=periods - 1)
    unknown = pl.col("period") == last
    return frame.with_columns(
        next_return=pl.when(unknown).then(None).otherwise(pl.col("next_return")),
        next_trade_return=pl.when(unknown).then(None).otherwise(pl.col("next_trade_return")),
    )


def by_strategy(table: pl.DataFrame) -> dict[str, dict[str, float]]:
    return {str(row.pop("strategy")): row for row in table.iter_rows(named=True)}


@pytest.fixture(scope="module")
def planted() -> tuple[AllocatorFit, pl.DataFrame]:
    """An allocator tuned on the older 70% of a panel with a planted signal, and the held-out rest."""
    fit_part, test_part = split_out_of_sample(
        synthetic_panel(seed=7, periods=200, signal=0.012), 0.3
    )
    return train_allocator(fit_part, AllocatorConfig(cost_bps=COST_BPS)), test_part


# --------------------------------------------------------------------------- labels and weights


def test_labels_beat_the_round_trip_cost() -> None:
    # Changed with issue 16: the label reads the agent's trading return, not the coin's.
    frame = pl.DataFrame(
        {
            "next_trade_return": [0.001, 0.0021, 0.002, -0.01, None],
            "next_return": [-0.5, -0.5, 0.5, 0.5, 0.5],
        }
    )
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
    """Given probabilities per row (one number: the same for every row)."""

    def __init__(self, proba: float | list[float], params: AllocatorParams) -> None:
        self.proba = proba
        self.params = params

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        if isinstance(self.proba, list):
            return np.asarray(self.proba, dtype=np.float64)
        return np.full(frame.height, self.proba)


def hand_panel(
    periods: int, symbols: list[str], next_return: list[float], trades: list[float]
) -> pl.DataFrame:
    """SYNTHETIC rows, period-major, with the given outcomes and constant inputs."""
    return pl.DataFrame(
        {
            "period": [T0 + timedelta(weeks=t) for t in range(periods) for _ in symbols],
            "symbol": symbols * periods,
            "q_adv": 0.0,
            "forecast": 0.0,
            "sentiment": 0.0,
            "vol": 0.0,
            "drawdown": 0.0,
            "next_return": next_return,
            "next_trade_return": trades,
            "agent_id": [f"dqn-{s}" for _ in range(periods) for s in symbols],
            "agent_trained_until": TRAINED_UNTIL,
        }
    )


def test_the_objective_is_the_agents_traded_pnl_not_the_coins_buy_and_hold() -> None:
    # The coins rise every period, their agents lose money trading them.
    frame = hand_panel(
        3,
        ["A", "B"],
        next_return=[0.10, 0.05, 0.02, 0.04, 0.03, 0.01],
        trades=[-0.01, -0.02, -0.03, 0.01, -0.02, -0.04],
    )
    params = AllocatorParams(c=1.0, gamma=0.1, threshold=0.5, cap=0.5, cost_bps=0.0)
    streams = allocator_returns(FixedAllocator(0.9, params), frame)
    # Half the book to each agent: the allocator earns the weighted trading returns ...
    np.testing.assert_allclose(
        streams.returns["allocator"], [-0.015, -0.01, -0.03], rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(streams.returns["equal_weight_agents"], [-0.015, -0.01, -0.03])
    table = by_strategy(evaluate_allocator(FixedAllocator(0.9, params), frame, WEEKLY))
    assert table["allocator"]["total_return"] == pytest.approx(0.985 * 0.99 * 0.97 - 1.0)
    # ... while the coins' buy-and-hold, kept as a baseline, made money.
    hold = (1.10 * 1.02 * 1.03 + 1.05 * 1.04 * 1.01) / 2.0 - 1.0
    assert table["buy_and_hold"]["total_return"] == pytest.approx(hold, rel=1e-12)
    assert table["buy_and_hold"]["total_return"] > 0.0 > table["allocator"]["total_return"]
    assert table["cash"]["total_return"] == 0.0 and table["cash"]["exposure"] == 0.0
    # Each agent alone: its own trading with the whole book.
    assert table["agent:A"]["total_return"] == pytest.approx(0.99 * 0.97 * 0.98 - 1.0)
    assert table["agent:B"]["total_return"] == pytest.approx(0.98 * 1.01 * 0.96 - 1.0)

    below = FixedAllocator(0.4, params)
    cash = by_strategy(evaluate_allocator(below, frame, WEEKLY))["allocator"]
    assert (cash["total_return"], cash["exposure"], cash["max_drawdown"]) == (0.0, 0.0, 0.0)


def test_tuning_labels_and_fit_read_the_traded_pnl() -> None:
    # Agents' trading carries the planted signal; the coins' returns are its mirror image.
    frame = synthetic_panel(seed=5, periods=60, signal=0.02)
    mirrored = frame.with_columns(next_return=-pl.col("next_trade_return"))
    fit = train_allocator(mirrored, AllocatorConfig(cost_bps=COST_BPS))
    grid = fit.grid.row(0, named=True)
    # The validation score is the allocator's traded P&L: positive on a planted trading edge,
    # although buy-and-hold of the same coins (the mirror) loses what the agents earn.
    assert grid["total_return"] > 0.0
    validation = by_strategy(fit.validation)
    assert validation["allocator"]["total_return"] == pytest.approx(grid["total_return"])
    assert validation["buy_and_hold"]["total_return"] < 0.0


def test_costs_are_charged_on_every_change_of_weight() -> None:
    frame = hand_panel(3, ["A"], next_return=[0.0] * 3, trades=[0.0] * 3)
    params = AllocatorParams(c=1.0, gamma=0.1, threshold=0.5, cap=1.0, cost_bps=40.0)
    streams = allocator_returns(FixedAllocator([0.9, 0.1, 0.9], params), frame)
    # In, out, in again: three one-way changes of weight at half the 40 bps round trip.
    np.testing.assert_allclose(streams.returns["allocator"], [-0.002] * 3, rtol=1e-12)
    # The agent alone and at equal weight pay the entry only.
    np.testing.assert_allclose(streams.returns["agent:A"], [-0.002, 0.0, 0.0], rtol=1e-12)


# --------------------------------------------------------------------------- out of sample


def test_in_sample_agent_outputs_are_refused_not_filtered() -> None:
    frame = synthetic_panel(seed=2, periods=40, signal=0.02)
    # The agents of coins C00 and C01 trained until the 10th period: their rows before it are
    # their in-sample outputs.
    tenth = T0 + timedelta(weeks=10)
    leaked = frame.with_columns(
        agent_trained_until=pl.when(pl.col("symbol").is_in(["C00", "C01"]))
        .then(pl.lit(tenth))
        .otherwise(pl.col("agent_trained_until"))
    )
    params = AllocatorParams(c=1.0, gamma=0.1, threshold=0.5, cap=0.5, cost_bps=0.0)
    for call in (
        lambda: train_allocator(leaked, AllocatorConfig()),
        lambda: evaluate_allocator(FixedAllocator(0.9, params), leaked, WEEKLY),
        lambda: split_out_of_sample(leaked, 0.3),
    ):
        with pytest.raises(InSampleRowsError, match=r"22 allocator row\(s\) are in-sample") as err:
            call()
        assert "\n" not in str(err.value)  # one line
    # The day's inputs must start at or after the training end: a row stamped at the end of
    # the training day itself is refused too, the next one is accepted.
    edge = frame.filter(pl.col("period") == tenth).with_columns(agent_trained_until=pl.lit(tenth))
    with pytest.raises(InSampleRowsError):
        allocator_returns(FixedAllocator(0.9, params), edge)
    ok = edge.with_columns(agent_trained_until=pl.lit(tenth - timedelta(days=1)))
    assert allocator_returns(FixedAllocator(0.9, params), ok).periods == [tenth]
    # An unknown training end is no better than an in-sample one.
    with pytest.raises(InSampleRowsError):
        train_allocator(
            frame.with_columns(agent_trained_until=pl.lit(None, pl.Datetime("us", "UTC"))),
            AllocatorConfig(),
        )


def test_the_nested_split_fits_on_earlier_out_of_sample_days_and_judges_on_later_ones() -> None:
    frame = synthetic_panel(seed=2, periods=20, signal=0.0)
    fit_part, judged = split_out_of_sample(frame, 0.4)
    fit_periods = fit_part.get_column("period").unique().sort()
    judged_periods = judged.get_column("period").unique().sort()
    assert fit_periods.max() < judged_periods.min()  # type: ignore[operator]
    # 19 periods with an outcome: 8 judged (round(0.4 * 19)), plus the newest, unknown one.
    assert (fit_periods.len(), judged_periods.len()) == (11, 9)
    assert fit_part.height + judged.height == frame.height  # nothing dropped
    with pytest.raises(ValueError, match="too few"):
        split_out_of_sample(synthetic_panel(seed=2, periods=4, signal=0.0), 0.4)


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
    assert validation["allocator"]["calmar"] > validation["equal_weight_agents"]["calmar"]

    table = by_strategy(evaluate_allocator(fit.allocator, held_out, WEEKLY))
    assert {"allocator", "equal_weight_agents", "buy_and_hold", "cash"} <= table.keys()
    assert sum(name.startswith("agent:") for name in table) == N_COINS
    ours, equal = table["allocator"], table["equal_weight_agents"]
    assert ours["total_return"] > equal["total_return"] + 0.1
    assert ours["calmar"] > equal["calmar"]
    assert 0.0 < ours["exposure"] <= 1.0


def test_on_pure_noise_no_large_edge_is_found() -> None:
    fit_part, held_out = split_out_of_sample(synthetic_panel(seed=3, periods=200, signal=0.0), 0.3)
    fit = train_allocator(fit_part, AllocatorConfig(cost_bps=COST_BPS))
    labelled = held_out.filter(pl.col("next_trade_return").is_not_null())
    proba = fit.allocator.predict_proba(labelled)
    beats = labelled.get_column("next_trade_return").to_numpy() > COST_BPS / 1e4
    # Its probabilities rank held-out outcomes no better than chance ...
    assert abs(roc_auc_score(beats, proba) - 0.5) < 0.06
    # ... and it earns no more than the better of equal weight and cash, give or take 5%.
    table = by_strategy(evaluate_allocator(fit.allocator, held_out, WEEKLY))
    ceiling = max(table["equal_weight_agents"]["total_return"], 0.0)
    assert table["allocator"]["total_return"] < ceiling + 0.05


def test_bad_inputs_are_refused_with_a_reason() -> None:
    frame = synthetic_panel(seed=1, periods=12, signal=0.0)
    with pytest.raises(ValueError, match="sentiment"):
        train_allocator(frame.with_columns(sentiment=pl.lit(None, pl.Float64)), AllocatorConfig())
    with pytest.raises(ValueError, match="lack"):
        train_allocator(frame.drop("vol"), AllocatorConfig())
    with pytest.raises(ValueError, match="duplicate"):
        train_allocator(pl.concat([frame, frame]), AllocatorConfig())
