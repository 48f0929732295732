"""Decode every image once into a uint8 tensor in memory.

The classic recipe re-opens, decodes, rotates, converts and resizes every JPEG on every epoch;
on a 2-core laptop that costs more than the model itself. Here each file is decoded exactly once,
resized to the training size and kept as ``uint8 (N, 3, S, S)`` (150 KB per image at 224 px,
so 3,000 images fit in 450 MB); epochs then only index into that tensor.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from tl_core.data.images import load_image
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
                   allow_empty: bool = False) -> DecodedImages:
    """Load, orient, convert and resize each file once, in a few threads (PIL releases the GIL
    while decoding and resizing, so threads scale without extra processes). When none of the
    files can be read that is an error, unless ``allow_empty`` (one chunk of a longer list)."""
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
    out = torch.empty((n, 3, prep.size, prep.size), dtype=torch.uint8)
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
