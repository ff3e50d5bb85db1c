"""Credential formats that must never reach a training sample.

Extraction's scanner (tasks.extract.secrets) drops what they match, and validation re-checks every
whole sample against the same list, so the two stages cannot disagree on what a secret is.
"""

from __future__ import annotations

# (kind, pattern) for well-known credential formats. Only non-capturing groups (pandas `str.contains`
# warns on capture groups), no inline flags and no match across a newline (the scanner works per line).
NAMED_PATTERNS: tuple[tuple[str, str], ...] = (
    ("AWS Access Key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    (
        "AWS Secret Key",
        r"[Aa][Ww][Ss]_?[Ss][Ee][Cc][Rr][Ee][Tt]_?(?:[Aa][Cc][Cc][Ee][Ss][Ss]_?)?[Kk][Ee][Yy][^\w\r\n]{0,5}"
        r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
    ),
    ("GitHub Token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    ("GitLab Token", r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    ("Slack Token", r"\bxox[abposr]-[0-9A-Za-z\-]{15,}"),
    ("Slack Webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"),
    ("Stripe Access Key", r"\b[rs]k_live_[0-9A-Za-z]{20,}"),
    ("Google API Key", r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),
    ("OpenAI Token", r"\bsk-(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{32,}"),
    ("Hugging Face Token", r"\bhf_[A-Za-z0-9]{34,}\b"),
    ("NPM Token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("PyPI Token", r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}"),
    ("SendGrid API Key", r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"),
    ("Private Key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ("JSON Web Token", r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]*"),
    (  # scheme://user:password@host, but not ${VAR}, {password}, <pw>, *** or user:pass@ placeholders
        "Basic Auth Credentials",
        r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/?#@'\"]+:(?![$%{<*])"
        r"(?![^\s/?#@]*(?:[Pp][Aa][Ss][Ss]|[Pp][Ww][Dd]|[Ss][Ee][Cc][Rr][Ee][Tt]|[Tt][Oo][Kk][Ee][Nn])[A-Za-z_\-]*@)"
        r"[^\s/?#@'\"{}<>\[\]]{4,}@[A-Za-z0-9]",
    ),
    ("Azure Storage Account Key", r"AccountKey=[A-Za-z0-9+/]{80,}={0,2}"),
)
SECRET_PATTERNS: list[str] = [pattern for _, pattern in NAMED_PATTERNS]
