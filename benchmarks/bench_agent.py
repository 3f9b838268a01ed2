"""Agent benchmarks: 1000 training cycles, session unrolling vs sliding windows, inference, evaluation, proofs."""

from __future__ import annotations

import multiprocessing as mp
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import torch

from adapters.synthetic import SyntheticBarSource
from benchmarks.harness import Figure, benchmark
from benchmarks.proofs import planted_sentiment_market, random_walk_sessions, t_stat
from models.dqn import DQNLightning, DQNParams, ReplayBatch, act_sessions, n_updates
from models.env import Costs
from models.features import FeatureSpec, compute_features
from models.qnet import Architecture
from models.registry import load_agent, save_agent
from models.threads import available_cores, task_threads, use_threads
from models.train import greedy_positions, prepare_data, session_log_returns, train_dqn

YEAR = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
TEST = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
PLANTED_SEEDS = (1, 2, 3, 4, 5)
"""Each seed plants its own market (synthetic seed 10 + seed) and trains its own agent."""


def _window_update_seconds(
    module: DQNLightning, n_features: int, batch: int, window: int, repeats: int
) -> float:
    """The old way: every transition re-encodes its own window (state and next state) through the network."""
    net, target = module.online, module.target
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, window + 1, n_features, generator=g)
    pos = torch.randint(0, 2, (batch,), generator=g).float()
    actions = torch.randint(0, 3, (batch,), generator=g)
    rewards = torch.randn(batch, generator=g)

    def step() -> None:
        q = net.q(net.encode(x[:, :-1])[:, -1], pos).gather(1, actions[:, None]).squeeze(1)
        with torch.no_grad():
            nxt = x[:, 1:]
            best = net.q(net.encode(nxt)[:, -1], pos).argmax(1, keepdim=True)
            y = rewards + 0.99 * target.q(target.encode(nxt)[:, -1], pos).gather(1, best).squeeze(1)
        loss = torch.nn.functional.smooth_l1_loss(q, y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def _session_update_seconds(module: DQNLightning, batch: ReplayBatch, repeats: int) -> float:
    """Ours: a whole session unrolled once, every transition learned from that pass."""
    opt = torch.optim.Adam(module.online.parameters(), lr=1e-3)
    loss = module.td_loss(batch)
    loss.backward()  # type: ignore[no-untyped-call]
    start = time.perf_counter()
    for _ in range(repeats):
        opt.zero_grad()
        module.td_loss(batch).backward()  # type: ignore[no-untyped-call]
        opt.step()
    return (time.perf_counter() - start) / repeats


def _train_beside_another(barrier: object, out: object, threads: int) -> None:
    """One of two trainings run at once (a spawned process): the same year, 1000 cycles,
    `threads` torch threads; both start together at the barrier, each reports its seconds."""
    use_threads(threads)
    spec = FeatureSpec()
    source = SyntheticBarSource()
    bars = pl.concat(list(source.fetch_bars(list(spec.symbols), "1Min", YEAR[0], TEST[1])))
    data = prepare_data(bars, spec, YEAR, TEST)
    barrier.wait(timeout=600)  # type: ignore[attr-defined]
    t = time.perf_counter()
    train_dqn(data.train, Architecture(), DQNParams(), Costs(), seed=1)
    out.put(time.perf_counter() - t)  # type: ignore[attr-defined]


def two_trainings_at_once(threads: int | None = None) -> tuple[float, int]:
    """Seconds until both of two 1000-cycle trainings, started together in two processes,
    have finished, each on its share of the cores (models.threads.task_threads(2); `threads`
    to try another count)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    threads = task_threads(2) if threads is None else threads
    procs = [
        ctx.Process(target=_train_beside_another, args=(barrier, out, threads)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(
            f"a training beside another failed: exit codes {[p.exitcode for p in procs]}"
        )
    seconds = [out.get(timeout=60) for _ in procs]
    return max(seconds), threads


@benchmark("agent")
def bench_agent(scratch: Path) -> list[Figure]:
    spec = FeatureSpec()
    source = SyntheticBarSource()
    bars = pl.concat(list(source.fetch_bars(list(spec.symbols), "1Min", YEAR[0], TEST[1])))
    t = time.perf_counter()
    compute_features(bars, spec)
    features_s = time.perf_counter() - t
    data = prepare_data(bars, spec, YEAR, TEST)
    costs = Costs()
    params = DQNParams()
    print(
        f"  {len(data.train)} training sessions; features for a year of 4 assets: {features_s:.2f} s"
    )

    t = time.perf_counter()
    module, history = train_dqn(data.train, Architecture(), params, costs, seed=1)
    assert isinstance(module, DQNLightning)  # ensemble_size 1: the timings below need one module
    train_s = time.perf_counter() - t
    # Sessions are sampled uniformly from replay: each collected session is learned from
    # (updates x batch_sessions / cycles) times on average.
    replay_ratio = n_updates(params, 0) * params.batch_sessions / len(history)
    print(
        f"  1000 cycles: {train_s:.1f} s, each transition replayed {replay_ratio:.1f} times on average"
    )
    both_s, threads = two_trainings_at_once()
    # The same two, each letting torch use every core (as before threads were shared out).
    unpinned_s, every = two_trainings_at_once(available_cores())
    print(
        f"  two 1000-cycle trainings at once, {threads} torch thread(s) each: {both_s:.1f} s "
        f"({both_s / train_s:.2f}x one alone); {every} thread(s) each: {unpinned_s:.1f} s "
        f"({unpinned_s / train_s:.2f}x)"
    )

    # Same network, same sizes: session unrolling vs re-encoded 60-bar windows.
    n_features = int(data.train.features.shape[2])
    idx = np.arange(params.batch_sessions) % len(data.train)
    sub = data.train.subset(idx)
    played = act_sessions(module.online, sub, costs, 0.1, np.random.default_rng(0))
    batch = ReplayBatch(
        features=sub.features,
        mask=sub.mask,
        actions=torch.as_tensor(played["actions"]),
        positions=torch.as_tensor(played["positions"]),
        rewards=torch.as_tensor(played["rewards"]),
    )
    ours = _session_update_seconds(module, batch, repeats=5) / float(sub.mask[:, 1:].sum())
    window = _window_update_seconds(module, n_features, batch=256, window=60, repeats=5) / 256
    print(
        f"  per learned transition: sessions {1e6 * ours:.1f} us, 60-bar windows {1e6 * window:.1f} us"
    )

    # Inference through the registry's predict(), bar by bar.
    sha = save_agent(scratch / "agent", module.online, spec, data.scaler, {})
    policy = load_agent(scratch / "agent", sha, running_spec=spec)
    rows = (
        compute_features(bars, spec)
        .filter(pl.col("ts") >= TEST[0])
        .select(spec.names())
        .to_numpy()[:390]
    )
    state = None
    start = time.perf_counter()
    for i, row in enumerate(rows):
        _, _, state = policy.predict((row, 0.0), state, episode_start=(i == 0))
    inference_ms = 1e3 * (time.perf_counter() - start) / len(rows)

    # A year of minute decisions, batch path.
    t = time.perf_counter()
    positions = greedy_positions(module, data.train, costs)
    session_log_returns(data.train, positions, costs)
    eval_s = time.perf_counter() - t
    decisions = int((data.train.lengths - 1).sum())
    print(f"  evaluated {decisions:,} decisions in {eval_s:.2f} s")

    # Proofs at full budget. Learning: the agent's share of the DP reference (the best position
    # path on the planted expected returns, after the same costs) on five planted markets.
    t = time.perf_counter()
    shares = []
    for seed in PLANTED_SEEDS:
        market = planted_sentiment_market(seed=10 + seed)
        planted, _ = train_dqn(
            market.data.train,
            Architecture(),
            DQNParams(exploration_fraction=0.3),
            market.costs,
            seed=seed,
        )
        shares.append(market.dp_share(planted))
    planted_s = time.perf_counter() - t
    train_rw, test_rw = random_walk_sessions(seed=123)
    worst_t = 0.0
    for seed in (1, 2, 3):
        rw, _ = train_dqn(train_rw, Architecture(), DQNParams(), Costs(0.5, 0.5), seed=seed)
        per_session = session_log_returns(
            test_rw, greedy_positions(rw, test_rw, Costs(0.5, 0.5)), Costs(0.5, 0.5)
        )
        worst_t = max(worst_t, abs(t_stat(per_session)))
    print(
        f"  planted signal: {np.mean(shares):.0%} of the DP reference's excess on average, "
        f"worst {min(shares):.0%} over {len(shares)} seeds ({planted_s:.0f} s; "
        + ", ".join(f"{x:.2f}" for x in shares)
        + f"); random walk: max |t| {worst_t:.2f} over 3 seeds"
    )
    return [
        Figure("train_1000_cycles_s", round(train_s, 2), "s", "<= 60"),
        Figure("train_1000_cycles_two_at_once_s", round(both_s, 2), "s", "-"),
        Figure("train_two_at_once_vs_alone", round(both_s / train_s, 2), "x", "<= 2.3"),
        Figure("train_1000_cycles_two_at_once_every_core_s", round(unpinned_s, 2), "s", "-"),
        Figure("train_replay_ratio", round(replay_ratio, 2), "x", ">= 4"),
        Figure("train_speedup_vs_window", round(window / ours, 1), "x", ">= 30"),
        Figure("inference_ms", round(inference_ms, 3), "ms", "<= 1"),
        Figure("eval_year_minutes_s", round(eval_s, 2), "s", "<= 2"),
        Figure("planted_signal_dp_share_mean", round(float(np.mean(shares)), 3), "share", ">= 0.5"),
        Figure("planted_signal_dp_share_worst", round(min(shares), 3), "share", ">= 0.25"),
        Figure("random_walk_abs_t", round(worst_t, 2), "abs t", "< 2"),
    ]
