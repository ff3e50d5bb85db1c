"""One file in, its samples out: the unit of work a parser process does and the cache stores."""

from __future__ import annotations

from typing import Any

from core.config import ExtractConfig
from tasks.extract import docs, python_ast
from tasks.extract.dedup import dedup_text, sample_keys, signatures
from tasks.extract.files import content_skip_reason
from tasks.extract.samples import section_samples, symbol_samples
from tasks.extract.secrets import SecretScanner
from tasks.extract.treesitter import languages as treesitter

# Bump when the output of process_file changes, so cached results are not reused.
PARSER_VERSION = "7"

# {"samples": [...], "skip": reason, "dropped": {reason: n},
#  "sigs": MinHash rows and "keys": exact-duplicate keys, one per sample}
FileResult = dict[str, Any]


def process_file(
    path: str, lang: str, data: bytes, commit: str, cfg: ExtractConfig, scanner: SecretScanner
) -> FileResult:
    """Parse one file and build its samples; secret-bearing samples are dropped and counted."""
    reason = content_skip_reason(path, lang, data)
    if reason:
        return {"samples": [], "skip": reason, "dropped": {}}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"samples": [], "skip": "not_utf8", "dropped": {}}
    try:
        if lang == "python":
            samples = symbol_samples(python_ast.extract_symbols(text), path, lang, commit, cfg)
        elif lang == "markdown":
            samples = section_samples(docs.split_markdown(text), path, lang, commit, cfg)
        elif lang == "rst":
            samples = section_samples(docs.split_rst(text), path, lang, commit, cfg)
        else:
            samples = symbol_samples(treesitter.extract_symbols(data, lang), path, lang, commit, cfg)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {"samples": [], "skip": "parse_error", "dropped": {}}
    dropped: dict[str, int] = {}
    # A cheap prefilter only: the token budget is applied to the assembled samples (tasks.extract.fit).
    fitting = [s for s in samples if sum(len(m["content"]) for m in s["messages"]) <= cfg.max_sample_chars]
    if len(fitting) != len(samples):
        dropped["too_long"] = len(samples) - len(fitting)
        samples = fitting
    if scanner.first_reason(text):  # only then check each sample: a clean file gives clean samples
        kept = [s for s in samples if not any(scanner.first_reason(m["content"]) for m in s["messages"])]
        if len(kept) != len(samples):
            dropped["secret"] = len(samples) - len(kept)
        samples = kept
    return {
        "samples": samples,
        "skip": "",
        "dropped": dropped,
        "sigs": signatures([dedup_text(s) for s in samples]),
        "keys": [sample_keys(s) for s in samples],
    }
