"""The model registry: versions with lineage, aliases, serving state and usage stats.

`tables` (ORM rows) and `db` (engine) are private to the package; `snapshots` are the pydantic
views that leave it; `queries` are the reads shared by the registry's operations; `store` is the
content-addressed artifact store; `sources` inspects what a user asks to register; `migrations`
are Alembic's (`core.bench.store` keeps benchmark runs in the same database, through `db` and
`tables`, which makes it the one caller outside the package that may use them). Callers
use what this module exports; the name, version, alias and device patterns are among them, since
the API's OpenAPI document states them too.
"""

from core.registry.errors import AlreadyExists, ModelNotFound, PathNotAllowed
from core.registry.registry import Registry
from core.registry.snapshots import (
    ALIAS,
    CHAMPION,
    DEVICE,
    LATEST,
    NAME,
    SEMVER,
    ArtifactRef,
    ModelInfo,
    Page,
    Stats,
)
from core.registry.sources import exported_sha256s, served_gguf

__all__ = [
    "ALIAS",
    "CHAMPION",
    "DEVICE",
    "LATEST",
    "NAME",
    "SEMVER",
    "AlreadyExists",
    "ArtifactRef",
    "ModelInfo",
    "ModelNotFound",
    "Page",
    "PathNotAllowed",
    "Registry",
    "Stats",
    "exported_sha256s",
    "served_gguf",
]
