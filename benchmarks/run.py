"""`make bench [ONLY=name,...]`: run benchmarks, print a table, merge figures into results.json."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import (  # noqa: F401 -- registers their benchmarks
    bench_agent,
    bench_agent_wf,
    bench_alpaca,
    bench_evaluate,
    bench_gate,
    bench_ingest,
    bench_nightly,
    bench_proof_pipeline,
    bench_scaling,
    bench_search,
    bench_sentiment,
    bench_soak,
    bench_trading,
)
from benchmarks.harness import REGISTRY, Figure, render_table, update_readme, write_results


def select(only: str | None) -> list[str]:
    """The groups `--only` names (every group when None): a full name selects that group alone
    ('agent' is not also the long 'agent_wf'), anything else every group it prefixes.
    Raises ValueError naming what matches no group."""
    if not only:
        return sorted(REGISTRY)
    asked = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in asked if not any(n.startswith(w) for n in REGISTRY)]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(sorted(REGISTRY))}")
    return [
        n
        for n in sorted(REGISTRY)
        if any(n == w or (w not in REGISTRY and n.startswith(w)) for w in asked)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(sorted(REGISTRY))}")
    # What a dispatched child runs: exactly one group, in this process, never dispatched again.
    # The child used to get `--only <name>` and select again; with prefix selection `--only
    # search` also matched search_fitness, so each child started another child and waited:
    # `make bench ONLY=search` on 2026-12-07 grew a chain of 56 idle 436 MB processes until
    # the kernel's out-of-memory killer stopped it, before any search had started.
    parser.add_argument("--group", choices=sorted(REGISTRY), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.group is not None:
        wanted = [args.group]
    else:
        try:
            wanted = select(args.only)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
    if len(wanted) > 1:
        # One fresh process per group: torch's thread pools or a Prefect server left by one
        # group must not slow the next one down.
        failed = 0
        for name in wanted:
            failed |= subprocess.run(
                [sys.executable, "-m", "benchmarks.run", "--group", name]
            ).returncode
        return failed
    figures: list[Figure] = []
    scratch = Path(tempfile.mkdtemp(prefix="tradingml-bench-"))
    try:
        for name in wanted:
            print(f"== {name}", flush=True)
            figures += REGISTRY[name](scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(render_table(figures))
    doc = write_results(figures)
    print("\nwritten to benchmarks/results.json" + (" and README.md" if update_readme(doc) else ""))
    return 0 if all(f.met() is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
