"""The benchmark registry, the results file and the printed table."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Figure:
    """One measured number and the goal it is held to (e.g. '<= 60')."""

    name: str
    value: float
    unit: str
    goal: str

    def met(self) -> bool | None:
        op, _, target = self.goal.partition(" ")
        try:
            t = float(target)
        except ValueError:
            return None
        return {"<=": self.value <= t, ">=": self.value >= t, "<": self.value < t}.get(op)


Benchmark = Callable[[Path], list[Figure]]
REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    """Register a benchmark under a name `make bench ONLY=<name>` selects."""

    def register(fn: Benchmark) -> Benchmark:
        REGISTRY[name] = fn
        return fn

    return register


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


def write_results(figures: list[Figure], path: Path = RESULTS) -> dict[str, object]:
    """Merge into results.json: figures of the same name are replaced, others kept."""
    existing: list[dict[str, object]] = []
    if path.exists():
        existing = list(json.loads(path.read_text()).get("figures", []))
    fresh = {f.name for f in figures}
    merged = [f for f in existing if f.get("name") not in fresh] + [asdict(f) for f in figures]
    merged.sort(key=lambda f: str(f["name"]))
    doc: dict[str, object] = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "figures": merged,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def render_table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "unit", "goal", "met")]
    for f in figures:
        met = f.met()
        rows.append(
            (
                f.name,
                f"{f.value:,.2f}",
                f.unit,
                f.goal,
                "-" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def markdown_table(doc: dict[str, object]) -> str:
    rows = [
        f"Machine: {doc['machine']}; last run {doc['date']}.",
        "",
        "| figure | value | unit | goal | met |",
        "|---|---:|---|---|---|",
    ]
    figures = doc["figures"]
    assert isinstance(figures, list)
    for f in figures:
        fig = Figure(str(f["name"]), float(f["value"]), str(f["unit"]), str(f["goal"]))
        met = fig.met()
        value = f"{fig.value:,.0f}" if abs(fig.value) >= 1000 else f"{fig.value:g}"
        flag = "-" if met is None else ("yes" if met else "**no**")
        rows.append(f"| `{fig.name}` | {value} | {fig.unit} | {fig.goal} | {flag} |")
    return "\n".join(rows)


def update_readme(doc: dict[str, object], path: Path = README) -> bool:
    """Rewrite the table between the README's bench markers; False if the markers are missing."""
    text = path.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{markdown_table(doc)}\n{END}{tail}")
    return True
