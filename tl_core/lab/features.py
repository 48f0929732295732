"""The frozen layers' output of every picture, computed once for a whole experiment.

The data-size experiment trains 12 runs or more on subsets of the same pictures. Each run is an
ordinary ``tl_core.train`` run on its own folder, and an ordinary 'head' run caches the pooled
features of its train and validation lists, keyed by every path in them
(:mod:`tl_core.training.features`): twelve different lists would compute them twelve times, mostly
for the same pictures. So the experiment asks the per-picture feature bank of
:mod:`tl_core.results.picture_features` for every picture once (computed now, or found there from an
earlier experiment or check on the same pictures) and writes each subset's share into the training
cache under the exact key its run will look up (``training_set_key``, the one place outside
training that knows that recipe): every run then finds its features cached and goes straight to
training, and the whole experiment costs at most one forward pass per picture.

If a subset's share cannot be written (an unreadable picture, a full cache disk), that run simply
computes its own features: slower, same results. The forward-pass test in tests/test_lab.py says so
if it ever happens on good pictures.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from tl_core.config import RunConfig
from tl_core.errors import DataError

Report = Callable[[int, int], None]


class Stopped(Exception):
    """Raised inside the feature pass when the experiment's stop event is set."""


@dataclass
class FeatureBank:
    """Features of every picture of an experiment, by its path, and the network they came from."""

    extractor: Any                  # tl_core.results.picture_features.Extractor
    rows: dict[str, int]            # picture path -> row of ``features``
    features: torch.Tensor          # float32 (N, D) on the CPU
    computed: int                   # pictures that went through the network now (the others were in the bank)


def compute_bank(config: RunConfig, paths: Sequence[str], progress: Report | None = None,
                 stop: threading.Event | None = None) -> FeatureBank:
    """The pooled features of ``paths`` for ``config``'s model, weights and preprocessing (the
    'head' preset's boundary), each picture through the network at most once."""
    from tl_core.results.picture_features import extractor, picture_features

    ex = extractor(config)

    def report(done: int, total: int) -> None:
        if stop is not None and stop.is_set():
            raise Stopped()
        if progress is not None:
            progress(done, total)

    report(0, len(paths))
    got = picture_features(ex, list(paths), report)
    if not got.paths:
        raise DataError("None of the pictures could be read. Run the data check to see why.")
    report(len(paths), len(paths))
    return FeatureBank(ex, {path: i for i, path in enumerate(got.paths)}, got.x, got.computed)


def training_order(root: str) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]:
    """``(classes, train, val)`` of a folder with train/ and val/ sub-folders, each picture as
    ``(path, class index)`` in the order training reads them (scan order; nothing is opened)."""
    from tl_core.data.scan import scan_folder

    scan = scan_folder(root)
    index = {c: i for i, c in enumerate(scan.classes)}
    train = [(r.path, index[r.label]) for r in scan.records if r.split == "train"]
    val = [(r.path, index[r.label]) for r in scan.records if r.split == "val"]
    return list(scan.classes), train, val


def seed_cache(bank: FeatureBank, root: str, source_of: dict[str, str]) -> bool:
    """Write the features of the folder ``root`` (train/ and val/, its pictures linked from the
    originals ``source_of[path]``) into the training cache under the keys its run will look up.
    False when a picture has no features or the cache cannot be written: that run computes its own."""
    from tl_core.results.picture_features import training_cache_root, training_set_key
    from tl_core.training.features import save_cached_features

    _classes, train, val = training_order(root)
    for items in (train, val):
        try:
            idx = torch.tensor([bank.rows[source_of[path]] for path, _ in items], dtype=torch.long)
        except KeyError:
            return False
        labels = [label for _, label in items]
        key = training_set_key(bank.extractor, [path for path, _ in items], labels)
        saved = save_cached_features(training_cache_root(bank.extractor.config), key,
                                     {"x": bank.features[idx], "y": torch.tensor(labels, dtype=torch.long)})
        if saved is None:
            return False
    return True


__all__ = ["FeatureBank", "compute_bank", "seed_cache", "training_order", "Stopped"]
