"""Check a data folder before training: can every picture be opened, are there copies, is
one category much bigger than the others, does a picture look unlike the rest of its category?

These are the mistakes that silently ruin a beginner's first model: a picture filed under
two categories teaches the model two answers; a copy of a training picture in the
validation set makes the score look better than it is; a 20-to-1 imbalance gives a model
that always says the big category; a broken download's placeholder filed as a cat teaches it a
wrong cat (odd pictures: :mod:`tl_core.data.outliers`, asked for with ``outliers=True``). Each
becomes a :class:`~tl_core.data.scan.Problem` with a concrete fix, so the app can show them before
any time is spent training.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import imagehash
import scipy.fftpack  # noqa: F401  (imagehash.phash imports it lazily; do it once, not in worker threads)
import numpy as np
from PIL import Image

from tl_core.errors import ImageLoadError
from tl_core.data.images import fix_for_reason, load_image
from tl_core.data.outliers import MIN_PICTURES, OddPictures, find_odd_pictures, odd_problems
from tl_core.data.scan import DatasetScan, ImageRecord, Problem, scan_folder

__all__ = [
    "CheckReport",
    "check_dataset",
    "IMBALANCE_WARN_RATIO",
    "SEVERE_IMBALANCE_RATIO",
    "NEAR_DUPLICATE_DISTANCE",
]

IMBALANCE_WARN_RATIO = 3.0
SEVERE_IMBALANCE_RATIO = 10.0
#: Largest perceptual-hash (phash, 64 bit) Hamming distance that makes two pictures candidate
#: near copies. 4 catches re-saved JPEGs and resized copies while different photos sit around 32.
#: A hash only proposes a pair: on tiny pictures (28x28 Fashion-MNIST) hashes of different
#: pictures collide by the thousand, so every candidate is confirmed on the pixels.
NEAR_DUPLICATE_DISTANCE = 4
# The pixel confirmation compares 12x12 colour thumbnails (0-255 scale). Re-encoding and
# resizing change every pixel a little; a different picture (even a look-alike, or a flat one of
# another colour, which phash cannot tell apart) changes some pixels a lot. So a copy may differ
# by more than _PIXEL_TOLERANCE in at most _MAX_CHANGED_PIXELS thumbnail pixels, and by at most
# _MEAN_TOLERANCE on average. Measured: 200 pets photos (180x180) re-saved at JPEG quality 10-50,
# resized to 1/5-2x, or both, all pass (worst: 2 changed pixels, mean 6.4); of the 3,537
# hash-colliding pairs among 10,000 Fashion-MNIST pictures 5 pass, each two near-identical items.
_THUMB_SIDE = 12
_PIXEL_TOLERANCE = 32
_MAX_CHANGED_PIXELS = 2
_MEAN_TOLERANCE = 8.0
# Up to this many hash pairs every pair is compared (numpy blocks); above it, multi-index hashing.
_DENSE_PAIRS = 4_000_000
# Candidate pairs are confirmed this many at a time (bounded memory on huge folders).
_CONFIRM_BLOCK = 20_000
# Pictures are decoded at this size for checking: every byte is still decoded (so broken
# files are found), but JPEGs decode at reduced scale and hashing is cheap.
_CHECK_MAX_SIDE = 256
_MAX_LISTED = 5


@dataclass
class _Fingerprint:
    sha1: str
    phash: int
    thumb: np.ndarray  # _THUMB_SIDE x _THUMB_SIDE x 3 uint8: what a candidate pair is confirmed on


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    ``readable`` are the scan's records that decoded; ``duplicate_groups`` hold indices into
    ``readable`` (each group: exact or near copies of one picture); ``counts`` are readable
    pictures per class; ``imbalance_ratio`` is largest over smallest class (1.0 when fewer
    than two classes have pictures).
    """

    scan: DatasetScan
    readable: list[ImageRecord]
    problems: list[Problem]
    duplicate_groups: list[list[int]]
    counts: dict[str, int]
    imbalance_ratio: float
    # Per readable image, for comparing against another folder (a separate test set).
    fingerprints: list[_Fingerprint] = field(default_factory=list, repr=False, compare=False)
    # Odd pictures (also among ``problems``, kind "outlier"); None when they were not looked for.
    odd: OddPictures | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for the app and the CLI."""
        return {
            "images": len(self.readable),
            "classes": list(self.scan.classes),
            "counts": dict(self.counts),
            "problems": [p.to_dict() for p in self.problems],
            "imbalance_ratio": float(self.imbalance_ratio),
            "duplicate_groups": len(self.duplicate_groups),
            "odd_pictures": _odd_summary(self.odd),
        }


def _odd_summary(odd: OddPictures | None) -> dict[str, Any]:
    """Whether odd pictures were looked for, in which categories, and why not elsewhere."""
    if odd is None:
        return {"looked_for": False, "categories": [], "found": 0, "note": "Not asked for."}
    return {"looked_for": bool(odd.categories), "categories": list(odd.categories), "found": len(odd.odd),
            "note": odd.note}


def check_dataset(
    root: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    near_duplicates: bool = True,
    outliers: bool = False,
) -> CheckReport:
    """Scan ``root``, open every picture and report unreadable files, copies and imbalance; with
    ``outliers``, also pictures that look unlike the rest of their category (which runs the
    pretrained network over the pictures once: see :mod:`tl_core.data.outliers`).

    ``progress(done, total)`` is called from the calling thread as pictures are checked: one step
    per picture opened, and with ``outliers`` one more per picture looked at by the network.
    Raises :class:`~tl_core.errors.DataError` only for what :func:`scan_folder` refuses.
    """
    return check_scan(scan_folder(root), progress=progress, near_duplicates=near_duplicates, outliers=outliers)


def check_scan(
    scan: DatasetScan,
    *,
    progress: Callable[[int, int], None] | None = None,
    near_duplicates: bool = True,
    outliers: bool = False,
) -> CheckReport:
    """:func:`check_dataset` for a scan already made (e.g. of a separate test folder)."""
    records = scan.records
    total = len(records)
    # One bar for both passes: the network's pass only when some category is big enough to judge.
    look = outliers and any(n >= MIN_PICTURES for n in scan.counts().values())
    steps = 2 * total if look else total
    if progress is not None:
        progress(0, steps)
    results: list[_Fingerprint | ImageLoadError] = []
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tl-check")
    try:
        # Decoding releases the GIL, so threads give a real speed-up on big folders.
        for done, result in enumerate(pool.map(_fingerprint, records), start=1):
            results.append(result)
            if progress is not None:
                progress(done, steps)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    problems = list(scan.problems)
    readable: list[ImageRecord] = []
    prints: list[_Fingerprint] = []
    unreadable_per_class: dict[str, int] = defaultdict(int)
    for record, result in zip(records, results):
        if isinstance(result, ImageLoadError):
            unreadable_per_class[record.label] += 1
            problems.append(Problem(
                "unreadable", record.path, f"Cannot open '{record.rel_path}': {result.reason}.",
                fix_for_reason(result.reason), "warning"))
        else:
            readable.append(record)
            prints.append(result)

    groups = _duplicate_groups(prints, near_duplicates)
    problems.extend(_duplicate_problems(scan, readable, prints, groups))

    counts = {c: 0 for c in scan.classes}
    for r in readable:
        counts[r.label] += 1
    for c in scan.classes:
        if counts[c] == 0:
            problems.append(Problem(
                "no_readable_images", str(Path(scan.root) / _first_folder(scan, c)),
                f"None of the {unreadable_per_class[c]} pictures in '{c}' could be opened, so the model cannot learn this category.",
                f"See the messages about the files in '{c}' above: replace them with JPEG or PNG pictures that open in an image viewer.",
                "error"))
    ratio, imbalance = _imbalance(counts, scan.root)
    problems.extend(imbalance)
    odd = None
    if outliers:
        odd = find_odd_pictures(readable, progress=_second_half(progress, total, steps) if look else None)
        problems.extend(odd_problems(odd))
        if progress is not None and look:
            progress(steps, steps)
    return CheckReport(scan=scan, readable=readable, problems=problems, duplicate_groups=groups,
                       counts=counts, imbalance_ratio=ratio, fingerprints=prints, odd=odd)


def _second_half(progress: Callable[[int, int], None] | None, offset: int,
                 steps: int) -> Callable[[int, int], None] | None:
    """The network's pass on the check's one bar: its pictures fill the steps after the opening."""
    if progress is None:
        return None
    room = steps - offset

    def report(done: int, total: int) -> None:
        progress(offset + (room * done // total if total else room), steps)

    return report


def _first_folder(scan: DatasetScan, label: str) -> str:
    for r in scan.records:
        if r.label == label:
            parts = r.rel_path.split("/")
            return "/".join(parts[:2]) if r.split else parts[0]
    return label


def _fingerprint(record: ImageRecord) -> _Fingerprint | ImageLoadError:
    """Content hash, perceptual hash and thumbnail of one picture (or why it failed)."""
    try:
        sha1 = hashlib.sha1()
        try:
            with open(record.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    sha1.update(chunk)
        except OSError as err:
            return ImageLoadError(record.path, f"cannot read the file ({err.strerror or err})")
        img = load_image(record.path, max_side=_CHECK_MAX_SIDE)
        return _Fingerprint(sha1.hexdigest(), _phash(img), _thumbnail(img))
    except ImageLoadError as err:
        return err
    except Exception:  # never let one odd file stop the check of thousands
        return ImageLoadError(record.path, "file is truncated or corrupt")


def _phash(img: Image.Image) -> int:
    """64-bit perceptual hash (same algorithm as ``imagehash.phash``)."""
    bits = np.asarray(imagehash.phash(img).hash, dtype=bool).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _thumbnail(img: Image.Image) -> np.ndarray:
    """The picture squeezed to a fixed small size, so that copies of any size compare pixel by pixel."""
    side = (_THUMB_SIDE, _THUMB_SIDE)
    return np.asarray(img.convert("RGB").resize(side, Image.Resampling.BOX), dtype=np.uint8)


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    bytes_ = x.view(np.uint8).reshape(*x.shape, 8)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[bytes_].sum(axis=-1)


def near_pairs(hashes: np.ndarray, max_distance: int, others: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Index pairs whose 64-bit hashes differ in at most ``max_distance`` bits.

    Within ``hashes`` (i < j) or, with ``others``, between ``hashes[i]`` and ``others[j]``; sorted.
    Small sets compare every pair in numpy blocks. Larger ones use multi-index hashing, so the work
    grows with the number of close pairs, not with the square of the folder: the 64 bits are cut
    into ``max_distance + 1`` pieces, and two hashes that differ in at most ``max_distance`` bits
    are equal in at least one piece (pigeonhole), so only pictures that share a piece are compared.
    """
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    o = h if others is None else np.asarray(others, dtype=np.uint64).ravel()
    if h.size == 0 or o.size == 0:
        return []
    if h.size * o.size <= _DENSE_PAIRS or max_distance >= 63:
        found = _dense_near_pairs(h, o, max_distance, within=others is None)
    else:
        found = _indexed_near_pairs(h, o, max_distance, within=others is None)
    return [(int(i), int(j)) for i, j in found]


def _dense_near_pairs(h: np.ndarray, o: np.ndarray, max_distance: int, within: bool) -> np.ndarray:
    out: list[np.ndarray] = []
    block = max(1, 4_000_000 // o.size)
    for start in range(0, h.size, block):
        dist = _popcount64(h[start:start + block, None] ^ o[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        ii = ii + start
        keep = ii < jj if within else slice(None)
        out.append(np.stack([ii[keep], jj[keep]], axis=1))
    return np.concatenate(out) if out else np.empty((0, 2), dtype=np.int64)


def _indexed_near_pairs(h: np.ndarray, o: np.ndarray, max_distance: int, within: bool) -> np.ndarray:
    """Multi-index hashing (Norouzi et al., 2012): candidates share one of ``max_distance + 1``
    pieces of the hash; every candidate is then checked on its full distance."""
    pieces = max_distance + 1
    edges = np.linspace(0, 64, pieces + 1).astype(int)
    values = h if within else np.concatenate([h, o])
    n_h = h.size
    candidates: list[np.ndarray] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        key = (values >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        # each position pairs with the next k positions while they share the key: the work is the
        # number of pairs sharing this piece
        alive = np.arange(order.size - 1)
        k = 1
        while alive.size:
            alive = alive[alive + k < order.size]
            alive = alive[sorted_key[alive] == sorted_key[alive + k]]
            if not alive.size:
                break
            a, b = order[alive], order[alive + k]
            if within:
                candidates.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
            else:
                cross = (a < n_h) != (b < n_h)
                a, b = a[cross], b[cross]
                first = np.where(a < n_h, a, b)
                second = np.where(a < n_h, b, a) - n_h
                candidates.append(np.stack([first, second], axis=1))
            k += 1
    if not candidates:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(candidates).astype(np.int64)
    pairs = pairs[_popcount64(h[pairs[:, 0]] ^ o[pairs[:, 1]]) <= max_distance]
    codes = np.sort(pairs[:, 0] * o.size + pairs[:, 1])    # a pair close in several pieces is found once
    codes = codes[np.concatenate([[True], codes[1:] != codes[:-1]])] if codes.size else codes
    return np.stack([codes // o.size, codes % o.size], axis=1)


def _thumbnails_match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether thumbnails ``a`` and ``b`` (broadcastable stacks of ``(side, side, 3)`` uint8) show the
    same picture: every pixel close, but for a couple (see ``_PIXEL_TOLERANCE``), and close on average.

    Returns a bool array over the stack's leading axes (a numpy bool for two single thumbnails).
    """
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    worst = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])  # per pixel, its most-changed channel
    changed = np.count_nonzero(worst > _PIXEL_TOLERANCE, axis=(-2, -1))
    mean = diff.sum(axis=(-3, -2, -1), dtype=np.int32) / (3 * _THUMB_SIDE * _THUMB_SIDE)
    return (changed <= _MAX_CHANGED_PIXELS) & (mean <= _MEAN_TOLERANCE)


def same_picture(a: _Fingerprint, b: _Fingerprint) -> bool:
    """Exact copies, or near copies confirmed on the pixels (a close hash alone is not enough)."""
    return a.sha1 == b.sha1 or bool(_thumbnails_match(a.thumb, b.thumb))


def _duplicate_groups(prints: list[_Fingerprint], near: bool) -> list[list[int]]:
    """Groups (indices into ``prints``) of pictures that are all copies of each other.

    Files with the same content are one picture; near copies are then grouped by
    :func:`_near_copy_clusters`, which only ever puts together pictures that are pairwise copies.
    """
    node_of_sha: dict[str, int] = {}
    node_of: list[int] = []  # per print: which distinct file content it is
    firsts: list[_Fingerprint] = []  # per distinct content: its first print
    for fp in prints:
        if fp.sha1 not in node_of_sha:
            node_of_sha[fp.sha1] = len(firsts)
            firsts.append(fp)
        node_of.append(node_of_sha[fp.sha1])
    cluster_of = _near_copy_clusters(firsts) if near else list(range(len(firsts)))
    members: dict[int, list[int]] = defaultdict(list)
    for i, node in enumerate(node_of):
        members[cluster_of[node]].append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def _near_copy_clusters(prints: list[_Fingerprint]) -> list[int]:
    """A cluster id per picture (all different files): pictures in one cluster are pairwise copies.

    Only pairs whose hashes are close are looked at (never every pair of the folder), and each is
    confirmed on the pixels. Confirmed pairs are then joined closest first, and two clusters only
    merge when every picture of one is a copy of every picture of the other: a chain of
    look-alikes (A like B, B like C, but A not like C) never becomes one "same picture" group,
    which the split would then keep together.
    """
    n = len(prints)
    cluster_of = list(range(n))
    if n < 2:
        return cluster_of
    pairs = near_pairs(np.array([fp.phash for fp in prints], dtype=np.uint64), NEAR_DUPLICATE_DISTANCE)
    if not pairs:
        return cluster_of
    thumbs = np.stack([fp.thumb for fp in prints])
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    # Clusters only grow, so two found apart stay apart: remembered, never compared again.
    apart: set[tuple[int, int]] = set()
    for i, j in _confirmed_pairs(thumbs, np.array(pairs, dtype=np.int64)):
        a, b = sorted((cluster_of[i], cluster_of[j]))
        if a == b or (a, b) in apart:
            continue
        if len(members[a]) * len(members[b]) > 1 and not _all_copies(thumbs, members[a], members[b]):
            apart.add((a, b))
            continue
        keep, gone = (a, b) if len(members[a]) >= len(members[b]) else (b, a)
        for k in members[gone]:
            cluster_of[k] = keep
        members[keep].extend(members.pop(gone))
    return cluster_of


def _confirmed_pairs(thumbs: np.ndarray, pairs: np.ndarray) -> list[list[int]]:
    """The candidate ``pairs`` (rows ``i, j``) whose thumbnails match, closest first (ties by index)."""
    keep: list[np.ndarray] = []
    score: list[np.ndarray] = []
    for start in range(0, len(pairs), _CONFIRM_BLOCK):
        block = pairs[start:start + _CONFIRM_BLOCK]
        a, b = thumbs[block[:, 0]], thumbs[block[:, 1]]
        ok = _thumbnails_match(a, b)
        keep.append(block[ok])
        score.append(np.abs(a[ok].astype(np.int16) - b[ok].astype(np.int16)).sum(axis=(1, 2, 3), dtype=np.int32))
    kept, scores = np.concatenate(keep), np.concatenate(score)
    order = np.lexsort((kept[:, 1], kept[:, 0], scores))
    return kept[order].tolist()


def _all_copies(thumbs: np.ndarray, group_a: list[int], group_b: list[int]) -> bool:
    """Whether every picture of ``group_a`` matches every picture of ``group_b`` on the pixels
    (compared in blocks, so that two big groups do not need one huge array)."""
    others = thumbs[group_b][None, :]
    step = max(1, _CONFIRM_BLOCK // len(group_b))
    for start in range(0, len(group_a), step):
        if not _thumbnails_match(thumbs[group_a[start:start + step]][:, None], others).all():
            return False
    return True


def _listing(records: list[ImageRecord]) -> str:
    names = [f"'{r.rel_path}'" for r in records[:_MAX_LISTED]]
    if len(records) > _MAX_LISTED:
        names.append(f"and {len(records) - _MAX_LISTED} more")
    return ", ".join(names)


def _and_join(items: list[str]) -> str:
    quoted = [f"'{x}'" for x in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _duplicate_problems(scan: DatasetScan, readable: list[ImageRecord], prints: list[_Fingerprint],
                        groups: list[list[int]]) -> list[Problem]:
    out: list[Problem] = []
    order = {c: i for i, c in enumerate(scan.classes)}
    for group in groups:
        recs = [readable[i] for i in group]
        labels = sorted({r.label for r in recs}, key=lambda c: order.get(c, 0))
        exact = len({prints[i].sha1 for i in group}) == 1
        how = "exact copies" if exact else "near-identical copies (re-saved or resized)"
        if len(labels) > 1:
            out.append(Problem(
                "label_conflict", recs[0].path,
                f"The same picture is in both {_and_join(labels)}: {_listing(recs)} ({how}). "
                "The model is taught two different answers for it.",
                "Decide which category it really belongs to and delete the other copies.", "error"))
        else:
            out.append(Problem(
                "duplicate", recs[0].path,
                f"{len(recs)} {how} of the same picture in '{labels[0]}': {_listing(recs)}.",
                "Harmless: copies are always kept together on the same side of the training/validation split. "
                "Delete the extra copies if you like.", "info"))
        splits = sorted({r.split for r in recs if r.split})
        if len(splits) > 1:
            out.append(Problem(
                "leakage", recs[0].path,
                f"The same picture is in {_and_join([s + '/' for s in splits])}: {_listing(recs)}. "
                "The model is then checked on a picture it has already seen, so its score looks better than it really is.",
                "Delete the copies from val/ (or test/), or put all pictures in one folder per category and let "
                "Transfer Lab make the split (it keeps copies together).", "warning"))
    return out


def _imbalance(counts: dict[str, int], root: str) -> tuple[float, list[Problem]]:
    present = {c: n for c, n in counts.items() if n > 0}
    if len(present) < 2:
        return 1.0, []
    big = max(present, key=lambda c: present[c])
    small = min(present, key=lambda c: present[c])
    ratio = present[big] / present[small]
    if ratio <= IMBALANCE_WARN_RATIO:
        return ratio, []
    target = present[big] / IMBALANCE_WARN_RATIO
    lacking = [c for c, n in present.items() if n < target]
    message = (f"The categories are unbalanced: '{big}' has {present[big]} pictures but '{small}' only "
               f"{present[small]} ({ratio:.1f} times fewer).")
    if ratio > SEVERE_IMBALANCE_RATIO:
        message += f" This is a strong imbalance: the model may learn to answer '{big}' most of the time."
    fix = (f"Collect more pictures of {_and_join(lacking)} (ideally about {present[big]} each), or keep the "
           "'balance' setting on so training gives every category the same weight.")
    return ratio, [Problem("imbalance", root, message, fix, "warning")]
