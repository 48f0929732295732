"""From a data folder to the three lists training needs: train, validation and test.

This is the single entry point the trainer calls. It runs the full check first (so broken
files never reach a DataLoader and crash epoch 3), then either honours the user's own
``train/``/``val/`` folders or makes a stratified, seeded split that keeps copies of a
picture on one side. An optional separate test folder is checked against the training
categories and for pictures that also appear in training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from tl_core.errors import DataError
from tl_core.data.checks import NEAR_DUPLICATE_DISTANCE, CheckReport, same_picture, check_scan, near_pairs
from tl_core.data.scan import ImageRecord, Problem, scan_folder
from tl_core.data.split import stratified_split

if TYPE_CHECKING:
    from tl_core.config import DataConfig

__all__ = ["PreparedDataset", "prepare_dataset"]


@dataclass
class PreparedDataset:
    """Readable pictures, split, plus the check report the app shows alongside."""

    classes: list[str]
    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord]
    report: CheckReport

    def labels(self, records: Sequence[ImageRecord]) -> list[int]:
        """Class indices (positions in :attr:`classes`) for ``records``."""
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            return [index[r.label] for r in records]
        except KeyError as err:
            raise DataError(f"The category {err.args[0]!r} is not one of this data set's categories "
                            f"({', '.join(self.classes)}).") from None


def _groups_for(n: int, duplicate_groups: list[list[int]], subset: list[int] | None = None) -> list[int]:
    """Group id per item (-1: no copies), optionally re-indexed to ``subset`` of the items."""
    group_of = [-1] * n
    for gid, members in enumerate(duplicate_groups):
        for i in members:
            group_of[i] = gid
    if subset is None:
        return group_of
    return [group_of[i] for i in subset]


def prepare_dataset(cfg: "DataConfig", progress: Callable[[int, int], None] | None = None) -> PreparedDataset:
    """Check ``cfg.root`` and return the train/val/test records.

    Raises :class:`DataError` when, after leaving out unreadable files, fewer than two
    categories have pictures, a category has no training picture, nothing is left to
    validate on, or the test folder has categories the training folder does not.
    """
    cfg = getattr(cfg, "data", cfg)  # a whole RunConfig works too
    report = check_scan(scan_folder(cfg.root), progress=progress)
    classes = list(report.scan.classes)
    readable = report.readable
    index = {c: i for i, c in enumerate(classes)}

    unreadable_classes = [c for c in classes if report.counts.get(c, 0) == 0]
    usable = [c for c in classes if report.counts.get(c, 0) > 0]
    if len(usable) < 2:
        reasons = [p.message for p in report.problems if p.kind == "unreadable"][:3]
        detail = (" For example: " + " ".join(reasons)) if reasons else ""
        raise DataError(
            f"After leaving out the pictures that cannot be opened, only {len(usable)} categor"
            f"{'y has' if len(usable) == 1 else 'ies have'} pictures; at least 2 are needed.{detail} "
            "Replace the broken files with JPEG or PNG pictures that open in an image viewer.")
    if unreadable_classes:
        raise DataError(
            f"None of the pictures in {', '.join(repr(c) for c in unreadable_classes)} could be opened, so that "
            "category cannot be learned. Replace them with JPEG or PNG pictures, or delete the folder.")

    if report.scan.layout == "train_val":
        train = [r for r in readable if r.split == "train"]
        val = [r for r in readable if r.split == "val"]
        test = [r for r in readable if r.split == "test"]
        if not val:  # only train/ and test/ given: hold out part of train/ for validation
            idx = [i for i, r in enumerate(readable) if r.split == "train"]
            split = stratified_split([index[readable[i].label] for i in idx], cfg.val_fraction, cfg.split_seed,
                                     groups=_groups_for(len(readable), report.duplicate_groups, idx))
            train = [readable[idx[k]] for k in split.train]
            val = [readable[idx[k]] for k in split.val]
    else:
        split = stratified_split([index[r.label] for r in readable], cfg.val_fraction, cfg.split_seed,
                                 groups=_groups_for(len(readable), report.duplicate_groups))
        train = [readable[i] for i in split.train]
        val = [readable[i] for i in split.val]
        test = []

    in_train = {r.label for r in train}
    missing = [c for c in classes if c not in in_train]
    if missing:
        raise DataError(
            f"No training pictures for {', '.join(repr(c) for c in missing)}: the model cannot learn a category it "
            "never sees. Add pictures of it to the training folder (at least 2, better 20 or more).")
    if not val:
        raise DataError(
            "There are not enough pictures to keep some aside for checking the model: every category has only 1. "
            "Add more pictures (at least 5 per category, better 20 or more).")

    if cfg.test_root:
        test = test + _prepare_test(cfg.test_root, classes, report, train + val)
    return PreparedDataset(classes=classes, train=train, val=val, test=test, report=report)


def _prepare_test(test_root: str, classes: list[str], report: CheckReport,
                  seen_records: list[ImageRecord]) -> list[ImageRecord]:
    """Check a separate test folder: same categories, readable, no copies of training pictures."""
    test_scan = scan_folder(test_root, min_classes=1, what="test folder")
    unknown = [c for c in test_scan.classes if c not in classes]
    if unknown:
        raise DataError(
            f"The test folder has categories the training folder does not: {', '.join(repr(c) for c in unknown)}. "
            f"Rename them to match the training categories ({', '.join(classes)}) or remove them from the test folder.")
    test_report = check_scan(test_scan)
    for p in test_report.problems:
        report.problems.append(Problem(p.kind, p.path, "Test folder: " + p.message, p.fix, p.severity))

    # Copies of training/validation pictures in the test folder inflate the test score.
    seen_ids = {id(r) for r in seen_records}
    ref = [(r, fp) for r, fp in zip(report.readable, report.fingerprints) if id(r) in seen_ids]
    if ref and test_report.readable:
        pairs = near_pairs(np.array([fp.phash for fp in test_report.fingerprints], dtype=np.uint64),
                           NEAR_DUPLICATE_DISTANCE,
                           others=np.array([fp.phash for _r, fp in ref], dtype=np.uint64))
        by_sha = {fp.sha1: r for r, fp in ref}
        matched: dict[int, ImageRecord] = {}
        for i, fp in enumerate(test_report.fingerprints):
            if fp.sha1 in by_sha:
                matched[i] = by_sha[fp.sha1]
        for i, j in pairs:
            if i not in matched and same_picture(test_report.fingerprints[i], ref[j][1]):
                matched[i] = ref[j][0]
        for i, other in sorted(matched.items()):
            t = test_report.readable[i]
            report.problems.append(Problem(
                "leakage", t.path,
                f"Test folder: '{t.rel_path}' is the same picture as '{other.rel_path}' in the training data, so the "
                "test score will look better than it really is.",
                "Delete it from the test folder (or from the training folder).", "warning"))
    return list(test_report.readable)

