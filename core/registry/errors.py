"""The registry's errors; `status` and `code` let the API answer each with no mapping table."""

from __future__ import annotations

from core.errors import InputError


class ModelNotFound(InputError):
    """No model, version or alias by that reference."""

    status = 404
    code = "MODEL_NOT_FOUND"


class AlreadyExists(InputError):
    """That name and version is already registered."""

    status = 409
    code = "MODEL_EXISTS"


class PathNotAllowed(InputError):
    """A path outside the allowed roots (after following symlinks)."""

    status = 403
    code = "PATH_NOT_ALLOWED"
