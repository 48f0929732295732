"""Decode every image once into a uint8 tensor: in memory, or (a full fine-tune) in a memory-mapped file.

The classic recipe re-opens, decodes, rotates, converts and resizes every JPEG on every epoch;
on a 2-core laptop that costs more than the model itself. Here each file is decoded exactly once,
resized to the training size and kept as ``uint8 (N, 3, S, S)`` (150 KB per image at 224 px,
so 3,000 images fit in 450 MB); epochs then only index into that tensor.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from tl_core.data.images import load_image
from tl_core.runtime.cache_space import after_write, mark_used
from tl_core.runtime.device import cpu_cores
from tl_core.errors import DataError, ImageLoadError
from tl_core.models.preprocess import Preprocessing

Progress = Callable[[int, int], None]


@dataclass
class DecodedImages:
    images: torch.Tensor        # uint8 (N, 3, S, S)
    labels: torch.Tensor        # int64 (N,)
    paths: list[str]
    failed: list[tuple[str, str]]  # (path, reason) of files that could not be read after all

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def nbytes(self) -> int:
        return self.images.numel()


def decode_records(paths: Sequence[str], labels: Sequence[int], prep: Preprocessing,
                   progress: Progress | None = None, workers: int | None = None,
                   allow_empty: bool = False, out: torch.Tensor | None = None) -> DecodedImages:
    """Load, orient, convert and resize each file once, in a few threads (PIL releases the GIL
    while decoding and resizing, so threads scale without extra processes). When none of the
    files can be read that is an error, unless ``allow_empty`` (one chunk of a longer list).
    ``out``: a uint8 buffer of at least ``len(paths)`` pictures to decode into (the images returned
    are a view of it), so that a streamed pass reuses the same memory chunk after chunk."""
    tf = prep.pil_transform()
    max_side = max(prep.size * 2, 512)  # large photos are reduced while decoding (JPEG draft mode)

    def one(path: str):
        try:
            return prep.to_uint8(load_image(path, max_side=max_side), tf), None
        except ImageLoadError as err:
            return None, err.reason
        except OSError as err:  # vanished or unreadable since the check
            return None, f"could not be read ({err.__class__.__name__})"

    n = len(paths)
    if out is None:
        out = torch.empty((n, 3, prep.size, prep.size), dtype=torch.uint8)
    elif len(out) < n or tuple(out.shape[1:]) != (3, prep.size, prep.size) or out.dtype != torch.uint8:
        raise ValueError(f"decode buffer {tuple(out.shape)} {out.dtype} cannot hold {n} pictures of {prep.size} px")
    keep: list[int] = []
    failed: list[tuple[str, str]] = []
    step = max(1, n // 50)
    with ThreadPoolExecutor(max_workers=workers or cpu_cores()) as pool:
        for i, (tensor, reason) in enumerate(pool.map(one, paths)):
            if tensor is None:
                failed.append((paths[i], reason))
            else:
                out[len(keep)] = tensor
                keep.append(i)
            if progress and (i + 1 == n or (i + 1) % step == 0):
                progress(i + 1, n)
    if not keep and n and not allow_empty:
        raise DataError("None of the images could be read. Run the data check to see why.")
    return DecodedImages(out[: len(keep)], torch.tensor([labels[i] for i in keep], dtype=torch.long),
                         [paths[i] for i in keep], failed)


# -- on disk: the decoded pictures of a full fine-tune, memory-mapped -----------------------------------
#
# Keeping every decoded picture in memory costs 150 KB a picture at 224 px (25,000 pictures: 3.7 GB).
# Instead they are written once, chunk by chunk, into one file of uint8 rows under the cache folder
# (``decoded/<key>.u8`` and its ``<key>.json``), keyed like the feature cache (every file's fingerprint
# and the preprocessing), and training reads them through a memory map: the operating system's page
# cache holds what fits, and :class:`PageRelease` hands the pages a process has touched back after every
# batch, so its resident memory does not grow with the data. A second run on
# the same pictures (a new learning rate, more epochs) reads nothing again.

DECODE_CHUNK = 256                 # pictures decoded in memory at a time while the file is written
# bytes of mapped pictures read before their pages are handed back: 0, after every batch. The kernel maps
# a file in folios larger than a page around each read (measured: a batch of 32 random pictures, 4.8 MB,
# mapped ~50 MB more), so counting bytes read undercounts ~10x; a release costs ~0.1 ms a batch.
RELEASE_EVERY = 0
_FORMAT = 1


def decoded_cache_key(paths: Sequence[str], prep: Preprocessing) -> str:
    """Changes whenever any file (path, size, modification time) or the preprocessing changes."""
    from tl_core.training.features import feature_cache_key

    return feature_cache_key(paths, [0] * len(paths), "decoded-uint8", "", "pictures", prep.to_dict(),
                             {"format": _FORMAT})


class MappedRows:
    """A read-only memory map of a decoded-pictures file, as a uint8 tensor ``(N, 3, S, S)``."""

    def __init__(self, path: Path, n: int, size: int):
        import mmap

        import numpy as np

        self.path = path
        with open(path, "rb") as fh:
            # private (copy-on-write) mapping: a writable buffer for torch.from_numpy; nothing writes to it
            self._map = mmap.mmap(fh.fileno(), n * 3 * size * size, access=mmap.ACCESS_COPY)
        self.tensor = torch.from_numpy(np.frombuffer(self._map, dtype=np.uint8).reshape(n, 3, size, size))

    def release(self) -> None:
        """Drop this process's pages of the file (the page cache keeps them; the next read maps them
        again): resident memory falls back to what the process itself holds."""
        import mmap

        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)


class PageRelease:
    """Counts the bytes of memory-mapped pictures read and hands their pages back every ``every``."""

    def __init__(self, maps: Sequence[MappedRows] = (), every: int | None = None):
        self.maps = [m for m in maps if m is not None]
        self.every = RELEASE_EVERY if every is None else every
        self.read = 0
        self.releases = 0

    def add(self, m: "MappedRows | None") -> None:
        if m is not None:
            self.maps.append(m)

    def touched(self, nbytes: int) -> None:
        if not self.maps:
            return
        self.read += nbytes
        if self.read >= self.every:
            self.release()

    def release(self) -> None:
        for m in self.maps:
            m.release()
        self.read = 0
        self.releases += 1


def _cache_files(cache_root: Path, key: str) -> tuple[Path, Path]:
    folder = Path(cache_root) / "decoded"
    return folder / f"{key}.u8", folder / f"{key}.json"


def load_decoded_cache(cache_root: Path, key: str, labels: Sequence[int], prep: Preprocessing,
                       paths: Sequence[str]) -> "tuple[DecodedImages, MappedRows] | None":
    """The pictures decoded by an earlier run, memory-mapped; None when there are none (or the
    files are damaged or of another shape: then they are removed and it is a miss)."""
    import json

    data, meta = _cache_files(cache_root, key)
    if not (data.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        kept, size = [int(i) for i in info["kept"]], int(info["size"])
        if (info.get("format") != _FORMAT or size != prep.size or info.get("n") != len(paths)
                or data.stat().st_size != len(kept) * 3 * size * size or not kept):
            raise ValueError("not this cache's shape")
        rows = MappedRows(data, len(kept), size)
    except (OSError, ValueError, KeyError, TypeError):
        for f in (data, meta):
            f.unlink(missing_ok=True)
        return None
    dec = DecodedImages(rows.tensor, torch.tensor([labels[i] for i in kept], dtype=torch.long),
                        [paths[i] for i in kept], [(p, r) for p, r in info.get("failed", [])])
    mark_used(data, meta)
    return dec, rows


def decode_to_cache(paths: Sequence[str], labels: Sequence[int], prep: Preprocessing, cache_root: Path, key: str,
                    progress: Progress | None = None, workers: int | None = None
                    ) -> "tuple[DecodedImages, MappedRows] | None":
    """Decode the pictures chunk by chunk straight into the cache file, then map it. None when the
    file could not be written (a full disk, a read-only cache folder): nothing partial is left, and
    the caller decodes into memory instead. Only :data:`DECODE_CHUNK` pictures are in memory at once."""
    from tl_core.files import atomic_path, write_json_atomic

    data, meta = _cache_files(cache_root, key)
    n = len(paths)
    kept: list[int] = []
    failed: list[tuple[str, str]] = []
    try:
        meta.unlink(missing_ok=True)      # the data file is replaced: a stale description must not survive
        with atomic_path(data) as tmp:
            with open(tmp, "wb") as fh:
                for start in range(0, n, DECODE_CHUNK):
                    part = list(paths[start:start + DECODE_CHUNK])
                    dec = decode_records(part, list(range(start, start + len(part))), prep, None, workers, True)
                    fh.write(dec.images.numpy().tobytes())
                    kept.extend(int(i) for i in dec.labels)
                    failed.extend(dec.failed)
                    if progress:
                        progress(start + len(part), n)
                fh.flush()
                os.fsync(fh.fileno())
        if not kept:
            data.unlink(missing_ok=True)
            if n:
                raise DataError("None of the images could be read. Run the data check to see why.")
            return None
        write_json_atomic(meta, {"format": _FORMAT, "n": n, "size": prep.size, "kept": kept,
                                 "failed": [list(f) for f in failed]})
        after_write(cache_root, data, meta)
    except OSError:
        for f in (data, meta):
            try:
                f.unlink(missing_ok=True)
            except OSError:
                pass
        return None
    return load_decoded_cache(cache_root, key, labels, prep, paths)
