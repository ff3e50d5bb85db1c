"""Exact and near-duplicate detection: MinHash over word 3-grams, LSH banding, computed in bulk."""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

NUM_PERM, BANDS = 64, 16  # 64 bins, banded 16 x 4 for LSH
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
    """One-permutation MinHash over word 3-grams: a uint32 row of NUM_PERM bins per text.

    Each gram is hashed once; its top bits pick a bin, the rest compete for that bin's minimum.
    Empty bins borrow from the next non-empty one (densification), so rows compare bin by bin like
    classic MinHash at a fraction of the cost. Texts under 3 words get an all-_EMPTY row.
    """
    out = np.full((len(texts), NUM_PERM), _EMPTY, dtype=np.uint32)
    words: list[str] = []
    rows: list[int] = []
    counts: list[int] = []
    for i, text in enumerate(texts):
        ws = text.lower().split()
        if len(ws) >= 3:
            words.extend(ws)
            rows.append(i)
            counts.append(len(ws))
    if not rows:
        return out
    table = {w: zlib.crc32(w.encode()) for w in set(words)}  # stable across processes, unlike hash()
    h = np.fromiter(map(table.__getitem__, words), dtype=np.uint64, count=len(words))
    n_words = np.array(counts)
    ends = np.cumsum(n_words)
    gram_counts = n_words - 2
    # gram k of text t starts at word ends[t] - n_words[t] + k
    starts = np.repeat(ends - n_words, gram_counts) + _ranges(gram_counts)
    g = (h[starts] * np.uint64(0x9E3779B1)) ^ (h[starts + 1] * np.uint64(0x85EBCA77)) ^ h[starts + 2]
    g = _mix32(g & np.uint64(0xFFFFFFFF))
    bins = (g >> np.uint64(26)).astype(np.int64)  # 6 bits: NUM_PERM = 64 bins
    values = g & np.uint64((1 << 26) - 1)
    owner = np.repeat(np.arange(len(rows)), gram_counts)
    flat = np.full(len(rows) * NUM_PERM, _EMPTY, dtype=np.uint64)
    np.minimum.at(flat, owner * NUM_PERM + bins, values)
    out[rows] = _densify(flat.reshape(len(rows), NUM_PERM)).astype(np.uint32)
    return out


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..c0), [0..c1), ..."""
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - offsets


def _mix32(x: np.ndarray) -> np.ndarray:
    """A 32-bit avalanche finaliser (murmur3's), so every output bit depends on every input bit."""
    mask = np.uint64(0xFFFFFFFF)
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x85EBCA6B)) & mask
    x = x ^ (x >> np.uint64(13))
    x = (x * np.uint64(0xC2B2AE35)) & mask
    return x ^ (x >> np.uint64(16))


def _densify(sig: np.ndarray) -> np.ndarray:
    """Fill each empty bin from the next non-empty bin (circularly), offset by the distance."""
    n, width = sig.shape
    doubled = np.concatenate([sig, sig], axis=1)
    positions = np.where(doubled != _EMPTY, np.arange(2 * width), 2 * width)
    nxt = np.minimum.accumulate(positions[:, ::-1], axis=1)[:, ::-1][:, :width]
    nxt = np.minimum(nxt, 2 * width - 1)  # never reached: every row here has at least one gram
    filled = doubled[np.arange(n)[:, None], nxt] + (nxt - np.arange(width)).astype(np.uint64) * np.uint64(
        1 << 26
    )
    return np.where(sig != _EMPTY, sig, filled)


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
