"""Near-copy search must not be quadratic (issue 16: tl check stays responsive at 25,000 pictures):
multi-index hashing finds exactly the pairs an all-pairs comparison finds, while comparing only
pictures that share a piece of their hash."""
from __future__ import annotations

import numpy as np
import pytest

from tl_core.data import checks
from tl_core.data.checks import NEAR_DUPLICATE_DISTANCE, near_pairs


def _hashes(n: int, seed: int = 0) -> np.ndarray:
    """Random 64-bit hashes with planted close pairs and one tight cluster (like flat pictures)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=n, dtype=np.uint64)
    for i in range(0, n, 37):
        v = h[i]
        for bit in rng.choice(64, size=int(rng.integers(0, 7)), replace=False):
            v ^= np.uint64(1) << np.uint64(int(bit))
        h[(i + 11) % n] = v
    k = min(300, n)
    h[:k] = h[0] ^ rng.integers(0, 2**7, size=k, dtype=np.uint64)
    return h


def _brute(h: np.ndarray, o: np.ndarray | None, d: int) -> list[tuple[int, int]]:
    other = h if o is None else o
    bits = np.unpackbits((h[:, None] ^ other[None, :]).view(np.uint8).reshape(h.size, other.size, 8), axis=-1)
    dist = bits.sum(axis=-1)                                   # all pairs, counted bit by bit
    ii, jj = np.nonzero(dist <= d)
    return [(int(i), int(j)) for i, j in zip(ii, jj) if o is not None or i < j]


@pytest.mark.parametrize("distance", [0, 2, NEAR_DUPLICATE_DISTANCE, 7])
def test_indexed_search_finds_exactly_the_close_pairs(distance, monkeypatch):
    h = _hashes(700)
    monkeypatch.setattr(checks, "_DENSE_PAIRS", 0)             # force the indexed path on a small set
    assert near_pairs(h, distance) == _brute(h, None, distance)


def test_indexed_search_between_two_sets(monkeypatch):
    h = _hashes(500, seed=1)
    o = np.concatenate([h[::4] ^ np.uint64(0b1011), _hashes(200, seed=2)])
    monkeypatch.setattr(checks, "_DENSE_PAIRS", 0)
    found = near_pairs(h, NEAR_DUPLICATE_DISTANCE, others=o)
    assert found == _brute(h, o, NEAR_DUPLICATE_DISTANCE)
    assert all(j < o.size for _, j in found) and len(found) >= 125


def test_both_paths_agree_and_big_folders_compare_few_pairs(monkeypatch):
    """30,000 hashes: the all-pairs way compares 450 million; the indexed way a few hundred thousand."""
    h = _hashes(30_000, seed=3)
    compared = []
    real = checks._popcount64

    def counting(x):
        compared.append(x.size)
        return real(x)

    monkeypatch.setattr(checks, "_popcount64", counting)
    found = near_pairs(h, NEAR_DUPLICATE_DISTANCE)
    assert sum(compared) < 3_000_000, sum(compared)             # 30,000**2 / 2 = 450,000,000
    small = h[:2000]                                            # under the dense limit: every pair
    monkeypatch.setattr(checks, "_DENSE_PAIRS", 0)
    indexed = near_pairs(small, NEAR_DUPLICATE_DISTANCE)
    monkeypatch.setattr(checks, "_DENSE_PAIRS", 10**12)
    assert indexed == near_pairs(small, NEAR_DUPLICATE_DISTANCE)
    assert len(found) >= 300 * 299 // 2 * 0.5                   # the tight cluster is found


def test_empty_and_single_inputs():
    assert near_pairs(np.array([], dtype=np.uint64), 4) == []
    assert near_pairs(np.array([5], dtype=np.uint64), 4) == []
    assert near_pairs(np.array([5], dtype=np.uint64), 4, others=np.array([], dtype=np.uint64)) == []
