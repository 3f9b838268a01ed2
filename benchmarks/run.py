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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(sorted(REGISTRY))}")
    args = parser.parse_args(argv)
    wanted = sorted(REGISTRY)
    if args.only:
        asked = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in asked if not any(n.startswith(w) for n in REGISTRY)]
        if unknown:
            print(
                f"unknown benchmark(s) {unknown}; known: {', '.join(sorted(REGISTRY))}",
                file=sys.stderr,
            )
            return 2
        # A full name selects that group alone ('agent' is not also the long 'agent_wf').
        wanted = [
            n
            for n in wanted
            if any(n == w or (w not in REGISTRY and n.startswith(w)) for w in asked)
        ]
    if len(wanted) > 1:
        # One fresh process per group: torch's thread pools or a Prefect server left by one
        # group must not slow the next one down.
        failed = 0
        for name in wanted:
            failed |= subprocess.run(
                [sys.executable, "-m", "benchmarks.run", "--only", name]
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
