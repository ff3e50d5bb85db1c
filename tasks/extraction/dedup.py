"""Exact and near-duplicate detection: MinHash over word 3-grams, LSH banding, computed in bulk."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")
_P = (1 << 31) - 1  # Mersenne prime: a*h + b with a, b < 2^31 and h < 2^32 stays below 2^64
NUM_PERM, BANDS = 64, 16
_rng = np.random.default_rng(20240117)  # fixed: signatures must be identical across runs and processes
_A = _rng.integers(1, _P, NUM_PERM, dtype=np.uint64)
_B = _rng.integers(0, _P, NUM_PERM, dtype=np.uint64)
_EMPTY = np.iinfo(np.uint32).max  # row value of a text too short to have a signature


def sample_keys(sample: dict[str, Any]) -> list[str]:
    """Exact-duplicate keys: the prompt, and (but for locate) the task's content without phrasing."""
    prompt_key = exact_key(sample["messages"][-2]["content"])
    if sample["meta"]["task"] == "locate":  # its content is a path and line: only the prompt counts
        return [prompt_key]
    return [prompt_key, exact_key(sample["meta"]["task"] + "\0" + dedup_text(sample))]


def exact_key(text: str) -> str:
    """Whitespace- and case-insensitive content key."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).hexdigest()


def dedup_text(sample: dict[str, Any]) -> str:
    """What makes two samples the same: the prompt without its first (template) line, and the answer."""
    user = sample["messages"][-2]["content"]
    body = user.split("\n", 1)[1] if "\n" in user else user
    return body + "\n" + sample["messages"][-1]["content"]


def signatures(texts: Sequence[str]) -> np.ndarray:
    """MinHash signatures, one uint32 row of NUM_PERM values per text (all-max for < 3 words)."""
    out = np.full((len(texts), NUM_PERM), _EMPTY, dtype=np.uint32)
    word_hash: dict[str, int] = {}
    ids: list[int] = []
    rows: list[int] = []
    starts: list[int] = []
    for i, text in enumerate(texts):
        words = _WORD.findall(text.lower())
        if len(words) < 3:
            continue
        for w in words:
            if w not in word_hash:
                word_hash[w] = zlib.crc32(w.encode())
        rows.append(i)
        starts.append(len(ids))
        ids.extend(word_hash[w] for w in words)
        ids.extend((0, 0))  # two pad ids: no 3-gram spans two texts' ends
    if not rows:
        return out
    h = np.array(ids, dtype=np.uint64)
    grams = (h[:-2] * np.uint64(0x9E3779B1) ^ h[1:-1] * np.uint64(0x85EBCA77) ^ h[2:]) & np.uint64(0xFFFFFFFF)
    lengths = np.diff(np.array([*starts, len(ids)])) - 2  # grams of each text (pads excluded)
    keep = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
    grams = grams[keep]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    values = (grams[:, None] * _A + _B) % np.uint64(_P)
    out[rows] = np.minimum.reduceat(values, offsets, axis=0).astype(np.uint32)
    return out


def near_duplicates(sigs: np.ndarray, threshold: float) -> set[int]:
    """Rows to drop: each whose estimated Jaccard with an earlier kept row is ≥ threshold."""
    if len(sigs) < 2:
        return set()
    rows_per_band = NUM_PERM // BANDS
    banded = sigs.reshape(len(sigs), BANDS, rows_per_band).astype(np.uint64)
    weights = np.array([1, 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D], dtype=np.uint64)[:rows_per_band]
    keys = (banded * weights).sum(axis=2)  # (n, BANDS) band hashes; uint64 wraparound is fine
    valid = sigs[:, 0] != _EMPTY
    # only rows sharing some band with another row can be near-duplicates: the rest skip the loop
    shared = np.zeros(len(sigs), dtype=bool)
    for b in range(BANDS):
        _, inverse, counts = np.unique(keys[:, b], return_inverse=True, return_counts=True)
        shared |= counts[inverse] > 1
    candidates = np.flatnonzero(shared & valid)
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    drop: set[int] = set()
    for i in candidates.tolist():
        row_keys = list(enumerate(keys[i].tolist()))
        earlier = {j for k in row_keys for j in buckets.get(k, ())}
        # one vectorised comparison against every earlier candidate sharing a band
        if earlier and (sigs[list(earlier)] == sigs[i]).mean(axis=1).max() >= threshold:
            drop.add(i)
            continue
        for k in row_keys:
            buckets[k].append(i)
    return drop
