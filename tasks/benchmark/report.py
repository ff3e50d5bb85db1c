"""A benchmark run for people and spreadsheets: one CSV row per level, a Markdown summary, a chart."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.atomic import atomic_open
from core.bench.records import Dist, RequestRecord, ScenarioResult

_DISTS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "tokens_per_s")
_STATS = ("mean", "p50", "p90", "p95", "p99")
_HEAD = (
    "model",
    "scenario",
    "concurrency",
    "rate",
    "max_tokens",
    "requests",
    "completed",
    "errors",
    "timeouts",
    "error_rate",
    "timeout_rate",
    "usage_missing",
    "wall_s",
    "request_throughput",
    "output_throughput",
    "goodput",
)
_TAIL = ("cpu_avg", "ram_avg_mb", "gpu_avg", "partial", "notes")
CSV_COLUMNS: tuple[str, ...] = (*_HEAD, *(f"{d}_{s}" for d in _DISTS for s in _STATS), *_TAIL)


def to_csv(results: Sequence[ScenarioResult]) -> str:
    """One RFC 4180 row per result under a `CSV_COLUMNS` header; None is an empty field."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    for result in results:
        writer.writerow(_csv_row(result))
    return buf.getvalue()


def markdown_summary(title: str, results: Sequence[ScenarioResult], meta: Mapping[str, Any]) -> str:
    """A Markdown report: the run's meta, then per scenario one table row per (model, concurrency).

    A percentile missing for lack of samples reads "—(n=5)"; with exactly two models, each level
    gets a line comparing the second model with the first.
    """
    lines = [f"# {_one_line(title)}", ""]
    lines += [f"- **{_one_line(str(k))}**: {_one_line(str(v))}" for k, v in meta.items()]
    models = _models(results, ())
    for scenario in dict.fromkeys(r.scenario for r in results):
        rows = sorted(
            (r for r in results if r.scenario == scenario),
            key=lambda r: (models.index(r.model), r.concurrency),
        )
        lines += ["", f"## Scenario: {_one_line(scenario)}", "", *_table(rows)]
        remarks = [f"- {_cell(r.model)} c={r.concurrency}: {_remark(r)}" for r in rows if _remark(r)]
        if remarks:
            lines += ["", *remarks]
        if len(models) == 2:
            lines += ["", *_comparisons(rows, models[0], models[1])]
    return "\n".join(lines) + "\n"


def render_chart(results: Sequence[ScenarioResult], records: Sequence[RequestRecord], path: Path) -> Path:
    """A PNG with (a) e2e latency per model, (b) output tokens/s against concurrency; written atomically."""
    fig = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(fig)
    latency, throughput = fig.subplots(1, 2)
    models = _models(results, records)
    e2e = {
        m: [r.e2e_s * 1000.0 for r in records if r.model == m and r.ok and r.e2e_s is not None]
        for m in models
    }
    shown = [m for m in models if e2e[m]]
    if shown:
        latency.boxplot([e2e[m] for m in shown])
        latency.set_xticks(range(1, len(shown) + 1), [_plain(m) for m in shown], rotation=15)
    else:
        latency.text(0.5, 0.5, "no completed requests", ha="center", va="center", transform=latency.transAxes)
    empty = [m for m in models if not e2e[m]]
    latency.set_title(
        "e2e latency, all scenarios" + (f" (no completed: {_plain(', '.join(empty))})" if empty else "")
    )
    latency.set_ylabel("ms")
    for model, scenario in dict.fromkeys((r.model, r.scenario) for r in results):
        level = sorted(
            (r for r in results if r.model == model and r.scenario == scenario), key=lambda r: r.concurrency
        )
        throughput.plot(
            [r.concurrency for r in level],
            [r.output_throughput for r in level],
            marker="o",
            label=_plain(f"{model} / {scenario}"),
        )
    if results:
        throughput.set_xticks(sorted({r.concurrency for r in results}))
        throughput.legend(fontsize="small")
    throughput.set_title("output tokens/s against concurrency")
    throughput.set_xlabel("concurrency")
    throughput.set_ylabel("output tokens/s")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path


def _csv_row(r: ScenarioResult) -> dict[str, str]:
    row: dict[str, Any] = {name: getattr(r, name) for name in _HEAD}
    for name in _DISTS:
        dist: Dist = getattr(r, name)
        row.update({f"{name}_{s}": getattr(dist, s) for s in _STATS})
    row.update(cpu_avg=r.cpu_avg, ram_avg_mb=r.ram_avg_mb, gpu_avg=r.gpu_avg, partial=r.partial)
    row["notes"] = "; ".join(r.notes)
    return {k: _field(v) for k, v in row.items()}


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _figures() -> tuple[tuple[str, Callable[[ScenarioResult], str]], ...]:
    def pct(field: str, stat: str) -> Callable[[ScenarioResult], str]:
        return lambda r: percentile(getattr(r, field), stat)

    return (
        ("out tok/s", lambda r: _num(r.output_throughput, 1)),
        ("req/s", lambda r: _num(r.request_throughput, 2)),
        *((f"{label} {stat} ms", pct(field, stat)) for label, field, stat in _PERCENTILES),
        ("errors", lambda r: str(r.errors)),
        ("timeouts", lambda r: str(r.timeouts)),
        ("CPU %", lambda r: _num(r.cpu_avg, 0)),
        ("RAM MB", lambda r: _num(r.ram_avg_mb, 0)),
    )


_PERCENTILES = (
    ("TTFT", "ttft_ms", "p50"),
    ("TTFT", "ttft_ms", "p95"),
    ("TPOT", "tpot_ms", "p50"),
    ("ITL", "itl_ms", "p50"),
    ("e2e", "e2e_ms", "p50"),
    ("e2e", "e2e_ms", "p95"),
    ("e2e", "e2e_ms", "p99"),
)
# One level's figures in table order, (column, cell): the Markdown summary shows them all, and
# `forgeflow bench` the ones it has room for.
FIGURES = _figures()


def _table(rows: Sequence[ScenarioResult]) -> list[str]:
    with_rate = any(r.rate is not None for r in rows)
    head = ["model", "c", *(["rate/s"] if with_rate else []), *(name for name, _ in FIGURES)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r.model), str(r.concurrency) + ("*" if r.partial else "")]
        cells += [_num(r.rate, 2)] if with_rate else []
        cells += [cell(r) for _, cell in FIGURES]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _remark(r: ScenarioResult) -> str:
    parts = (["partial (* in the table)"] if r.partial else []) + [_cell(n) for n in r.notes]
    if r.usage_missing:
        parts.append(f"{r.usage_missing} completed without usage (no token count)")
    return "; ".join(parts)


def _comparisons(rows: Sequence[ScenarioResult], first: str, second: str) -> list[str]:
    """Per level present for both models: the second's output tok/s and TTFT p50 against the first's."""
    out = []
    for level in dict.fromkeys((r.concurrency, r.rate) for r in rows):
        pair = {r.model: r for r in rows if (r.concurrency, r.rate) == level}
        if first in pair and second in pair:
            a, b = pair[first], pair[second]
            out.append(
                f"- comparison c={level[0]}: {_cell(second)} vs {_cell(first)}: output tok/s "
                f"{_change(b.output_throughput, a.output_throughput)}, "
                f"TTFT p50 {_change(b.ttft_ms.p50, a.ttft_ms.p50)}"
            )
    return out


def _change(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "n/a"
    return f"{(new - old) / old * 100.0:+.1f}%"


def percentile(dist: Dist, name: str) -> str:
    """A percentile as a cell: `—(n=3)` when too few samples made it unknowable, `—` when absent."""
    value = getattr(dist, name)
    if value is None and name in dist.insufficient:
        return f"—(n={dist.n})"
    return _num(value, 1)


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _plain(text: str) -> str:
    """`text` shown as typed: a pair of `$` would otherwise start matplotlib's mathtext."""
    return text.replace("$", r"\$")


def _models(results: Sequence[ScenarioResult], records: Sequence[RequestRecord]) -> list[str]:
    """Every model in order of first appearance, results first."""
    return list(dict.fromkeys([*(r.model for r in results), *(r.model for r in records)]))
