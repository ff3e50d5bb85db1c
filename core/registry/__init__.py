"""The model registry: versions with lineage, aliases, serving state and usage stats.

`tables` (ORM rows) and `db` (engine) are private to the package; `snapshots` are the pydantic
views that leave it; `queries` are the reads shared by the registry's operations; `store` is the
content-addressed artifact store; `sources` inspects what a user asks to register; `migrations`
are Alembic's. Callers use what this module exports.
"""

from core.registry.errors import AlreadyExists, ModelNotFound, PathNotAllowed
from core.registry.registry import Registry
from core.registry.snapshots import ArtifactRef, ModelInfo, Page, Stats

__all__ = [
    "AlreadyExists",
    "ArtifactRef",
    "ModelInfo",
    "ModelNotFound",
    "Page",
    "PathNotAllowed",
    "Registry",
    "Stats",
]
