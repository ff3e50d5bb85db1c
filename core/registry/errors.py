"""The registry's errors; `status` and `code` let the API answer each with no mapping table."""

from __future__ import annotations

from core.errors import InputError, PathNotAllowed

__all__ = ["AlreadyExists", "ModelNotFound", "PathNotAllowed"]


class ModelNotFound(InputError, status=404, code="MODEL_NOT_FOUND"):
    """No model, version or alias by that reference."""


class AlreadyExists(InputError, status=409, code="MODEL_EXISTS"):
    """That name and version is already registered."""
