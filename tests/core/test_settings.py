"""The one settings object: YAML under env, bounds and unknown keys rejected with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import ExtractConfig, MonitorConfig
from core.settings import Settings


def test_yaml_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ff.yaml"
    config.write_text("monitor:\n  min_commits: 4\nextract:\n  eval_fraction: 0.2\n")
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(config))
    monkeypatch.setenv("FORGEFLOW_MONITOR__MIN_COMMITS", "7")
    settings = Settings()
    assert settings.monitor.min_commits == 7  # env over YAML
    assert settings.extract.eval_fraction == 0.2  # YAML over defaults
    assert settings.home.is_absolute()


def test_unknown_keys_are_rejected_naming_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ff.yaml"
    config.write_text("extract:\n  eval_fractoin: 0.2\n")
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(config))
    with pytest.raises(ValidationError, match="eval_fractoin"):
        Settings()


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (ExtractConfig, "eval_fraction", 0.9),
        (ExtractConfig, "max_file_bytes", 10),
        (MonitorConfig, "min_commits", 0),
    ],
)
def test_out_of_range_values_are_rejected(model: type, field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        model(**{field: value})


def test_the_shipped_config_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(root / "configs" / "forgeflow.yaml"))
    settings = Settings()
    assert settings.base_model == "smollm2-135m" and settings.extract.max_sample_chars == 6000


def test_the_workspace_is_per_user_wherever_forgeflow_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORGEFLOW_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv(
        "FORGEFLOW_CONFIG", str(Path(__file__).resolve().parents[2] / "configs" / "forgeflow.yaml")
    )
    homes = set()
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        homes.add(Settings().home)
    assert homes == {tmp_path / "data" / "forgeflow"}  # the shipped config leaves it to the platform
    monkeypatch.setenv("FORGEFLOW_HOME", str(tmp_path / "mine"))
    assert Settings().home == tmp_path / "mine"


def test_a_named_config_file_brings_the_profiles_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import config_file

    (tmp_path / "project" / "train").mkdir(parents=True)
    (tmp_path / "project" / "forgeflow.yaml").write_text("base_model: smollm2-135m\n")
    (tmp_path / "project" / "train" / "mine.yaml").write_text("method: lora\n")
    monkeypatch.chdir(tmp_path)  # a directory with no configs/ of its own, like the stack's workspace
    assert config_file("train/mine.yaml") is None
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(tmp_path / "project" / "forgeflow.yaml"))
    assert config_file("train/mine.yaml") == tmp_path / "project" / "train" / "mine.yaml"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8123"),
        ("0.0.0.0", "http://127.0.0.1:8123"),  # a bind address, not one to connect to
        ("::", "http://[::1]:8123"),
        ("::1", "http://[::1]:8123"),
        ("forge.internal", "http://forge.internal:8123"),
    ],
)
def test_the_api_url_is_one_a_client_can_reach(host: str, url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, serve={"host": host, "port": 8123}, api_key="k" * 32)
    assert settings.api_url == url
