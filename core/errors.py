"""User-facing errors: one readable line, never a traceback."""

from __future__ import annotations


class ForgeflowError(Exception):
    """An error the user can fix; its message is shown as is (one line, no absolute paths).

    A subclass names its HTTP answer in its header, `class Gone(InputError, status=410, code="GONE")`:
    `status` is what the API answers with, `code` the machine-readable error code (None: by status).
    """

    exit_code = 2
    status = 400
    code: str | None = None

    def __init_subclass__(
        cls, *, status: int | None = None, code: str | None = None, **kwargs: object
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code


class InputError(ForgeflowError):
    """Bad input: a path, URL, name or file the user gave us."""


class PathNotAllowed(InputError, status=403, code="PATH_NOT_ALLOWED"):
    """A path outside the allowed roots (after following symlinks)."""


class ValidationFailed(ForgeflowError):
    """A dataset did not pass its expectations."""

    exit_code = 1
