"""Exact and near-duplicate removal (MinHash over word 3-grams with LSH banding)."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")
_P = (1 << 31) - 1  # Mersenne prime: a*h + b with a, b < 2^31 and h < 2^32 stays below 2^64
_PRIME = np.uint64(_P)
_NUM_PERM, _BANDS = 64, 16
_rng = np.random.default_rng(20240117)  # fixed: signatures must be identical across runs
_A = _rng.integers(1, _P, _NUM_PERM, dtype=np.uint64)
_B = _rng.integers(0, _P, _NUM_PERM, dtype=np.uint64)


def exact_key(text: str) -> str:
    """Whitespace- and case-insensitive content key."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).hexdigest()


def _signature(text: str) -> np.ndarray:
    words = _WORD.findall(text.lower())
    grams = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
    h = np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams))
    return ((h[:, None] * _A + _B) % _PRIME).min(axis=0)


def near_duplicates(texts: Sequence[str], threshold: float) -> set[int]:
    """Indices to drop: each text whose estimated Jaccard with an earlier kept text is ≥ threshold."""
    sigs = [_signature(t) for t in texts]
    rows = _NUM_PERM // _BANDS
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    drop: set[int] = set()
    for i, sig in enumerate(sigs):
        keys = [(b, sig[b * rows : (b + 1) * rows].tobytes()) for b in range(_BANDS)]
        candidates = {j for k in keys for j in buckets.get(k, ())}
        if any(float(np.mean(sigs[j] == sig)) >= threshold for j in candidates):
            drop.add(i)
            continue
        for k in keys:
            buckets[k].append(i)
    return drop
