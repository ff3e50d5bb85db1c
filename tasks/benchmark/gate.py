"""The speed gate of the retrain flow: a candidate that is much slower than the champion is not promoted.

Both models are measured in the same run (the `repo` suite, one after the other, on the same
server), and compared at concurrency 1: output tokens/s and TTFT p50. A candidate whose tokens/s
is lower, or whose TTFT p50 is higher, than the champion's by more than `bench.max_regression`
(a fraction) fails. With no champion, or a figure missing on either side, there is nothing to
compare and the gate passes, saying why.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from core.bench.records import BenchReport


class SpeedGate(BaseModel):
    """What the gate decided, and on which figures."""

    passed: bool
    reason: str
    run_id: str
    candidate: dict[str, Any] | None
    champion: dict[str, Any] | None
    max_regression: float


def speed_gate(report: BenchReport, candidate: str, champion: str | None, max_regression: float) -> SpeedGate:
    """Compare `candidate` with `champion` in one benchmark `report` (model keys as the run sent them)."""
    figures = report.per_model()
    mine, theirs = figures.get(candidate), figures.get(champion) if champion else None
    gate = {"run_id": report.run_id, "candidate": mine, "champion": theirs, "max_regression": max_regression}
    if mine is None:
        return SpeedGate(
            passed=False, reason=f"the candidate {candidate} answered no benchmark request", **gate
        )
    if champion is None:
        return SpeedGate(passed=True, reason="no champion to compare with", **gate)
    if theirs is None:
        return SpeedGate(
            passed=True, reason=f"the champion {champion} answered no request: nothing to compare", **gate
        )
    problems = []
    if mine.get("tps_c1") and theirs.get("tps_c1"):
        change = mine["tps_c1"] / theirs["tps_c1"] - 1
        if change < -max_regression:
            problems.append(f"tokens/s {mine['tps_c1']:.1f} vs {theirs['tps_c1']:.1f} ({change:+.0%})")
    if mine.get("ttft_p50_ms") and theirs.get("ttft_p50_ms"):
        change = mine["ttft_p50_ms"] / theirs["ttft_p50_ms"] - 1
        if change > max_regression:
            problems.append(
                f"TTFT p50 {mine['ttft_p50_ms']:.0f} vs {theirs['ttft_p50_ms']:.0f} ms ({change:+.0%})"
            )
    if problems:
        return SpeedGate(
            passed=False,
            reason=f"slower than the champion beyond {max_regression:.0%}: " + "; ".join(problems),
            **gate,
        )
    return SpeedGate(passed=True, reason=f"within {max_regression:.0%} of the champion's speed", **gate)
