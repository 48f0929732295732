"""Quick looks at a data folder for the Data, Model and Layers pages: examples per category, the
remembered check of a folder, the split preview and picture counts without opening pictures."""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

import tl_core
from tl_core.app.workspace import folder_fingerprint
from tl_core.data.scan import scan_folder
from tl_core.data.split import val_target


def examples_per_class(records: Iterable[Any], k: int = 4) -> dict[str, list[Any]]:
    """The first ``k`` records of each class, in class order of first appearance."""
    out: dict[str, list[Any]] = {}
    for r in records:
        bucket = out.setdefault(r.label, [])
        if len(bucket) < k:
            bucket.append(r)
    return out


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_CHECKS = _LRU(8)


def checked_dataset(root: str | Path, progress: Callable[[int, int], None] | None = None):
    """:func:`tl_core.check`, remembered per folder content for this process
    (the Data page redraws on every click; opening every picture each time would be slow)."""
    key = (str(Path(root).resolve()), folder_fingerprint(root))
    hit = _CHECKS.get(key)
    if hit is not None:
        return hit
    report = tl_core.check(root, progress=progress)
    _CHECKS.put(key, report)
    return report


def cached_check(root: str | Path):
    """The remembered check of ``root`` when there is one, else None (never opens pictures)."""
    return _CHECKS.get((str(Path(root).resolve()), folder_fingerprint(root)))


def split_counts(counts: dict[str, int], val_fraction: float) -> dict[str, tuple[int, int]]:
    """(train, validation) pictures per class for a validation share: the numbers
    :func:`tl_core.data.split.stratified_split` will use (a preview of the split)."""
    return {label: (n - val_target(n, val_fraction), val_target(n, val_fraction)) for label, n in counts.items()}


def quick_counts(root: str | Path) -> dict[str, int]:
    """Pictures per class: from the remembered check when there is one, else from a name-only scan
    (instant; unreadable files are still counted until the Data page checks them)."""
    report = cached_check(root)
    if report is not None:
        return dict(report.counts)
    return scan_folder(root).counts()
