"""The forgeflow version the API reports: the installed distribution's, else the source checkout's."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

UNKNOWN = "0+unknown"  # PEP 440, sorts before every release: never mistaken for a real version


@cache
def forgeflow_version() -> str:
    """`forgeflow`'s installed version; run from a checkout that is not installed, pyproject.toml's."""
    try:
        return version("forgeflow")
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return UNKNOWN
    if project.get("name") != "forgeflow" or not isinstance(project.get("version"), str):
        return UNKNOWN
    return str(project["version"])
