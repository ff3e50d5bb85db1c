"""CSV, Markdown and the chart, built from real summaries of hand-made records."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from core.bench.records import RequestRecord, ScenarioResult
from tasks.benchmark.report import CSV_COLUMNS, markdown_summary, render_chart, to_csv
from tasks.benchmark.stats import summarize

ODD_MODEL = 'qwen, "tiny"\nq4'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _records(
    model: str, concurrency: int, n: int, ok: bool = True, scale: float = 1.0
) -> list[RequestRecord]:
    return [
        RequestRecord(
            model=model,
            scenario="chat",
            concurrency=concurrency,
            index=i,
            ok=ok,
            error=None if ok else "connection refused",
            ttft_s=(0.05 + 0.001 * i) * scale if ok else None,
            e2e_s=(1.0 + 0.01 * i) * scale if ok else None,
            output_tokens=32 if ok else None,
            itl_s=[0.03 * scale] * 31 if ok else [],
        )
        for i in range(n)
    ]


def _result(
    records: list[RequestRecord], model: str, concurrency: int, notes: tuple[str, ...] = ()
) -> ScenarioResult:
    return summarize(
        records, model=model, scenario="chat", concurrency=concurrency, max_tokens=32, wall_s=5.0, notes=notes
    )


def test_csv_round_trips_a_model_name_with_a_comma_a_quote_and_a_newline() -> None:
    results = [
        _result(_records(ODD_MODEL, 1, 5), ODD_MODEL, 1, notes=("cut, short", 'said "stop"')),
        _result(_records("llama", 2, 3, ok=False), "llama", 2),
    ]
    text = to_csv(results)
    assert text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 2 and list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["model"] == ODD_MODEL
    assert rows[0]["notes"] == 'cut, short; said "stop"'
    assert float(rows[0]["output_throughput"]) == results[0].output_throughput
    assert rows[0]["ttft_ms_p90"] == ""  # 5 samples: p90 insufficient, so empty
    assert rows[1]["errors"] == "3" and rows[1]["e2e_ms_mean"] == "" and rows[1]["partial"] == "false"


def test_markdown_shows_both_models_escapes_pipes_and_compares_them() -> None:
    first, second = "llama|q4", "qwen"
    results = [
        _result(_records(first, 1, 5), first, 1),
        _result(_records(second, 1, 5, scale=0.5), second, 1),
    ]
    text = markdown_summary("Bench | laptop", results, {"hardware": "2 cores", "backend": "llama.cpp"})
    assert text.startswith("# Bench | laptop")
    assert "- **hardware**: 2 cores" in text
    assert "llama\\|q4" in text and "| qwen |" in text
    assert "—(n=5)" in text  # e2e p95 with 5 samples
    comparison = next(line for line in text.splitlines() if line.startswith("- comparison"))
    assert "qwen vs llama\\|q4" in comparison and "TTFT p50 -50.0%" in comparison


def test_chart_is_a_png_even_when_a_model_completed_nothing(tmp_path: Path) -> None:
    odd = r"$\frac$ q4"  # a pair of dollars starts mathtext, and a bad one fails at draw time
    good, dead = _records(odd, 1, 6) + _records(odd, 4, 6), _records("dead", 1, 3, ok=False)
    results = [_result(good[:6], odd, 1), _result(good[6:], odd, 4), _result(dead, "dead", 1)]
    path = render_chart(results, good + dead, tmp_path / "charts" / "run.png")
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)
    assert [p.name for p in path.parent.iterdir()] == ["run.png"]  # no temp file left behind


def test_chart_with_no_completed_request_at_all_is_still_written(tmp_path: Path) -> None:
    dead = _records("dead", 1, 2, ok=False)
    path = render_chart([_result(dead, "dead", 1)], dead, tmp_path / "run.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
