"""The `tradingml` command: run flows, query the warehouse, show settings -- clear errors, no tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any


def _prefect_env() -> None:
    # Must happen before prefect is imported: the first ephemeral start on a fresh
    # PREFECT_HOME runs migrations for ~27 s, past Prefect's default 20 s timeout.
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _console() -> Any:
    from rich.console import Console

    console = Console()
    # Piped output (a log file, CI) gets a readable width instead of rich's 80 columns.
    return console if console.is_terminal else Console(width=130)


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    console = _console()
    if not rows:
        console.print(f"[bold]{title}[/bold]: (no rows)")
        return
    table = Table(title=title, title_justify="left", title_style="bold")
    for col in rows[0]:
        table.add_column(str(col), overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if hasattr(value, "strftime"):
        if not hasattr(value, "hour"):
            return str(value)
        zone = " UTC" if getattr(value, "tzinfo", None) is not None else ""
        return value.strftime("%Y-%m-%d %H:%M") + zone
    return str(value)


def _metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> None:
    """Strategy, buy-and-hold and baseline side by side, formatted as the HTML report does."""
    from trading.report import format_metric

    keys = [
        "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar",
        "hit_rate", "turnover", "exposure", "fees",
    ]  # fmt: skip
    _table(
        title,
        [
            {
                "metric": k,
                **{name: format_metric(k, m.get(k, float("nan"))) for name, m in metrics.items()},
            }
            for k in keys
        ],
    )


def cmd_backtest(args: argparse.Namespace) -> int:
    from flows.backtest import backtest
    from flows.config import BacktestConfig

    kwargs: dict[str, Any] = {"symbol": args.symbol}
    for key in ("model_id", "start", "end", "warehouse"):
        if getattr(args, key):
            kwargs[key] = getattr(args, key)
    result = backtest(BacktestConfig(**kwargs))
    _metrics_table(
        f"backtest {result['run_id']}: {result['decisions']:,} decisions, {result['orders']} orders",
        result["metrics"],
    )
    print(f"report: {result['report']}")
    return 0


def cmd_trade(args: argparse.Namespace) -> int:
    from flows.config import LiveTradingConfig
    from flows.live_trading import live_trading

    kwargs: dict[str, Any] = {"symbol": args.symbol}
    for key in ("mode", "model_id", "replay_date", "max_minutes", "warehouse"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.speed is not None:
        kwargs["replay_speed"] = args.speed
    result = live_trading(LiveTradingConfig(**kwargs))
    for key, value in result.items():
        print(f"{key:<16} {value}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from flows.config import NightlyRetrainConfig
    from flows.demo import GATE_SQL
    from flows.nightly_retrain import nightly_retrain
    from warehouse.db import connect
    from warehouse.io import load_frame

    kwargs: dict[str, Any] = {"runner": args.runner}
    for key in ("coins", "cycles", "start", "end", "warehouse"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.no_spy:
        kwargs["include_spy"] = False
    result = nightly_retrain(NightlyRetrainConfig(**kwargs))
    with connect(args.warehouse, read_only=True) as con:
        _table("promotion gate (promotion_decisions)", load_frame(con, GATE_SQL).to_dicts())
    for failure in result.get("failures", []):
        print(f"failed: {failure}")
    return 0


def cmd_crypto(args: argparse.Namespace) -> int:
    from flows.config import CryptoTradingConfig
    from flows.crypto_trading import crypto_trading

    kwargs: dict[str, Any] = {}
    for key in ("coins", "mode", "replay_date", "max_minutes", "warehouse"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    result = crypto_trading(CryptoTradingConfig(**kwargs))
    for key, value in result.items():
        print(f"{key:<26} {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.config import DemoConfig
    from flows.demo import demo

    kwargs: dict[str, Any] = {}
    if args.start:
        kwargs["start"] = args.start
    if args.end:
        kwargs["end"] = args.end
    result = demo(DemoConfig(**kwargs))
    console = _console()
    console.rule("[bold]demo summary")
    _table(
        "What this run ingested (a re-run finds everything unchanged)",
        [
            {
                "step": name,
                "received": rep["received"],
                "new": rep["inserted"],
                "updated": rep["updated"],
                "unchanged": rep["unchanged"],
                "quarantined": ", ".join(
                    f"{k}={v}" for k, v in sorted((rep["quarantined"] or {}).items())
                )
                or "0",
            }
            for name, rep in result["ingest"].items()
        ],
    )
    _table(
        "Bars in the warehouse (v_bar_coverage; source 'synthetic*' = generated)",
        result["coverage"],
    )
    _table("Quarantined rows (bars_quarantine)", result["quarantine"])
    posts = result["posts"]
    console.print(
        f"[bold]SYNTHETIC Reddit posts[/bold] (source 'synthetic', ids 'syn-...'): "
        f"{posts['inserted']:,} new, {posts['unchanged']:,} unchanged, {posts['scored']:,} scored "
        f"with VADER + finance lexicon"
    )
    _table(
        "Hourly mean post sentiment vs the same and the next hour's return (coins: planted lead; "
        "ETFs: tone follows the market)",
        result["sentiment"],
    )
    console.print('[bold]Example SQL[/bold] (try it: tradingml sql "...")')
    console.print(result["example_sql"], highlight=False)
    _table("Result", result["example_rows"])
    for name, agent in result["agents"].items():
        _table(
            f"Deep-Q agent, {name}: {agent['test_sessions']} held-out sessions, mean ± std over "
            f"{len(agent['models'])} seeds; every policy on the same bars with the same costs",
            [
                {
                    "policy": row["policy"],
                    "total return": f"{100 * row['total_return']:+.2f}% ± {100 * row['total_return_std']:.2f}",
                    "t-stat (per session)": f"{row['t_stat']:+.2f}",
                    "hit rate": f"{row['hit_rate']:.2f}",
                    "max drawdown": f"{100 * row['max_drawdown']:.2f}%",
                }
                for row in agent["evaluation"]
            ],
        )
    bt = result["backtest"]
    _metrics_table(
        f"Backtest of the promoted agent {result['promoted']} over the held-out months "
        f"({bt['decisions']:,} decisions, {bt['orders']} orders; "
        f"{'SYNTHETIC bars' if bt['synthetic'] else 'market bars'})",
        bt["metrics"],
    )
    console.print(f"Backtest report (open in a browser): {bt['report']}")
    s = result["session"]
    if s.get("status") == "traded":
        console.print(
            f"[bold]Replayed live session[/bold] {s['session']} ({s['mode']}): "
            f"{s['decisions']} decisions, {s['orders']} orders, final equity {s['equity']:,.2f}; "
            f'ledger: tradingml sql "select * from v_decision_ledger where decision_id like '
            f"'{s['run_id']}%' order by ts\""
        )
    _table(
        "Nightly retrain on SYNTHETIC coins: the promotion gate's verdicts (promotion_decisions)",
        result["gate"],
    )
    c = result["crypto"]
    if c.get("status") == "traded":
        console.print(
            f"[bold]crypto-trading replay[/bold] {c['day']}: {', '.join(c['coins'])} "
            f"(weights from {c['weights_from']}), {c['minutes']} minutes, "
            f"{c['orders']} orders, final equity {c['equity']:,.2f}"
        )
    else:
        console.print(f"crypto-trading not run: {c.get('why')}")
    console.print(
        'Models: tradingml sql "select * from v_model_leaderboard"; promoted ones are stage '
        "'production'"
    )
    console.print(
        f'Warehouse: {result["warehouse"]}  --  query it with `tradingml sql "select ..."`'
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.config import IngestBarsConfig
    from flows.ingest_bars import ingest_bars

    config = IngestBarsConfig(
        source=args.source,
        symbols=args.symbols or None,
        start=args.start,
        end=args.end,
        timeframe=args.timeframe,
        seed=args.seed,
        signal=args.signal,
        path=args.path,
        column_map=json.loads(args.column_map) if args.column_map else None,
        source_label=args.source_label,
        lookback_days=args.lookback_days,
        incremental=args.incremental,
        warehouse=args.warehouse,
    )
    result = ingest_bars(config)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_scrape(args: argparse.Namespace) -> int:
    from flows.config import ScrapeRedditConfig
    from flows.scrape_reddit import scrape_reddit

    fields = {
        "source": args.source,
        "subreddits": args.subreddits,
        "limit": args.limit,
        "since": args.since,
        "until": args.until,
        "tone": args.tone,
        "warehouse": args.warehouse,
    }
    result = scrape_reddit(ScrapeRedditConfig(**{k: v for k, v in fields.items() if v is not None}))
    label = "SYNTHETIC posts" if result["source"] == "synthetic" else "Reddit"
    print(
        f"{label}: {result['received']:,} received, {result['inserted']:,} new, "
        f"{result['updated']:,} updated, {result['scored']:,} scored, "
        f"quarantined {result['quarantined'] or 0}"
    )
    _table("Sentiment a decision now would see ('*' = all posts)", result["sentiment_now"])
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from flows.config import TrainAgentConfig
    from flows.train_agent import train_agent

    fields = {
        "symbols": args.symbols,
        "timeframe": args.timeframe,
        "train_start": args.train_start,
        "train_end": args.train_end,
        "test_start": args.test_start,
        "test_end": args.test_end,
        "cycles": args.cycles,
        "seeds": args.seeds,
        "budget_s": args.budget_s,
        "warehouse": args.warehouse,
    }
    config = TrainAgentConfig(
        **{k: v for k, v in fields.items() if v is not None}, resume=not args.no_resume
    )
    result = train_agent(config)
    _table(f"held-out evaluation of {', '.join(result['models'])}", result["evaluation"])
    return 0


def cmd_evolve(args: argparse.Namespace) -> int:
    from flows.config import EvolveConfig
    from flows.evolve import evolve_architecture

    fields = {
        "population": args.population,
        "generations": args.generations,
        "cycles": args.cycles,
        "seeds": args.seeds,
        "runner": args.runner,
        "workers": args.workers,
        "dask_address": args.dask_address,
        "warehouse": args.warehouse,
    }
    result = evolve_architecture(EvolveConfig(**{k: v for k, v in fields.items() if v is not None}))
    _table(f"{result['search_id']}: fitness by generation", result["generations"])
    best = result["best"]
    print(
        f"best: generation {best['generation']} individual {best['individual']} fitness {best['fitness']:.4f}"
    )
    print(f"genome: {best['genome']}")
    print(f"plot: {result['plot']}")
    if result["registered"]:
        print(
            f"registered as {result['registered']}; make it train-agent's default: tradingml promote {result['registered']}"
        )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from core.settings import get_settings
    from models.registry import verify_artifact
    from warehouse.db import connect
    from warehouse.registry import load_model_row, promote

    with connect(args.warehouse or get_settings().warehouse_path) as con:
        row = load_model_row(con, args.model_id)
        if row is None:
            raise ValueError(
                f'no model {args.model_id!r}; see tradingml sql "select * from v_model_leaderboard"'
            )
        verify_artifact(row)  # refuse to promote an artifact that is missing or altered
        previous = promote(con, args.model_id, datetime.now(UTC))
    print(
        f"{args.model_id} is now production"
        + (f" (replacing {previous}, archived)" if previous else "")
    )
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from core.settings import get_settings
    from warehouse.db import connect
    from warehouse.io import load_frame

    path = args.warehouse or get_settings().warehouse_path
    with connect(path, read_only=True) as con:
        df = load_frame(con, args.query)
    _table(f"{df.height:,} row(s)", df.head(args.limit).to_dicts())
    if df.height > args.limit:
        print(f"... {df.height - args.limit:,} more rows (--limit)")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from core.settings import get_settings

    for key, value in get_settings().describe().items():
        print(f"{key:<24} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradingml", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole pipeline on the embedded offline data")
    p.add_argument("--start", type=date.fromisoformat, help="first day of synthetic bars")
    p.add_argument("--end", type=date.fromisoformat, help="last day (exclusive)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="run the ingest-bars flow")
    p.add_argument(
        "--source",
        choices=["synthetic", "arch", "file", "alpaca", "auto"],
        default="synthetic",
        help="auto: alpaca when APCA_API_KEY_ID/APCA_API_SECRET_KEY are set, else synthetic",
    )
    p.add_argument("--symbols", nargs="*", help="default: the source's universe")
    p.add_argument("--lookback-days", type=int, help="fetch from N days ago up to now")
    p.add_argument(
        "--incremental", action="store_true", help="start after the newest stored bar per symbol"
    )
    p.add_argument("--start", type=date.fromisoformat)
    p.add_argument("--end", type=date.fromisoformat)
    p.add_argument("--timeframe")
    p.add_argument("--seed", type=int)
    p.add_argument("--signal", choices=["none", "autocorr", "sentiment"], default="none")
    p.add_argument("--path", help="CSV/Parquet file for --source file")
    p.add_argument("--column-map", help='JSON, e.g. \'{"close": "Last"}\'')
    p.add_argument("--source-label")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("scrape", help="run the scrape-reddit flow (posts -> VADER sentiment)")
    p.add_argument(
        "--source",
        choices=["auto", "reddit", "synthetic"],
        default="auto",
        help="auto: Reddit when REDDIT_CLIENT_ID/REDDIT_CLIENT_SECRET are set, else synthetic",
    )
    p.add_argument("--subreddits", nargs="+", help="default: TRADINGML_SUBREDDITS")
    p.add_argument("--limit", type=int, help="new posts per subreddit (default 1000)")
    p.add_argument("--since", type=datetime.fromisoformat, help="e.g. 2024-01-01T00:00Z")
    p.add_argument("--until", type=datetime.fromisoformat, help="synthetic: the generator's now")
    p.add_argument("--tone", choices=["follow", "lead", "lead-coins"], help="synthetic tone")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_scrape)

    p = sub.add_parser("train", help="run the train-agent flow (Double DQN, nested LSTMs)")
    p.add_argument("--symbols", nargs="+", help="assets for the features; the first is traded")
    p.add_argument("--timeframe")
    p.add_argument("--train-start", type=date.fromisoformat)
    p.add_argument("--train-end", type=date.fromisoformat)
    p.add_argument("--test-start", type=date.fromisoformat)
    p.add_argument("--test-end", type=date.fromisoformat)
    p.add_argument("--cycles", type=int)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--budget-s", type=float, help="stop each seed after this many seconds")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evolve", help="run the evolve-architecture flow (evolutionary search)")
    p.add_argument("--population", type=int)
    p.add_argument("--generations", type=int)
    p.add_argument("--cycles", type=int, help="training cycles per individual and seed")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--runner", choices=["process", "dask", "serial"])
    p.add_argument("--workers", type=int)
    p.add_argument("--dask-address", help="scheduler of an existing Dask cluster")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser(
        "promote", help="make a registered model the production one of its kind/symbol"
    )
    p.add_argument("model_id")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "backtest", help="run the backtest flow (a registered agent, simulated broker)"
    )
    p.add_argument("--symbol", default="SPY")
    p.add_argument("--model-id", dest="model_id", help="default: production, else best candidate")
    p.add_argument("--start", type=date.fromisoformat)
    p.add_argument("--end", type=date.fromisoformat)
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("trade", help="run the live-trading flow (replay by default; paper/live)")
    p.add_argument("--symbol", default="SPY")
    p.add_argument("--mode", choices=["replay", "paper", "live"], help="default: TRADINGML_MODE")
    p.add_argument("--model-id", dest="model_id", help="default: the production model")
    p.add_argument("--replay-date", dest="replay_date", type=date.fromisoformat)
    p.add_argument("--speed", type=float, help="replay speed, times real time (0 = unthrottled)")
    p.add_argument("--max-minutes", dest="max_minutes", type=int)
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_trade)

    p = sub.add_parser("nightly", help="run the nightly-retrain flow (forecasters, agents, gate)")
    p.add_argument("--coins", nargs="*", help="default: TRADINGML_COINS")
    p.add_argument("--no-spy", dest="no_spy", action="store_true", help="skip the SPY agent")
    p.add_argument("--cycles", type=int, help="training cycles per agent (default 300)")
    p.add_argument("--start", type=date.fromisoformat)
    p.add_argument("--end", type=date.fromisoformat)
    p.add_argument("--runner", choices=["thread", "process", "dask"], default="thread")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_nightly)

    p = sub.add_parser(
        "crypto", help="run the crypto-trading flow (coin agents: replay, paper or live)"
    )
    p.add_argument("--coins", nargs="*", help="default: TRADINGML_COINS")
    p.add_argument("--mode", choices=["replay", "paper", "live"])
    p.add_argument("--replay-date", dest="replay_date", type=date.fromisoformat)
    p.add_argument("--max-minutes", dest="max_minutes", type=int)
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_crypto)

    p = sub.add_parser("sql", help="run SQL against the warehouse (read-only)")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("settings", help="show the effective settings (secrets hidden)")
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    _prefect_env()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _user_error(exc)
        if message is None or os.environ.get("TRADINGML_DEBUG"):
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def _user_error(exc: BaseException) -> str | None:
    """The one-line message for errors a user can act on; None for bugs (shown in full)."""
    import duckdb
    from pydantic import ValidationError

    from warehouse.db import WarehouseLockedError

    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            text = err["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {text}" if where else text)
        return f"invalid {exc.title}: " + "; ".join(parts)
    if isinstance(exc, duckdb.Error):
        return str(exc)
    if isinstance(exc, WarehouseLockedError | ValueError | FileNotFoundError | RuntimeError):
        return str(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
