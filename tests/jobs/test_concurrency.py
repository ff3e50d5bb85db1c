"""At most `jobs.max_training_runs` (1 here) train at once, whoever asks; the rest wait, none lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from tests.helpers.stack import Stack


def test_twenty_concurrent_fine_tunes_run_one_at_a_time(stack: Stack, job_dataset: Path) -> None:
    body = {"dataset": str(job_dataset), "max_steps": 3000, "rank": 4, "promote": False}

    async def submit() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(client.post(f"{stack.api}/v1/fine-tune", json=body) for _ in range(20))
            )

    replies = asyncio.run(submit())
    assert [r.status_code for r in replies] == [202] * 20
    ids = [r.json()["job_id"] for r in replies]
    assert len(set(ids)) == 20
    try:
        stack.wait_for(ids[0], lambda s: True)  # the API answers for each
        seen: Counter[str] = Counter()
        for _ in range(15):  # long enough for the runner to have started whatever it would start
            statuses = [stack.status(i) for i in ids]
            seen = Counter(s["status"] for s in statuses)
            assert seen["training"] + seen["preparing"] <= 1, seen
            if seen["training"] + seen["preparing"] == 1:
                break
            asyncio.run(asyncio.sleep(2))
        assert seen["training"] + seen["preparing"] == 1 and seen["queued"] == 19, seen
        positions = sorted(s["queue_position"] for s in statuses if s["status"] == "queued")
        assert positions == list(range(1, 20))
    finally:
        for i in ids:
            httpx.post(f"{stack.api}/v1/retrain/{i}/cancel", timeout=30)
    assert {stack.wait_state(i, "Cancelled")["status"] for i in ids} == {"cancelled"}
