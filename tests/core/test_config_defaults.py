"""The shipped configs/forgeflow.yaml and the code defaults say the same thing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from core.settings import Settings, config_file

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "forgeflow.yaml"


def _drift(model: BaseModel, shipped: dict[str, Any], where: str) -> list[str]:
    found = []
    for key, value in shipped.items():
        default = getattr(model, key)
        if isinstance(default, BaseModel):
            found += _drift(default, value, f"{where}{key}.")
            continue
        parsed = getattr(type(model).model_validate({**model.model_dump(), key: value}), key)
        if parsed != default:
            found.append(f"{where}{key}: yaml {value!r}, code {default!r}")
    return found


def test_the_shipped_yaml_equals_the_code_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(tmp_path / "none.yaml"))  # code defaults only
    shipped = yaml.safe_load(SHIPPED.read_text())
    assert _drift(Settings(), shipped, "") == []


def test_a_drift_is_found() -> None:
    class Section(BaseModel):
        size: int = 256

    class Top(BaseModel):
        section: Section = Section()

    assert _drift(Top(), {"section": {"size": 128}}, "") == ["section.size: yaml 128, code 256"]
    assert _drift(Top(), {"section": {"size": 256}}, "") == []


def test_the_main_config_and_the_profiles_are_found_in_one_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the ones installed with forgeflow are used
    monkeypatch.delenv("FORGEFLOW_CONFIG", raising=False)
    main, profile = config_file("forgeflow.yaml"), config_file("train/cpu-quick.yaml")
    assert main is not None and profile is not None and main.parent == profile.parent.parent

    mine = tmp_path / "configs"
    (mine / "train").mkdir(parents=True)
    (mine / "forgeflow.yaml").write_text("base_model: smollm2-135m\n")
    (mine / "train" / "mine.yaml").write_text("rank: 4\n")
    assert config_file("forgeflow.yaml") == mine / "forgeflow.yaml"  # the working directory's first
    assert config_file("train/mine.yaml") == mine / "train" / "mine.yaml"
    assert config_file("train/cpu-quick.yaml") == profile  # what it lacks comes from the installed ones

    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("base_model: smollm2-135m\n")
    monkeypatch.setenv("FORGEFLOW_CONFIG", str(elsewhere))
    assert config_file("forgeflow.yaml") == elsewhere
