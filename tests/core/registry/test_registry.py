"""The registry's bookkeeping: versions, resolving, aliases, deleting, listing, state and stats."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import InputError
from core.registry import AlreadyExists, ModelNotFound, Registry
from core.settings import Settings


@pytest.fixture
def gguf(make_gguf: Callable[..., Path]) -> Path:
    return make_gguf()


def test_versions_auto_increment_from_1_0_0_by_minor(registry: Registry, gguf: Path) -> None:
    keys = [registry.register(gguf, name="demo").key for _ in range(3)]
    assert keys == ["demo:1.0.0", "demo:1.1.0", "demo:1.2.0"]
    registry.register(gguf, name="demo", version="2.0.0")
    assert registry.register(gguf, name="demo").version == "2.1.0"  # after the highest, not the newest
    assert registry.register(gguf, name="other").version == "1.0.0"  # counted per name


def test_explicit_version_that_exists_is_refused_and_leaves_the_registry_unchanged(
    registry: Registry, gguf: Path, snapshot: Callable[[], object]
) -> None:
    registry.register(gguf, name="demo", version="1.2.0")
    before = snapshot()
    with pytest.raises(AlreadyExists, match=r"demo:1\.2\.0 is already registered") as exc:
        registry.register(gguf, name="demo", version="1.2.0")
    assert (exc.value.status, exc.value.code) == (409, "MODEL_EXISTS")
    assert snapshot() == before


def test_resolve_by_name_version_alias_and_latest(registry: Registry, gguf: Path) -> None:
    registry.register(gguf, name="demo")
    registry.register(gguf, name="demo", version="3.0.0")
    registry.register(gguf, name="demo", version="2.0.0")  # registered last: the newest
    registry.set_alias("demo", "champion", "3.0.0")
    assert registry.resolve("demo").version == "2.0.0"
    assert registry.resolve("demo:latest").version == "2.0.0"
    assert registry.resolve("demo:1.0.0").version == "1.0.0"
    champion = registry.resolve("demo:champion")
    assert (champion.key, champion.aliases) == ("demo:3.0.0", ["champion"])


def test_resolving_unknown_refs_names_what_exists(registry: Registry, gguf: Path) -> None:
    with pytest.raises(ModelNotFound, match="the registry is empty") as exc:
        registry.resolve("demo")
    assert (exc.value.status, exc.value.code) == (404, "MODEL_NOT_FOUND")
    registry.register(gguf, name="demo")
    with pytest.raises(ModelNotFound, match="known: demo"):
        registry.resolve("nope")
    with pytest.raises(ModelNotFound, match="has no version '9.9.9'; it has 1.0.0"):
        registry.resolve("demo:9.9.9")
    with pytest.raises(ModelNotFound, match="has no alias 'champion'; it has latest"):
        registry.resolve("demo:champion")


def test_moving_champion_back_to_an_older_version_is_a_rollback(registry: Registry, gguf: Path) -> None:
    for _ in range(3):
        registry.register(gguf, name="demo")
    registry.set_alias("demo", "champion", "1.2.0")
    moved = registry.set_alias("demo", "champion", "1.0.0")
    assert moved.key == "demo:1.0.0" and moved.aliases == ["champion"]
    assert registry.resolve("demo:champion").version == "1.0.0"
    assert registry.resolve("demo:1.2.0").aliases == ["latest"]
    registry.remove_alias("demo", "champion")
    with pytest.raises(ModelNotFound):
        registry.resolve("demo:champion")
    with pytest.raises(ModelNotFound):
        registry.remove_alias("demo", "champion")


@pytest.mark.parametrize("alias", ["latest", "1.2.0", "Champion", "9lives", "x" * 33])
def test_latest_and_malformed_aliases_cannot_be_set(registry: Registry, gguf: Path, alias: str) -> None:
    registry.register(gguf, name="demo")
    with pytest.raises(InputError, match="latest" if alias == "latest" else "invalid alias"):
        registry.set_alias("demo", alias, "1.0.0")
    assert registry.resolve("demo").aliases == ["latest"]


def test_latest_cannot_be_removed_and_alias_to_a_missing_version_is_not_found(
    registry: Registry, gguf: Path
) -> None:
    registry.register(gguf, name="demo")
    with pytest.raises(InputError, match="always follows the newest registration"):
        registry.remove_alias("demo", "latest")
    with pytest.raises(ModelNotFound, match="no version '2.0.0'"):
        registry.set_alias("demo", "champion", "2.0.0")


def test_deleting_the_newest_version_moves_latest_and_keeps_a_shared_store_file(
    registry: Registry, gguf: Path, settings: Settings
) -> None:
    registry.register(gguf, name="demo")
    registry.register(gguf, name="demo")
    registry.set_alias("demo", "champion", "1.1.0")
    deleted = registry.delete("demo", "1.1.0")
    assert [(m.key, m.aliases) for m in deleted] == [("demo:1.1.0", ["champion", "latest"])]
    assert registry.resolve("demo").aliases == ["latest"] and registry.resolve("demo").version == "1.0.0"
    stored = Path(registry.resolve("demo").artifacts["gguf"].path)
    assert stored.is_file() and stored.parent == settings.home / "models"  # 1.0.0 still uses it


def test_deleting_a_name_removes_its_aliases_and_frees_its_store_files(
    registry: Registry, make_gguf: Callable[..., Path], settings: Settings
) -> None:
    one, two = make_gguf("a.gguf", general_name="tinA"), make_gguf("b.gguf", general_name="tinB")
    registry.register(one, name="demo")
    registry.register(two, name="demo")
    keep = registry.register(two, name="other")  # shares b's store file
    registry.set_alias("demo", "champion", "1.0.0")
    registry.set_active("demo:champion")
    assert [m.key for m in registry.delete("demo")] == ["demo:1.0.0", "demo:1.1.0"]
    with pytest.raises(ModelNotFound):
        registry.resolve("demo")
    assert registry.active() is None
    store = settings.home / "models"
    assert sorted(p.name for p in store.iterdir()) == [Path(keep.artifacts["gguf"].path).name]
    with pytest.raises(ModelNotFound):
        registry.delete("demo")
    registry.register(one, name="demo")  # the alias went with its version: a fresh name starts clean
    assert registry.resolve("demo").aliases == ["latest"]


def test_pages_count_the_total_and_a_page_past_the_end_is_empty(registry: Registry, gguf: Path) -> None:
    for name in ("b-model", "a-model"):
        for _ in range(3):
            registry.register(gguf, name=name)
    first = registry.list(limit=4)
    assert (first.total, first.pages, first.page) == (6, 2, 1)
    assert [m.key for m in first.models] == [
        "a-model:1.2.0",
        "a-model:1.1.0",
        "a-model:1.0.0",
        "b-model:1.2.0",
    ]
    assert [m.key for m in registry.list(limit=4, page=2).models] == ["b-model:1.1.0", "b-model:1.0.0"]
    beyond = registry.list(limit=4, page=9)
    assert (beyond.models, beyond.total, beyond.pages) == ([], 6, 2)
    assert registry.list(name="b-model").total == 3


@pytest.mark.parametrize(("page", "limit"), [(0, 20), (1, 0), (1, 101)])
def test_out_of_range_page_or_limit_is_refused(registry: Registry, page: int, limit: int) -> None:
    with pytest.raises(InputError, match="page" if page < 1 else "limit"):
        registry.list(page=page, limit=limit)


def test_list_filters_by_task_and_device(registry: Registry, gguf: Path) -> None:
    registry.register(gguf, name="chat")
    registry.register(gguf, name="chat-gpu", device="cuda")
    registry.register(gguf, name="embed", task="text-embedding")
    assert [m.name for m in registry.list(task="text-embedding").models] == ["embed"]
    assert [m.name for m in registry.list(device="cuda").models] == ["chat-gpu"]
    assert [m.name for m in registry.list(task="text-generation", device="cpu").models] == ["chat"]


def test_stats_accumulate_across_batches_and_p95_covers_the_last_1000(registry: Registry, gguf: Path) -> None:
    registry.register(gguf, name="demo")
    assert registry.resolve("demo").stats.p95_latency_ms is None
    registry.record_stats(
        "demo:1.0.0", requests=3, failed=1, latencies_ms=[10, 20, 30], prompt_tokens=7, completion_tokens=11
    )
    stats = registry.resolve("demo").stats
    assert (stats.requests_total, stats.requests_failed, stats.prompt_tokens, stats.completion_tokens) == (
        3,
        1,
        7,
        11,
    )
    assert (stats.avg_latency_ms, stats.p95_latency_ms) == (20.0, 30.0)
    # 1000 more: the first three fall out of the reservoir, but still count in the average
    later = [float(i) for i in range(1, 1001)]
    registry.record_stats(
        "demo", requests=1000, failed=0, latencies_ms=later, prompt_tokens=1, completion_tokens=2
    )
    stats = registry.resolve("demo:latest").stats
    assert stats.requests_total == 1003 and stats.completion_tokens == 13
    assert stats.p95_latency_ms == 950.0
    assert stats.avg_latency_ms == pytest.approx((60 + sum(later)) / 1003)


def test_state_backend_and_the_active_model(registry: Registry, gguf: Path) -> None:
    registry.register(gguf, name="demo")
    registry.register(gguf, name="demo")
    assert registry.active() is None
    registry.set_state("demo:1.0.0", "loaded", backend="llamacpp")
    registry.set_active("demo:1.0.0")
    active = registry.active()
    assert active is not None and (active.key, active.state, active.backend) == (
        "demo:1.0.0",
        "loaded",
        "llamacpp",
    )
    assert active.updated_at >= active.created_at
    with pytest.raises(InputError, match="state must be one of"):
        registry.set_state("demo:1.0.0", "running")
    registry.set_active(None)
    assert registry.active() is None


def test_two_registries_on_one_database_see_each_others_writes(settings: Settings, gguf: Path) -> None:
    first, second = Registry.from_settings(settings), Registry.from_settings(settings)
    try:
        first.register(gguf, name="demo")
        second.register(gguf, name="demo")
        second.set_alias("demo", "champion", "1.0.0")
        assert first.resolve("demo:champion").version == "1.0.0"
        assert [m.key for m in first.list().models] == ["demo:1.1.0", "demo:1.0.0"]
    finally:
        first.close()
        second.close()


def test_a_writer_waits_for_another_process_write_lock_instead_of_failing(
    registry: Registry, gguf: Path, settings: Settings
) -> None:
    registry.register(gguf, name="demo")
    other = sqlite3.connect(settings.home / "registry.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process mid-write holds the lock...
    threading.Timer(0.5, other.commit).start()  # ...for half a second
    started = time.monotonic()
    registry.record_stats(
        "demo", requests=1, failed=0, latencies_ms=[5.0], prompt_tokens=1, completion_tokens=1
    )
    assert time.monotonic() - started >= 0.4
    assert registry.resolve("demo").stats.requests_total == 1
    other.close()
    with pytest.raises(InputError, match="failed <= requests"):
        registry.record_stats(
            "demo", requests=1, failed=2, latencies_ms=[], prompt_tokens=0, completion_tokens=0
        )


def test_find_and_alias_target_answer_none_for_what_is_not_there(settings: Settings, gguf: Path) -> None:
    with Registry.from_settings(settings) as registry:  # a context manager: closed on the way out
        assert registry.find("demo") is None and registry.alias_target("demo", "champion") is None
        first = registry.register(gguf, name="demo")
        registry.register(gguf, name="demo")
        registry.set_alias("demo", "champion", first.version)
        found = registry.find("demo:champion")
        assert found is not None and found.key == first.key
        assert registry.alias_target("demo", "champion") == first.version == "1.0.0"
        assert registry.find("demo:9.9.9") is None
