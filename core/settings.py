"""The one settings object: FORGEFLOW_* environment variables over configs/forgeflow.yaml."""

from __future__ import annotations

import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from core.config import (
    BenchConfig,
    CpuConfig,
    EvalConfig,
    ExportConfig,
    ExtractConfig,
    IndexConfig,
    JobsConfig,
    MonitorConfig,
    ServeConfig,
    ValidateConfig,
)

UrlScheme = Literal["https", "ssh", "file", "git", "http"]
_DEFAULT_SCHEMES: tuple[UrlScheme, ...] = ("https", "ssh", "file")
CONFIG_ENV = "FORGEFLOW_CONFIG"
MAIN_CONFIG = "forgeflow.yaml"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def config_dirs() -> list[Path]:
    """Where configuration is looked for, first match wins, the same for every file in it.

    `./configs` (a project's own), then the `configs/` forgeflow was installed with: the source
    tree's for a checkout or editable install, `<prefix>/share/forgeflow/configs` for a wheel.
    A main file named by FORGEFLOW_CONFIG puts its own folder first, so the profiles beside it are
    found too: that is how the stack's processes, which run in the workspace, see the configuration of
    the directory `forgeflow up` was run in.
    """
    source_tree = Path(__file__).resolve().parents[1] / "configs"
    installed = Path(sys.prefix) / "share" / "forgeflow" / "configs"
    dirs = [Path.cwd() / "configs", source_tree, installed]
    explicit = os.environ.get(CONFIG_ENV)
    if explicit and Path(explicit).is_file():
        dirs.insert(0, Path(explicit).resolve().parent)
    return dirs


def config_file(relative: str) -> Path | None:
    """The first `relative` file (`forgeflow.yaml`, `train/cpu-quick.yaml`) in `config_dirs()`.

    FORGEFLOW_CONFIG names the main file explicitly (then a missing file means code defaults).
    """
    if relative == MAIN_CONFIG and (explicit := os.environ.get(CONFIG_ENV)):
        return Path(explicit) if Path(explicit).is_file() else None
    return next((d / relative for d in config_dirs() if (d / relative).is_file()), None)


def config_names(folder: str) -> list[str]:
    """Stems of the YAML files in `folder` across `config_dirs()` (the known training profiles)."""
    return sorted({p.stem for d in config_dirs() for p in (d / folder).glob("*.yaml")})


def default_home() -> Path:
    """The per-user workspace: the platform's data directory (`~/.local/share/forgeflow` on Linux)."""
    return Path(platformdirs.user_data_dir("forgeflow", appauthor=False))


def _default_roots() -> list[Path]:
    return [Path.cwd(), Path.home(), Path(tempfile.gettempdir())]


class Settings(BaseSettings):
    """All of forgeflow's settings; nested keys use `__` in env vars (FORGEFLOW_MONITOR__MIN_COMMITS)."""

    model_config = SettingsConfigDict(
        env_prefix="FORGEFLOW_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(
        default_factory=default_home,
        description="workspace: jobs, models, registry, logs, caches (default: the user's data directory)",
    )
    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="FORGEFLOW_LOG_LEVEL: what the CLI's log lines show"
    )
    debug: bool = Field(False, description="FORGEFLOW_DEBUG=1: the CLI shows tracebacks of internal errors")
    allowed_roots: list[Path] = Field(
        default_factory=_default_roots, description="local repos and files must live under one of these"
    )
    allowed_url_schemes: list[UrlScheme] = Field(default_factory=lambda: list(_DEFAULT_SCHEMES))
    base_model: str = "smollm2-135m"
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    validation: ValidateConfig = Field(default_factory=ValidateConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    cpu: CpuConfig = Field(default_factory=CpuConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    database_url: str | None = Field(
        None, description="registry database (SQLAlchemy URL); default: SQLite in the workspace"
    )
    api_key: SecretStr | None = Field(
        None, description="FORGEFLOW_API_KEY: when set, every route but /health needs Bearer auth"
    )
    ollama_host: str | None = Field(
        None,
        validation_alias=AliasChoices("ollama_host", "OLLAMA_HOST"),
        description="OLLAMA_HOST: overrides serve.ollama_host",
    )
    max_training_runs: int | None = Field(
        None,
        ge=1,
        le=64,
        validation_alias=AliasChoices("max_training_runs", "FORGEFLOW_MAX_TRAINING_RUNS"),
        description="FORGEFLOW_MAX_TRAINING_RUNS: overrides jobs.max_training_runs",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("allowed_roots", mode="after")
    @classmethod
    def _resolve_roots(cls, v: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in v]

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.environment == "production" and self.api_key is None and self.serve.host not in _LOOPBACK:
            raise ValueError("production on a non-loopback host needs FORGEFLOW_API_KEY")
        if self.max_training_runs is not None:
            self.jobs = self.jobs.model_copy(update={"max_training_runs": self.max_training_runs})
        if "*" in self.serve.cors_origins:
            raise ValueError("serve.cors_origins: list exact origins; '*' is refused")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=config_file(MAIN_CONFIG))
        return (init_settings, env_settings, yaml_source)

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def projects_dir(self) -> Path:
        return self.home / "projects"

    @property
    def registry_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def api_url(self) -> str:
        """This machine's forgeflow API as a client reaches it (no trailing slash).

        The one place that builds it: a wildcard bind address (`0.0.0.0`, `::`) is not an address to
        connect to, so it becomes the loopback of its family.
        """
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.serve.host, self.serve.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.serve.port}"

    @property
    def prefect_ui_url(self) -> str:
        """The embedded stack's Prefect server (its UI; the REST API is under `/api`)."""
        return f"http://127.0.0.1:{self.jobs.prefect_port}"

    @property
    def ollama_url(self) -> str:
        return self.ollama_host or self.serve.ollama_host


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process (read once)."""
    return load_settings()


def load_settings(**overrides: Any) -> Settings:
    """Fresh settings; keyword overrides win over env and YAML."""
    return Settings(**overrides)
