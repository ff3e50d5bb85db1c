"""Secret scanning for extracted samples: no credential may reach a training sample.

A prefilter of C-speed passes over the text's UTF-8 bytes (`bytes.translate` + `find` for long base64
runs, `find` for keywords and markers) picks candidate lines; only those go through `SECRET_PATTERNS`, the
detect-secrets plugins and our entropy check. One alternation regex doing the prefilter ran at ~8 MB/s.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from core.secrets import NAMED_PATTERNS

if TYPE_CHECKING:
    from detect_secrets.plugins.base import BasePlugin


_MAX_SEGMENT, _OVERLAP = 4000, 200  # long lines go in overlapping windows; no credential is 200 chars
_RUN, _KEYWORD, _OTHER = 1, 2, 4  # why a line is a candidate (bits)

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"
_RUN_TABLE = bytes(0x61 if i in _B64 else 0x20 for i in range(256))
_RUN20 = b"a" * 20
_DIGIT_B = re.compile(rb"[0-9]")
# Known token prefixes: a run holding one is a candidate even without digits. The checks in `_PREFIXED`
# run only on lines with a prefix, a marker or a keyword: they cannot match without one.
_PREFIX_B = re.compile(
    rb"AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9]|gh[pousr]_|github_pat_|gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-"
    rb"|GR1348941|[xX][oO][xX][a-zA-Z]-|[rs]k_live_|AIza|sk-|hf_|npm_|pypi-|eyJ|sq0csp-|AC[a-z0-9]{32}|SK[a-z0-9]{32}"
)
# (needle, confirming regex searched in [pos - 9, pos + reach), in lower-cased bytes?, reason): markers
# that matter without a long run, and detect-secrets' keywords ("key" and "pass" are everywhere in code,
# so they count only as api_key, db_pass, password, ...).
_KEY_CONTEXT = rb"(?:api|auth|service|account|db|database|priv|private|client)_?key"
_NEEDLES: tuple[tuple[bytes, re.Pattern[bytes] | None, int, bool, int], ...] = (
    (b"://", re.compile(rb"://[^\s/?#@:]+:[^\s/?#@]+@"), 256, False, _OTHER),
    (b"AKC", re.compile(rb"AKC[a-zA-Z0-9]{10}"), 13, False, _OTHER),
    (b"AP", re.compile(rb"AP[0-9A-F][a-zA-Z0-9]{8}"), 11, False, _OTHER),
    *((m, None, 0, False, _OTHER) for m in (b"PRIVATE KEY", b"PuTTY-User-Key", b"AccountKey=", b"eyJ")),
    *((m, None, 0, False, _OTHER) for m in (b"SG.", b"hooks.slack.com")),
    (b"key", re.compile(_KEY_CONTEXT), 3, True, _KEYWORD),
    (b"pass", re.compile(rb"(?:db|database|key)_?pass|passw"), 5, True, _KEYWORD),
    *((k, None, 0, True, _KEYWORD) for k in (b"pwd", b"secret", b"contrase")),
)
_PREFIXED = frozenset(kind for kind, _ in NAMED_PATTERNS if kind != "AWS Secret Key") | {
    "ArtifactoryDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "GitHubTokenDetector",
    "GitLabTokenDetector", "JwtTokenDetector", "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector",
    "SendGridDetector", "SlackDetector", "SquareOAuthDetector", "StripeDetector", "TwilioKeyDetector",
}  # fmt: skip

_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{20,}")
_HEXISH = re.compile(r"(?:0x)?([0-9a-fA-F\-]+)")
_SEGMENT = re.compile(r"[A-Z]{2,}(?![a-z])|[A-Z]?[a-z]+|[A-Z]|[0-9]+")
_HEX_PART = re.compile(r"[0-9a-f]{7,}|[0-9A-F]{7,}|[0-9]+")
_SEPARATORS = re.compile(r"[/+_\-]+")
_SECRETISH = re.compile(r"key|secret|token|passw|pwd|auth|credential|api", re.IGNORECASE)
_HASH_CONTEXT = re.compile(
    r"sha[0-9]|md5|hash|digest|checksum|commit|revision|integrity|etag|uuid|guid|fingerprint", re.IGNORECASE
)
_DIGEST_PREFIX = re.compile(r"(?:sha(?:1|224|256|384|512)|md5|h1)[:=\-]\Z", re.IGNORECASE)
_SRI = ("sha1-", "sha256-", "sha384-", "sha512-")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODE_BEFORE = re.compile(r"(?:\.|\b(?:class|def|import)\s+)\Z")
_CODE_AFTER = re.compile(r"\s*[(),\[]|\.[A-Za-z_]")
_MIN_MEAN_PIECE = 3.0  # random base64 splits into ~1.8-char case/digit pieces, identifiers into words

_NOT_SECRET_WORDS = frozenset(
    {"none", "null", "nil", "true", "false", "str", "string", "bytes", "int", "bool", "any", "object"}
    | {"optional", "required", "undefined", "self", "cls", "secretstr", "password", "secret"}
)
_HEURISTICS = (  # detect-secrets' heuristic filters that need no file name
    "is_templated_secret", "is_prefixed_with_dollar_sign",
    "is_sequential_string", "is_not_alphanumeric_string",
)  # fmt: skip
_KEYWORD_STEM = re.compile(r"pass|pwd|secret|key|token|auth|cred", re.IGNORECASE)
_TEMPLATE = re.compile(r"\{.*\}|%s|%\(")  # format strings: f"{user}", "%s", "%(pw)s"
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_ANY = re.compile("")  # a plugin without a denylist always runs
# (kind, regex, plugin, prefixed): a `search` with one of a plugin's own regexes decides whether its
# `analyze_string` (which may check more, e.g. that a JWT decodes) runs at all.
_Check = tuple[str, "re.Pattern[str]", "BasePlugin | None", bool]


@dataclass(frozen=True, slots=True)
class Finding:
    """One suspected secret: the 1-based line it sits on and what it looks like."""

    line: int
    kind: str


@lru_cache(maxsize=1)
def _detectors() -> tuple[tuple[_Check, ...], BasePlugin, re.Pattern[str]]:
    """Checks built once (`SECRET_PATTERNS`, then detect-secrets plugins), the keyword plugin, config regex.

    Plugins are called through `analyze_string`, which never reads the global settings; `analyze_line`
    may verify hits over the network, so it is not used. Our entropy check replaces the entropy plugins and
    public IPs are not credentials. Regexes are searched one by one: their union ran ~10x slower in `re`.
    """
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.keyword import DENYLIST, KeywordDetector

    checks: list[_Check] = [(k, re.compile(p), None, k in _PREFIXED) for k, p in NAMED_PATTERNS]
    skipped = {"Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector", "KeywordDetector"}
    classes: list[type[BasePlugin]] = list(get_mapping_from_secret_type_to_class().values())
    for cls in classes:
        if cls.__module__.startswith("detect_secrets.plugins.") and cls.__name__ not in skipped:
            plugin = cls()
            prefixed = cls.__name__ in _PREFIXED
            regexes = getattr(plugin, "denylist", None) or [_ANY]
            checks += [(str(plugin.secret_type), regex, plugin, prefixed) for regex in regexes]
    # Unquoted `KEY=value` / `key: value` config lines (.env, YAML, INI) and annotated assignments
    # (`password: str = "..."`); the keyword plugin covers the other quoted forms.
    keyword = "|".join(DENYLIST)
    config = re.compile(
        rf"^\s*(?:export\s+)?[\"']?[\w.\-]*(?:{keyword})[\w.\-]*[\"']?\s*(?::=|=|:)\s*"
        rf"([^\s\"'`]+?)[,;]?\s*(?:#.*)?$|(?:{keyword})\w*\s*:\s*[\w\[\]., |]+?\s*=\s*[\"']([^\"'\s]+)[\"']",
        re.IGNORECASE,
    )
    return tuple(checks), KeywordDetector(), config


def _entropy(token: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in Counter(token).values())


def _mean_piece_length(token: str) -> float:
    """Mean length of a token's pieces: separator-delimited parts split at case and digit changes.

    Random base64 averages ~1.8 characters a piece, identifiers and model names 3-6. Short parts ("30B",
    "v2", "hf"), hex runs and numbers count as one piece each, as in model names and URLs.
    """
    pieces = chars = 0
    for part in _SEPARATORS.split(token):
        chars += len(part)
        pieces += 1 if len(part) <= 5 or _HEX_PART.fullmatch(part) else len(_SEGMENT.findall(part))
    return chars / max(pieces, 1)


def _plausible_value(value: str, unquoted: bool) -> bool:
    """Whether a value given to a secret-sounding name looks like a literal secret, not a reference."""
    from detect_secrets.filters import heuristic

    value = value.strip()
    if (
        len(value) < 4
        or len(set(value.lower())) <= 2  # masks and placeholders: "****", "xxxxxxxx"
        or any(getattr(heuristic, name)(value) for name in _HEURISTICS)
        or _TEMPLATE.search(value)
        or len(value.split()) >= 3  # prose: help texts, messages, descriptions
        or _ENV_NAME.fullmatch(value)
        or value.lower() in _NOT_SECRET_WORDS
    ):
        return False
    has_digit = any(c.isdigit() for c in value)
    if not has_digit and len(value.split()) <= 2 and _KEYWORD_STEM.search(value):
        return False  # a field or variable name such as "password" or "api-key"
    if unquoted:  # code rather than config: `password = pwd`, `password: Optional[str]`, `x = cfg.password`
        if set("()[]{}<>") & set(value) or _DOTTED_NAME.fullmatch(value):
            return False
        return has_digit or not _IDENTIFIER.fullmatch(value)
    return True


class SecretScanner:
    """Finds credentials in text: `SECRET_PATTERNS`, detect-secrets plugins and an entropy check."""

    def __init__(self, entropy_threshold: float = 4.0) -> None:
        """Build the detectors once; `entropy_threshold` is in bits per character."""
        self.entropy_threshold = entropy_threshold
        self._checks, self._keyword, self._config = _detectors()

    def scan(self, text: str) -> list[Finding]:
        """All findings in `text`, ordered by line; at most one per (line, kind)."""
        return list(self._findings(text, exhaustive=True))

    def first_reason(self, text: str) -> str | None:
        """Kind of the first finding, or None when the text is clean (fast path)."""
        return next((finding.kind for finding in self._findings(text, exhaustive=False)), None)

    def _findings(self, text: str, exhaustive: bool) -> Iterator[Finding]:
        candidates = _candidate_lines(text)
        lines = text.split("\n") if candidates else []
        for index in sorted(candidates):
            line = lines[index] if index < len(lines) else ""
            kinds: dict[str, None] = {}
            for start in range(0, max(len(line) - _OVERLAP, 1), _MAX_SEGMENT - _OVERLAP):
                try:
                    self._check(line[start : start + _MAX_SEGMENT], candidates[index], kinds)
                except Exception:  # fail closed: a line we cannot examine is not let through
                    kinds["Scanner Error"] = None
                if kinds and not exhaustive:
                    break
            yield from (Finding(index + 1, kind) for kind in kinds)

    def _check(self, segment: str, why: int, kinds: dict[str, None]) -> None:
        for kind, regex, plugin, prefixed in self._checks:
            if (
                kind not in kinds
                and (not prefixed or why & (_OTHER | _KEYWORD))
                and regex.search(segment)
                and (plugin is None or any(self._accept(kind, v) for v in plugin.analyze_string(segment)))
            ):
                kinds[kind] = None
        if why & _KEYWORD:
            values = [(v, False) for v in self._keyword.analyze_string(segment)]
            for match in self._config.finditer(segment):
                values += [(v, match.group(2) is None) for v in match.groups() if v]
            if any(_plausible_value(v, unquoted) for v, unquoted in values):
                kinds["Secret Keyword"] = None
        entropy_kind = self._entropy_kind(segment) if why & _RUN else None
        if entropy_kind:
            kinds[entropy_kind] = None

    @staticmethod
    def _accept(kind: str, value: str) -> bool:
        # URL credentials in docs and templates are mostly placeholders: user:pass@, {user}:{password}@
        return kind != "Basic Auth Credentials" or _plausible_value(value, unquoted=False)

    def _entropy_kind(self, segment: str) -> str | None:
        for match in _TOKEN.finditer(segment):
            token, start = match.group(), match.start()
            if _IDENTIFIER.fullmatch(token) and (
                _CODE_BEFORE.search(segment, 0, start) or _CODE_AFTER.match(segment, match.end())
            ):
                continue  # an unquoted name in code (a call, class, attribute): a value would need quotes
            if token.startswith(_SRI) or _DIGEST_PREFIX.search(segment, max(start - 8, 0), start):
                continue  # a lockfile digest: sha512-..., sha256:..., go.sum's h1:...
            # "/" is base64's, "-" and "_" urlsafe base64's: a token with both is a path or a model name,
            # whose parts may still hold a token of their own.
            parts = token.split("/") if "/" in token and ("-" in token or "_" in token) else [token]
            for part in parts:
                kind = self._token_kind(part.strip("+/_-"), segment, in_path="/" in token)
                if kind:
                    return kind
        return None

    def _token_kind(self, token: str, segment: str, in_path: bool) -> str | None:
        if len(token) < 20:
            return None
        hexish = _HEXISH.fullmatch(token)
        if hexish:  # digests, SHAs and UUIDs are secrets only next to a secret-ish name, never in a path
            digits = hexish.group(1).replace("-", "")
            if (  # cheap tests first: a line of numbers holds many hex-looking tokens
                not in_path
                and len(digits) >= 32
                and _entropy(digits) >= 3.0
                and _SECRETISH.search(segment)
                and not _HASH_CONTEXT.search(segment)
            ):
                return "Hex High Entropy String"
            return None
        if (
            any(c.isdigit() for c in token)
            and _entropy(token) >= self.entropy_threshold
            and _mean_piece_length(token) < _MIN_MEAN_PIECE
        ):
            return "High Entropy String"
        return None


def _candidate_lines(text: str) -> dict[int, int]:
    """0-based indexes of the lines worth a closer look, each with its reasons (`_RUN` | ...) as bits."""
    raw = text.encode("utf-8", "surrogatepass")  # "\n" stays one byte, so line numbers carry over
    hits: list[tuple[int, int]] = []
    runs = raw.translate(_RUN_TABLE)
    pos = runs.find(_RUN20)
    while pos >= 0:
        end = runs.find(b" ", pos)
        end = len(runs) if end < 0 else end
        if _DIGIT_B.search(raw, pos, end):
            hits.append((pos, _RUN))
        if _PREFIX_B.search(raw, pos, end):
            hits.append((pos, _OTHER))
        pos = runs.find(_RUN20, end)
    low = raw.lower()
    for needle, confirm, reach, lowered, why in _NEEDLES:
        buf = low if lowered else raw
        pos = buf.find(needle)
        while pos >= 0:
            if confirm is None or confirm.search(buf, max(pos - 9, 0), pos + reach):
                hits.append((pos, why))
            pos = buf.find(needle, pos + 1)
    candidates: dict[int, int] = {}
    line = last = 0
    for pos, why in sorted(hits):
        line += raw.count(b"\n", last, pos)
        last = pos
        candidates[line] = candidates.get(line, 0) | why
    return candidates
