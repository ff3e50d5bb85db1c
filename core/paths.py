"""Paths a user may see: shown relative to where they stand, and scrubbed from messages.

Every message that leaves forgeflow (CLI errors, API bodies, reports) names files by a relative path
or a bare name, never by an absolute path that leaks the machine's layout.
"""

from __future__ import annotations

import re
from pathlib import Path

# An absolute path (POSIX, or Windows with a drive) of at least two parts; group 1 is its last part.
# Not after a word character, ':', '/', '.' or '~', so URLs (http://host/a/b) and relative paths stay.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~\\])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"():]+[/\\])+([^\s/\\'\"():,]*)")


def display(path: Path, fallback: str | None = None) -> str:
    """A path safe to show: relative to the working directory when under it, else `fallback` or its name."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return fallback if fallback is not None else path.name


def scrub_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last part (a file or directory name)."""
    return _ABSOLUTE_PATH.sub(r"\1", text)
