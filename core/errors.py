"""User-facing errors: one readable line, never a traceback."""

from __future__ import annotations


class ForgeflowError(Exception):
    """An error the user can fix; its message is shown as is (one line, no absolute paths)."""

    exit_code = 2


class InputError(ForgeflowError):
    """Bad input: a path, URL, name or file the user gave us."""


class ValidationFailed(ForgeflowError):
    """A dataset did not pass its expectations."""

    exit_code = 1
