"""The `tradingml` command: run flows, query the warehouse, show settings -- clear errors, no tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.cli_options import add_config_options, config_from_args


def set_prefect_env() -> None:
    # Must happen before prefect is imported: the first ephemeral start on a fresh
    # PREFECT_HOME runs migrations for ~27 s, past Prefect's default 20 s timeout.
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect logs a failed run's exception with its traceback before the command prints
    # its one `error:` line; this console handler leaves the traceback to --debug.
    os.environ.setdefault(
        "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS", "flows.cli_logging.CliConsoleHandler"
    )


# Commands that run a Prefect flow: without PREFECT_API_URL each starts a temporary server.
FLOW_COMMANDS = frozenset(
    {
        "demo",
        "ingest",
        "scrape",
        "train",
        "evolve",
        "nightly",
        "backtest",
        "evaluate",
        "trade",
        "crypto",
    }
)


def prefect_server_notice(command: str) -> str | None:
    """One line on where a flow command's runs go when no Prefect server is configured (else None).

    With PREFECT_API_URL set (environment or Prefect profile) Prefect uses that server as it is.
    """
    if command not in FLOW_COMMANDS:
        return None
    # The current settings, not a fresh read of the environment: a test harness's server counts.
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None
    home = os.environ.get("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    return (
        f"prefect: no PREFECT_API_URL, so this command starts a temporary Prefect server on "
        f"127.0.0.1 (runs kept in {home}); for the UI run `make serve` and set "
        "PREFECT_API_URL=http://127.0.0.1:4200/api"
    )


def debug_enabled() -> bool:
    """Show tracebacks: --debug, or TRADINGML_DEBUG set to anything but 0/false/no."""
    return os.environ.get("TRADINGML_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


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
    """The HTML report's metrics table (same columns, rows, labels and numbers) in the terminal."""
    from trading.report import metric_table

    labels, rows = metric_table(metrics)
    _table(
        title, [{"metric": row.label, **dict(zip(labels, row.values, strict=True))} for row in rows]
    )


def cmd_backtest(args: argparse.Namespace) -> int:
    from core.configs import BacktestConfig
    from flows.backtest import backtest

    result = backtest(config_from_args(BacktestConfig, args))
    _metrics_table(
        f"backtest {result['run_id']}: {result['decisions']:,} decisions, {result['orders']} orders",
        result["metrics"],
    )
    print(f"report: {result['report']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.configs import EvaluateConfig
    from flows.evaluate import evaluate

    result = evaluate(config_from_args(EvaluateConfig, args))
    print(
        f"evaluate {result['symbol']} ({result['timeframe']}): {result['folds']} folds x "
        f"{result['seeds']} seeds, out of sample, all folds chained"
    )
    print("\n".join(result["table"]))
    print("\n".join(result["verdict"]))
    print(f"report: {result['report']}")
    print(f"SQL: select * from evaluation_metrics where eval_id = '{result['eval_id']}'")
    return 0


def cmd_select_agent(args: argparse.Namespace) -> int:
    from core.configs import SelectAgentConfig
    from flows.select_agent import select_agent

    result = select_agent(config_from_args(SelectAgentConfig, args))
    print(f"development folds: mean Sharpe over folds x seeds ({result['n_trials']} trials)")
    for name, value in sorted(result["dev_scores"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<20} {value:+.3f}" + ("  <- chosen" if name == result["winner"] else ""))
    print(f"chosen: {result['winner']} params={json.dumps(result['params'], sort_keys=True)}")
    judged = result["judged"]
    if judged is not None:
        print(f"judged {judged['symbol']}: {judged['folds']} folds x {judged['seeds']} seeds")
        print("\n".join(judged["table"]))
        print("\n".join(judged["verdict"]))
        print(f"report: {judged['report']}")
    return 0


def cmd_trade(args: argparse.Namespace) -> int:
    from core.configs import LiveTradingConfig
    from flows.live_trading import live_trading

    result = live_trading(config_from_args(LiveTradingConfig, args))
    for key, value in result.items():
        print(f"{key:<16} {value}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from core.configs import NightlyRetrainConfig
    from flows.nightly_retrain import nightly_retrain
    from warehouse.db import connect
    from warehouse.summary import load_latest_gate

    config = config_from_args(NightlyRetrainConfig, args)
    result = nightly_retrain(config)
    with connect(config.warehouse, read_only=True) as con:
        _table("promotion gate (promotion_decisions)", load_latest_gate(con).to_dicts())
    for failure in result.get("failures", []):
        print(f"failed: {failure}")
    return 0


def cmd_crypto(args: argparse.Namespace) -> int:
    from core.configs import CryptoTradingConfig
    from flows.crypto_trading import crypto_trading

    result = crypto_trading(config_from_args(CryptoTradingConfig, args))
    for key, value in result.items():
        print(f"{key:<26} {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from core.configs import DemoConfig
    from flows.demo import demo

    result = demo(config_from_args(DemoConfig, args))
    console = _console()
    console.rule("[bold]demo summary")
    _print_demo_data(console, result)
    _print_demo_models(console, result)
    console.print(
        'Models: tradingml sql "select * from v_model_leaderboard"; promoted ones are stage '
        "'production'"
    )
    console.print(
        f'Warehouse: {result["warehouse"]}  --  query it with `tradingml sql "select ..."`'
    )
    return 0


def _print_demo_data(console: Any, result: dict[str, Any]) -> None:
    """What the demo stored: ingest counts, coverage, quarantine, posts, sentiment, example SQL."""
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


def _print_demo_models(console: Any, result: dict[str, Any]) -> None:
    """The agents, the gate, the backtest, the replayed sessions."""
    for name, agent in result["agents"].items():
        _table(
            f"Deep-Q agent, {name}: {agent['test_sessions']} held-out episodes, each of "
            f"{len(agent['models'])} seeds and their mean ± std; every policy on the same bars "
            "with the same costs",
            agent["seed_rows"],
        )
    bt, spy = result["backtest"], result["spy_agent"]
    _table(
        "SPY agent: the promotion gate on the selection months (reasons: promotion_decisions)",
        [{k: v for k, v in row.items() if k != "reason"} for row in spy["gate"]],
    )
    _metrics_table(
        f"Backtest of SPY agent {spy['model_id']} ({spy['status']}) over the report months "
        f"only ({spy['ranges']}; {bt['decisions']:,} decisions, {bt['orders']} orders; "
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


def cmd_ingest(args: argparse.Namespace) -> int:
    from core.configs import IngestBarsConfig
    from flows.ingest_bars import ingest_bars

    result = ingest_bars(config_from_args(IngestBarsConfig, args))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    _table(
        f"Ingested from {result['source']} into {result['warehouse']}, per symbol",
        [
            {
                "symbol": r["symbol"],
                "market": f"{r['asset_class']} {r['calendar']}" if r["asset_class"] else None,
                "bars": r["timeframe"],
                "received": r["received"],
                "new": r["new"],
                "updated": r["updated"],
                "unchanged": r["unchanged"],
                "quarantined": ", ".join(f"{k}={v}" for k, v in r["quarantined"].items()) or "0",
                "stored span (UTC; days: New York)": _span(r["first"], r["last"], r["timeframe"]),
            }
            for r in result["series"]
        ],
    )
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    quarantined = sum(result["quarantined"].values())
    print(
        f"total: {result['received']:,} rows received, {result['inserted']:,} new, "
        f"{result['updated']:,} updated, {result['unchanged']:,} unchanged, {quarantined:,} "
        "quarantined (see bars_quarantine); asset classes and calendars: table symbols"
    )
    return 0


def _span(first: datetime | None, last: datetime | None, timeframe: str | None) -> str | None:
    """'first .. last' of stored bars: minutes in UTC, daily bars as their New York date."""
    if first is None or last is None:
        return None
    if timeframe == "1Day":
        from zoneinfo import ZoneInfo

        ny = ZoneInfo("America/New_York")
        return f"{first.astimezone(ny):%Y-%m-%d} .. {last.astimezone(ny):%Y-%m-%d}"
    return f"{first.astimezone(UTC):%Y-%m-%d %H:%M} .. {last.astimezone(UTC):%Y-%m-%d %H:%M}"


def cmd_scrape(args: argparse.Namespace) -> int:
    from core.configs import ScrapeRedditConfig
    from flows.scrape_reddit import scrape_reddit

    result = scrape_reddit(config_from_args(ScrapeRedditConfig, args))
    label = "SYNTHETIC posts" if result["source"] == "synthetic" else "Reddit"
    print(
        f"{label}: {result['received']:,} received, {result['inserted']:,} new, "
        f"{result['updated']:,} updated, {result['scored']:,} scored, "
        f"quarantined {result['quarantined'] or 0}"
    )
    _table("Sentiment a decision now would see ('*' = all posts)", result["sentiment_now"])
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from core.configs import TrainAgentConfig
    from flows.train_agent import train_agent

    result = train_agent(config_from_args(TrainAgentConfig, args))
    _table(
        f"held-out evaluation of {', '.join(result['models'])} ({result['test_sessions']} "
        "episodes): each seed, their mean ± std, and the baselines on the same bars and costs",
        result["seed_rows"],
    )
    return 0


def cmd_evolve(args: argparse.Namespace) -> int:
    from core.configs import EvolveConfig
    from flows.evolve import evolve_architecture

    result = evolve_architecture(config_from_args(EvolveConfig, args))
    _table(f"{result['search_id']}: fitness by generation", result["generations"])
    best = result["best"]
    print(
        f"best: generation {best['generation']} individual {best['individual']} fitness {best['fitness']:.4f}"
    )
    print(f"genome: {best['genome']}")
    print(f"plot: {result['plot']}")
    print("fitness folds (train -> validation): " + "; ".join(
        f"{f['train'][0]}..{f['train'][1]} -> {f['valid'][1]}" for f in result["folds"]
    ))  # fmt: skip
    print(f"gate on the judging range: {result['verdict']['line']}")
    if result["registered"] and not result["verdict"]["promoted"]:
        print(
            f"registered as {result['registered']} (candidate); make it train-agent's default anyway: tradingml promote {result['registered']}"
        )
    elif result["registered"]:
        print(f"registered as {result['registered']} and promoted by the gate")
    return 0


def cmd_account_limits(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from core.settings import get_settings
    from trading.account_risk import AccountLimits
    from warehouse.account_risk import load_account_limits, save_account_limits
    from warehouse.db import connect

    with connect(args.warehouse or get_settings().warehouse_path) as con:
        stored = load_account_limits(con, args.account)
        current = AccountLimits() if stored is None else AccountLimits(*stored)
        if args.daily_loss_limit is not None or args.max_gross_exposure is not None:
            # Validated (fractions in range) before anything is stored.
            current = AccountLimits(
                args.daily_loss_limit
                if args.daily_loss_limit is not None
                else current.daily_loss_limit,
                args.max_gross_exposure
                if args.max_gross_exposure is not None
                else current.max_gross_exposure,
            )
            save_account_limits(
                con,
                args.account,
                current.daily_loss_limit,
                current.max_gross_exposure,
                datetime.now(UTC),
            )
            stored = (current.daily_loss_limit, current.max_gross_exposure)
    print(
        f"account {args.account}: daily loss limit {100 * current.daily_loss_limit:.2f}% of the "
        f"UTC day's starting equity, gross exposure at most {current.max_gross_exposure:.2f}x "
        f"equity ({'stored' if stored is not None else 'defaults: nothing stored'}); read by "
        "every trading flow on the account at its next minute"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from core.settings import get_settings
    from models.registry import verify_artifact
    from warehouse.db import connect
    from warehouse.registry import load_model_row, promote, require_evaluation

    with connect(args.warehouse or get_settings().warehouse_path) as con:
        row = load_model_row(con, args.model_id)
        if row is None:
            raise ValueError(
                f'no model {args.model_id!r}; see tradingml sql "select * from v_model_leaderboard"'
            )
        if row["stage"] == "production":
            print(f"{args.model_id} is already production")
            return 0
        require_evaluation(row)  # a failed or never-evaluated model or genome is refused
        verify_artifact(row)  # refuse to promote an artifact that is missing or altered
        previous = promote(con, args.model_id, datetime.now(UTC), reason=args.reason)
    print(
        f"{args.model_id} is now production"
        + (f" (replacing {previous}, archived)" if previous else "")
    )
    return 0


def cmd_demote(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from core.settings import get_settings
    from warehouse.db import connect
    from warehouse.registry import demote, rollback_target

    with connect(args.warehouse or get_settings().warehouse_path) as con:
        row = demote(con, args.model_id, datetime.now(UTC), reason=args.reason)
        kind, symbol = str(row["kind"]), str(row["symbol"])
        try:
            target = rollback_target(con, kind, symbol)
            hint = f"tradingml rollback {kind} {symbol} restores {target}"
        except ValueError:
            hint = "tradingml promote MODEL_ID makes another one production"
    print(
        f"{args.model_id} demoted to archived; there is now no production {kind} model "
        f"for {symbol} ({hint})"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from core.settings import get_settings
    from models.registry import verify_artifact
    from warehouse.db import connect
    from warehouse.registry import load_model_row, rollback, rollback_target

    with connect(args.warehouse or get_settings().warehouse_path) as con:
        target = load_model_row(con, rollback_target(con, args.kind, args.symbol))
        if target is not None:
            verify_artifact(target)  # never restore an artifact that is missing or altered
        restored, archived = rollback(
            con, args.kind, args.symbol, datetime.now(UTC), reason=args.reason
        )
    print(f"{restored} is production again" + (f" ({archived} archived)" if archived else ""))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from core.settings import get_settings
    from warehouse.db import connect_console, load_console_frame

    if not args.query.strip():
        raise ValueError('empty query; e.g. tradingml sql "select * from v_bar_coverage"')
    path = args.warehouse or get_settings().warehouse_path
    with connect_console(path) as con:
        df = load_console_frame(con, args.query)
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
    """Each flow command's options come from its flow's config (flows/cli_options.py)."""
    parser = argparse.ArgumentParser(prog="tradingml", description=__doc__)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also: TRADINGML_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _flow_commands(sub)
    _registry_commands(sub)
    return parser


def _flow_commands(sub: Any) -> None:
    """The commands that run a flow: one option per field of its config."""
    from core import configs as cfg

    # Unset, these come from the stored bars (flows/data_defaults.py).
    train_from_data = ("timeframe", "train_start", "train_end", "test_start", "test_end")
    commands: list[tuple[str, dict[str, str], Any, dict[str, Any], Any]] = [
        ("demo", {"help": "run the whole pipeline on the embedded offline data"},
         cfg.DemoConfig, {}, cmd_demo),
        ("ingest", {"help": "run the ingest-bars flow"}, cfg.IngestBarsConfig,
         {"aliases": {"--tz": "file_tz", "--extended-hours": ("regular_hours_only", False)}},
         cmd_ingest),
        ("scrape", {"help": "run the scrape-reddit flow (posts -> VADER sentiment)"},
         cfg.ScrapeRedditConfig, {}, cmd_scrape),
        ("train", {"help": "run the train-agent flow (Double DQN, nested LSTMs)"},
         cfg.TrainAgentConfig, {"hide_default": train_from_data}, cmd_train),
        ("evolve", {"help": "run the evolve-architecture flow (evolutionary search)"},
         cfg.EvolveConfig, {}, cmd_evolve),
        ("backtest", {"help": "run the backtest flow (a registered agent, simulated broker)"},
         cfg.BacktestConfig, {"hide_default": ("start", "end")}, cmd_backtest),
        ("evaluate", {
            "help": "walk-forward evaluation of the agent beside the baselines, with its "
            "statistics",
            "description": "Per test year: train each seed on the years before it, trade the "
            "year beside buy-and-hold, flat, momentum, trend and a volatility target (same "
            "costs); then the promotion gate's statistics over all years: SPA p-value, deflated "
            "Sharpe ratio, bootstrap interval of the Sharpe difference. Writes evaluation tables "
            "and an HTML report.",
        }, cfg.EvaluateConfig, {}, cmd_evaluate),
        ("select-agent", {
            "help": "choose the agent's settings on development folds, then judge only the winner",
            "description": "Trains each fixed candidate (models/selection.py: five exposure "
            "levels, then one change each: drawdown reward, differential Sharpe, twice the "
            "updates on half the batch, an ensemble of 3) on the development years (default "
            "1993-1999) and picks the best mean walk-forward Sharpe (ties: the simpler); then "
            "`evaluate`s only the winner on the judging years (default 2000 on), its deflated "
            "Sharpe ratio counting the candidates x seeds tried.",
        }, cfg.SelectAgentConfig, {}, cmd_select_agent),
        ("trade", {"help": "run the live-trading flow (replay by default; paper/live)"},
         cfg.LiveTradingConfig, {"aliases": {"--speed": "replay_speed"}}, cmd_trade),
        ("nightly", {"help": "run the nightly-retrain flow (forecasters, agents, gate)"},
         cfg.NightlyRetrainConfig, {"aliases": {"--no-spy": ("include_spy", False)}},
         cmd_nightly),
        ("crypto", {"help": "run the crypto-trading flow (coin agents: replay, paper or live)"},
         cfg.CryptoTradingConfig, {}, cmd_crypto),
    ]  # fmt: skip
    for name, texts, model, options, func in commands:
        p = sub.add_parser(name, **texts)
        add_config_options(p, model, **options)
        if name == "ingest":
            p.add_argument(
                "--json", action="store_true", help="print the result as JSON (for scripts)"
            )
        p.set_defaults(func=func)


def _model_commands(sub: Any) -> None:
    """promote, demote and rollback: a model's stage in the registry, by hand."""
    for name, func, text in (
        (
            "promote",
            cmd_promote,
            "make a registered model the production one of its kind/symbol (it needs a valid"
            " evaluation: a finite metrics.objective; the previous production model is archived)",
        ),
        (
            "demote",
            cmd_demote,
            "take a production model out of production (-> archived), leaving none for its"
            " kind/symbol until you promote or roll back",
        ),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("model_id")
        p.add_argument("--reason", help="a note stored in promotion_history")
        p.add_argument("--warehouse")
        p.set_defaults(func=func)
    p = sub.add_parser(
        "rollback",
        help="make the previous production model of KIND SYMBOL production again (from"
        " promotion_history), archiving the current one; e.g. rollback dqn SPY",
        description="Restore the production model that the current one replaced (or, after a"
        " demote, that the demoted one replaced); repeated rollbacks walk further back. Refused"
        " when promotion_history records no previous production model.",
    )
    p.add_argument("kind", help="dqn, genome, xgb_forecaster or svm_allocator")
    p.add_argument("symbol", help="e.g. SPY, BTC/USD, CRYPTO (the allocator)")
    p.add_argument("--reason", help="a note stored in promotion_history")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_rollback)


def _registry_commands(sub: Any) -> None:
    """The commands on the account's limits, the registry and the warehouse."""
    p = sub.add_parser(
        "account-limits",
        help="show or set the account-wide limits every trading flow on one account obeys "
        "(live-trading and crypto-trading share them): daily loss and gross exposure",
    )
    p.add_argument("--account", default="paper", help="paper (default) or live")
    p.add_argument(
        "--daily-loss-limit",
        type=float,
        help="fraction of the account's equity at the start of the UTC day, e.g. 0.03",
    )
    p.add_argument(
        "--max-gross-exposure",
        type=float,
        help="largest sum of |position value| as a multiple of equity, e.g. 1.0",
    )
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_account_limits)
    _model_commands(sub)
    p = sub.add_parser(
        "sql", help="run SQL against the warehouse (read-only: no files, extensions or network)"
    )
    p.add_argument("query", help='e.g. "select * from v_bar_coverage"')
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("settings", help="show the effective settings (secrets hidden)")
    p.set_defaults(func=cmd_settings)


# Commands that write nothing; every other one writes the warehouse, and these the data dir too.
READ_ONLY_COMMANDS = frozenset({"sql", "settings"})
DATA_DIR_COMMANDS = frozenset(
    {"demo", "train", "evolve", "nightly", "backtest", "evaluate", "trade", "crypto"}
)


def main(argv: list[str] | None = None) -> int:
    set_prefect_env()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # accepted after the command as well as before it
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    args = build_parser().parse_args(argv)
    if args.debug:
        # The environment, not a flag: Prefect's console handler (flows/cli_logging.py) and
        # worker processes read it too.
        os.environ["TRADINGML_DEBUG"] = "1"
    try:
        require_writable_folders(args)
        notice = prefect_server_notice(args.command)
        if notice is not None:
            print(notice, file=sys.stderr)
        return int(args.func(args))
    except KeyboardInterrupt as exc:
        release_frames(exc)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- every error is reported, as one line
        return report_error(exc)


def require_writable_folders(args: argparse.Namespace) -> None:
    """Refuse before any work when a folder the command writes to cannot be written."""
    if args.command in READ_ONLY_COMMANDS:
        return
    from core.settings import get_settings, require_writable

    settings = get_settings()
    warehouse = Path(getattr(args, "warehouse", None) or settings.warehouse_path)
    require_writable(
        warehouse.parent, f"the warehouse {warehouse}", "--warehouse or TRADINGML_WAREHOUSE"
    )
    if args.command in DATA_DIR_COMMANDS:
        require_writable(
            settings.data_dir, f"the data directory {settings.data_dir}", "TRADINGML_DATA_DIR"
        )


def report_error(exc: BaseException) -> int:
    """One `error:` line on stderr (after the traceback with --debug); the exit code.

    2 for errors a user can act on, 1 for anything else (a bug, an unexpected failure).
    """
    try:
        message = _user_error(exc)
    except Exception:  # noqa: BLE001 -- a broken import here must not hide the error itself
        message = None
    code = 2
    if message is None:
        message, code = f"{type(exc).__name__}: {exc}".removesuffix(": "), 1
        if not debug_enabled():
            message += " (run with --debug for the traceback)"
    if debug_enabled():
        traceback.print_exception(exc)
    print("error: " + " ".join(message.split()), file=sys.stderr)
    release_frames(exc)
    return code


def release_frames(exc: BaseException) -> None:
    """Drop the local variables of the frames an exception (and its causes) went through.

    Prefect keeps a failed flow's exception in its in-memory result cache until exit, and
    with it those frames' locals: DuckDB connections and types that outlive the clean-up of
    DuckDB's module, whose bindings (nanobind) then print ~44 lines of "leaked instance"
    warnings at interpreter exit.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)
        todo += [err.__cause__, err.__context__, *getattr(err, "exceptions", ())]


def _user_error(exc: BaseException) -> str | None:
    """The one-line message for errors a user can act on; None for anything else."""
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
    # OSError: a missing file, a full disk, a permission -- the message names the path.
    if isinstance(exc, WarehouseLockedError | ValueError | OSError | RuntimeError):
        return str(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
