"""Benchmark runs and results in the registry's database: a run's life, listing, ranking, deleting."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from core.bench.records import Dist, ScenarioResult
from core.bench.store import BenchmarkRunNotFound, BenchmarkStore
from core.errors import InputError
from core.registry import Registry
from core.registry.tables import Base
from core.settings import Settings


@pytest.fixture
def store(settings: Settings) -> Iterator[BenchmarkStore]:
    with BenchmarkStore.from_settings(settings) as opened:
        yield opened


def _run(store: BenchmarkStore, models: list[str] | None = None, status: str = "scheduled") -> str:
    run_id = str(uuid.uuid4())
    store.create_run(
        run_id, suite="quick", models=models or ["demo"], config={"max_tokens": 64}, source="cli",
        status=status,
    )  # fmt: skip
    return run_id


def _result(
    model: str = "demo", scenario: str = "chat", concurrency: int = 1, *, tps: float = 10.0,
    p50: float | None = 200.0,
) -> ScenarioResult:  # fmt: skip
    """One level's result: `tps` output tokens/s, `p50` the e2e median (None: too few requests)."""
    e2e = Dist(n=4, mean=p50, p50=p50, p95=p50 * 1.5) if p50 is not None else Dist(n=1)
    return ScenarioResult(
        model=model, scenario=scenario, concurrency=concurrency, max_tokens=64, requests=4, completed=4,
        errors=0, timeouts=0, error_rate=0.0, timeout_rate=0.0, usage_missing=0, wall_s=2.0,
        request_throughput=2.0, output_throughput=tps, ttft_ms=Dist(n=4, p50=20.0, p95=30.0),
        tpot_ms=Dist(n=4, p50=5.0), itl_ms=Dist(n=0), e2e_ms=e2e, tokens_per_s=Dist(n=0),
        output_tokens=Dist(n=0), cpu_avg=150.0, ram_avg_mb=512.0,
    )  # fmt: skip


def test_a_run_goes_from_scheduled_to_completed_with_its_results(store: BenchmarkStore) -> None:
    run_id = _run(store, ["demo", "other"])
    created = store.get_run(run_id)
    assert created is not None
    assert created.model_dump(exclude={"id", "created_at"}) == {
        "suite": "quick", "models": ["demo", "other"], "config": {"max_tokens": 64}, "status": "scheduled",
        "source": "cli", "error": None, "info": {}, "summary": {}, "started_at": None, "finished_at": None,
        "results": 0,
    }  # fmt: skip
    running = store.set_status(run_id, "running", info={"cpu": "x86_64", "cores": 16})
    assert running.started_at is not None and running.started_at.tzinfo is not None
    assert running.finished_at is None and running.info == {"cpu": "x86_64", "cores": 16}
    added = store.add_results(run_id, [_result(), _result("other", concurrency=4, tps=30.0)])
    assert [(r.model, r.concurrency, r.tps) for r in added] == [("demo", 1, 10.0), ("other", 4, 30.0)]
    assert added[0].model_dump(exclude={"id", "metrics"}) == {
        "run_id": run_id, "model": "demo", "scenario": "chat", "concurrency": 1, "rate": None, "tps": 10.0,
        "ttft_p50_ms": 20.0, "ttft_p95_ms": 30.0, "latency_p50_ms": 200.0, "latency_p95_ms": 300.0,
        "latency_p99_ms": None, "tpot_p50_ms": 5.0, "itl_p50_ms": None, "error_rate": 0.0,
        "timeout_rate": 0.0, "cpu_avg": 150.0, "ram_avg_mb": 512.0, "gpu_avg": None, "partial": False,
    }  # fmt: skip
    assert ScenarioResult.model_validate(added[0].metrics) == _result()  # the whole result, as JSON
    done = store.set_status(run_id, "completed", summary={"best": "other"})
    assert done.started_at == running.started_at and done.finished_at is not None
    assert done.finished_at >= running.started_at >= done.created_at
    assert (done.status, done.results, done.summary) == ("completed", 2, {"best": "other"})
    assert done.info == {"cpu": "x86_64", "cores": 16}  # kept: not given this time
    assert store.get_run(run_id) == done


def test_creating_a_run_again_answers_with_the_first_unchanged(store: BenchmarkStore) -> None:
    run_id = _run(store)
    first = store.set_status(run_id, "running")
    again = store.create_run(
        run_id.upper(), suite="other", models=["x"], config={}, source="api", status="scheduled"
    )
    assert again == first and again.id == run_id
    assert store.list_runs()[1] == 1


def test_a_retried_run_keeps_its_first_start_and_loses_its_end(store: BenchmarkStore) -> None:
    run_id = _run(store, status="running")
    started = store.get_run(run_id)
    assert started is not None and started.started_at is not None
    failed = store.set_status(run_id, "failed", error="backend died: " + "x" * 2000)
    assert failed.finished_at is not None and failed.error is not None and len(failed.error) == 1024
    retried = store.set_status(run_id, "running")
    assert (retried.started_at, retried.finished_at) == (started.started_at, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "done"}, "status must be one of scheduled, running, completed"),
        ({"source": "cron"}, "source must be one of api, cli, retrain"),
        ({"suite": ""}, "suite must be 1 to 64"),
        ({"run_id": "not-a-uuid"}, "is not a UUID"),
    ],
)
def test_a_run_with_bad_fields_is_refused(
    store: BenchmarkStore, kwargs: dict[str, str], message: str
) -> None:
    fields = {"run_id": str(uuid.uuid4()), "suite": "quick", "source": "cli", "status": "scheduled"} | kwargs
    run_id = fields.pop("run_id")
    with pytest.raises(InputError, match=message):
        store.create_run(run_id, models=["demo"], config={}, **fields)
    assert store.list_runs() == ([], 0)


def test_an_unknown_status_is_refused_and_the_run_is_unchanged(store: BenchmarkStore) -> None:
    run_id = _run(store)
    with pytest.raises(InputError, match="status must be one of"):
        store.set_status(run_id, "finished")
    with pytest.raises(InputError, match="status must be one of"):
        store.list_runs(status="finished")
    run = store.get_run(run_id)
    assert run is not None and run.status == "scheduled"


def test_an_unknown_run_is_not_found(store: BenchmarkStore) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(BenchmarkRunNotFound, match="no benchmark run is recorded") as exc:
        store.set_status(missing, "running")
    assert (exc.value.status, exc.value.code) == (404, "BENCHMARK_RUN_NOT_FOUND")
    known = _run(store)
    with pytest.raises(BenchmarkRunNotFound, match=f"the newest are {known}"):
        store.add_results(missing, [_result()])
    with pytest.raises(BenchmarkRunNotFound):
        store.delete_run("garbage")
    assert store.get_run(missing) is None and store.get_run("garbage") is None
    assert store.results(run_id=missing) == []


def test_runs_are_listed_newest_first_in_pages_and_by_status(store: BenchmarkStore) -> None:
    ids = [_run(store) for _ in range(5)]
    for run_id in ids[:2]:
        store.set_status(run_id, "completed")
    first, total = store.list_runs(limit=2)
    assert total == 5 and [r.id for r in first] == [ids[4], ids[3]]
    assert [r.id for r in store.list_runs(limit=2, page=3)[0]] == [ids[0]]
    assert store.list_runs(limit=2, page=9) == ([], 5)
    completed, count = store.list_runs(status="completed")
    assert count == 2 and [r.id for r in completed] == [ids[1], ids[0]]
    for page, limit in ((0, 10), (1, 0), (1, 201)):
        with pytest.raises(InputError, match="page" if page < 1 else "limit"):
            store.list_runs(page=page, limit=limit)


def test_results_filter_by_run_and_model_oldest_run_first(store: BenchmarkStore) -> None:
    old, new = _run(store), _run(store)
    store.add_results(new, [_result("b", "rag", 1), _result("a", "chat", 8), _result("a", "chat", 2)])
    store.add_results(old, [_result("b", "chat", 1)])
    every = [(r.run_id, r.model, r.scenario, r.concurrency) for r in store.results()]
    assert every[:2] == [(old, "b", "chat", 1), (new, "a", "chat", 2)]  # the older run's first
    assert every[2:] == [(new, "a", "chat", 8), (new, "b", "rag", 1)]
    assert [(r.run_id, r.scenario) for r in store.results(model="b")] == [(old, "chat"), (new, "rag")]
    assert [r.concurrency for r in store.results(run_id=new, model="a")] == [2, 8]
    assert len(store.results(run_id=old)) == 1 and store.results(model="nope") == []


def test_results_are_added_all_or_none(store: BenchmarkStore) -> None:
    run_id = _run(store)
    with pytest.raises(InputError, match="at most 200 characters"):
        store.add_results(run_id, [_result(), _result("m" * 201)])
    assert store.results(run_id=run_id) == []


def test_system_stats_rank_results_of_completed_and_partial_runs(store: BenchmarkStore) -> None:
    empty = {"totalRuns": 0, "lastRun": None, "bestTpsModel": None, "bestLatencyModel": None}
    assert store.system_stats() == empty
    done, partial, failed = _run(store), _run(store), _run(store)
    store.add_results(
        done, [_result("a", tps=40.0, p50=90.0), _result("a", concurrency=8, tps=80.0, p50=None)]
    )
    store.add_results(partial, [_result("b", "rag", 2, tps=50.0, p50=60.0)])
    store.add_results(failed, [_result("c", tps=500.0, p50=1.0)])  # a failed run's figures do not count
    store.set_status(done, "completed")
    store.set_status(partial, "partial")
    store.set_status(failed, "failed", error="backend died")
    latest = store.set_status(_run(store), "running")
    stats = store.system_stats()
    assert stats["totalRuns"] == 4
    assert stats["lastRun"] == latest.model_dump(mode="json") and stats["lastRun"]["status"] == "running"
    assert stats["bestTpsModel"] == {
        "model": "a",
        "tps": 80.0,
        "run_id": done,
        "scenario": "chat",
        "concurrency": 8,
    }
    assert stats["bestLatencyModel"] == {
        "model": "b",
        "latency_p50_ms": 60.0,
        "run_id": partial,
        "scenario": "rag",
        "concurrency": 2,
    }


def test_deleting_a_run_deletes_its_results(store: BenchmarkStore, settings: Settings) -> None:
    gone, kept = _run(store), _run(store)
    store.add_results(gone, [_result(), _result(concurrency=2)])
    store.add_results(kept, [_result()])
    deleted = store.delete_run(gone)
    assert (deleted.id, deleted.results) == (gone, 2)
    assert store.get_run(gone) is None and [r.run_id for r in store.results()] == [kept]
    with sqlite3.connect(settings.home / "registry.db") as conn:  # the rows are gone, not just hidden
        assert conn.execute("SELECT count(*) FROM benchmark_results").fetchone() == (1,)
    with pytest.raises(BenchmarkRunNotFound):
        store.delete_run(gone)


def test_two_stores_on_one_database_see_each_others_writes(settings: Settings) -> None:
    with BenchmarkStore.from_settings(settings) as api, BenchmarkStore.from_settings(settings) as worker:
        run_id = _run(api)
        worker.set_status(run_id, "running")
        worker.add_results(run_id, [_result()])
        run = api.get_run(run_id)
        assert run is not None and (run.status, run.results) == ("running", 1)
        api.set_status(run_id, "cancelled")
        assert [r.status for r in worker.list_runs()[0]] == ["cancelled"]


def test_the_registry_and_the_store_share_one_migrated_database(settings: Settings) -> None:
    with Registry.from_settings(settings) as registry, BenchmarkStore.from_settings(settings) as store:
        _run(store)
        assert registry.list().total == 0 and store.list_runs()[1] == 1
    engine = create_engine(settings.registry_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == "0002"
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
