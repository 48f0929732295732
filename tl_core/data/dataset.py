"""From a data folder to the three lists training needs: train, validation and test.

This is the single entry point the trainer calls. It runs the full check first (so broken
files never reach a DataLoader and crash epoch 3), then either honours the user's own
``train/``/``val/`` folders or makes a stratified, seeded split that keeps copies of a
picture on one side. An optional separate test folder is checked against the training
categories and for pictures that also appear in training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from tl_core.errors import DataError, TransferLabError
from tl_core.data.checks import NEAR_DUPLICATE_DISTANCE, CheckReport, same_picture, check_scan, near_pairs
from tl_core.data.scan import DatasetScan, ImageRecord, Problem, scan_folder
from tl_core.data.split import SPLIT_FOLDER, SPLIT_RANDOM, describe_split, split_source, stratified_split, val_target

if TYPE_CHECKING:
    from tl_core.config import DataConfig

__all__ = ["PreparedDataset", "prepare_dataset", "SplitFacts", "split_facts", "recorded_split", "training_warnings"]

# The most unreadable pictures one training warning names (the data check lists them all).
UNREADABLE_EXAMPLES = 3


@dataclass
class PreparedDataset:
    """Readable pictures, split, plus the check report the app shows alongside."""

    classes: list[str]
    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord]
    report: CheckReport
    split: "SplitFacts | None" = None  # how train/val were chosen, with the numbers (summary.json's "split")

    @property
    def unchecked(self) -> list[str]:
        """Categories with pictures to learn from but none kept aside to check the model with: the
        validation accuracy says nothing about them."""
        in_val = {r.label for r in self.val}
        return [c for c in self.classes if c not in in_val]

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

    train, val, test, kind, from_train = _assign_split(readable, classes, report.scan.layout, cfg.val_fraction,
                                                       cfg.split_seed, report.duplicate_groups)
    facts = _facts(classes, train, val, test, kind, cfg.val_fraction, from_train, checked=True)

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
    return PreparedDataset(classes=classes, train=train, val=val, test=test, report=report, split=facts)


def _assign_split(records: list[ImageRecord], classes: list[str], layout: str, val_fraction: float, seed: int,
                  duplicate_groups: Sequence[Sequence[int]] = ()
                  ) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord], str, bool]:
    """The one place that decides the split: ``(train, val, test, kind, from_train)``.

    The user's own ``val/`` when it has pictures (kind "folder"); otherwise a stratified, seeded,
    copy-aware split of ``train/`` (a train/test folder, ``from_train``) or of everything (kind
    "random"). ``duplicate_groups`` index into ``records``.
    """
    index = {c: i for i, c in enumerate(classes)}
    groups = [list(g) for g in duplicate_groups]
    if layout == "train_val":
        train = [r for r in records if r.split == "train"]
        val = [r for r in records if r.split == "val"]
        test = [r for r in records if r.split == "test"]
        if val:
            return train, val, test, SPLIT_FOLDER, False
        # only train/ and test/ given (or an empty val/): hold out part of train/ for validation
        idx = [i for i, r in enumerate(records) if r.split == "train"]
        split = stratified_split([index[records[i].label] for i in idx], val_fraction, seed,
                                 groups=_groups_for(len(records), groups, idx))
        return ([records[idx[k]] for k in split.train], [records[idx[k]] for k in split.val], test,
                SPLIT_RANDOM, True)
    split = stratified_split([index[r.label] for r in records], val_fraction, seed,
                             groups=_groups_for(len(records), groups))
    return [records[i] for i in split.train], [records[i] for i in split.val], [], SPLIT_RANDOM, False


@dataclass
class SplitFacts:
    """How a data folder is split for training, with the numbers: what every screen and the model
    card say about "pictures to learn from" and "pictures to check with".

    ``kind``: "folder" (the folder's own ``val/``) or "random" (``val_fraction`` kept aside at random,
    per category, copies kept together; ``from_train`` when only ``train/`` was split); "unknown" for
    an old run that did not record it. ``per_class``: category -> (train, check) pictures, in category
    order; ``test_per_class``: pictures in the folder's own ``test/``. ``notes``: plain-words warnings
    about the split (a category never checked, an empty ``val/``...). ``checked``: the numbers come from
    the checked pictures (unreadable files left out, copies kept together), so they are exactly
    training's; otherwise from file names only.
    """

    kind: str
    val_fraction: float | None
    per_class: dict[str, tuple[int, int]]
    from_train: bool = False
    test_per_class: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checked: bool = False

    @property
    def n_train(self) -> int:
        return sum(t for t, _v in self.per_class.values())

    @property
    def n_val(self) -> int:
        return sum(v for _t, v in self.per_class.values())

    @property
    def n_test(self) -> int:
        return sum(self.test_per_class.values())

    def source(self, detailed: bool = False) -> str:
        """``"the folder's own val/ folder"`` / ``"20% kept aside at random"``."""
        return split_source(self.kind, self.val_fraction, from_train=self.from_train, detailed=detailed)

    def describe(self, detailed: bool = False) -> str:
        """``"245 pictures to learn from, 153 to check with (the folder's own val/ folder)"``."""
        return describe_split(self.kind, self.n_train, self.n_val, self.val_fraction,
                              from_train=self.from_train, detailed=detailed)

    def to_dict(self) -> dict[str, Any]:
        """summary.json's ``split`` entry."""
        return {"kind": self.kind, "val_fraction": self.val_fraction if self.kind == SPLIT_RANDOM else None,
                "from_train": self.from_train, "train": self.n_train, "val": self.n_val, "test": self.n_test}


def _facts(classes: list[str], train: Sequence[ImageRecord], val: Sequence[ImageRecord],
           test: Sequence[ImageRecord], kind: str, val_fraction: float, from_train: bool,
           checked: bool) -> SplitFacts:
    per_class = {c: [0, 0] for c in classes}
    for side, records in ((0, train), (1, val)):
        for r in records:
            per_class.setdefault(r.label, [0, 0])[side] += 1
    test_per_class: dict[str, int] = {}
    for r in test:
        test_per_class[r.label] = test_per_class.get(r.label, 0) + 1
    notes: list[str] = []
    if from_train:
        notes.append(f"There are no pictures in a val/ folder, so {split_source(kind, val_fraction, from_train=True)} "
                     "(per category) to check the model with. To choose them yourself, put pictures into "
                     "val/<category>/ folders.")
    for c, (n_train, n_val) in per_class.items():
        if n_train == 0:
            where = " in train/" if kind == SPLIT_FOLDER or from_train else ""
            notes.append(f"'{c}' has no pictures to learn from{where}, so training will refuse to start. Add pictures "
                         f"of '{c}'{where} (at least 2, better 20 or more).")
        elif n_val == 0:
            notes.append(unchecked_note(c, kind))
    if not val and per_class:
        notes.append("No picture is left to check the model with, so training will refuse to start. Add more "
                     "pictures (at least 5 per category, better 20 or more).")
    return SplitFacts(kind=kind, val_fraction=float(val_fraction) if kind == SPLIT_RANDOM else None,
                      per_class={c: (t, v) for c, (t, v) in per_class.items()}, from_train=from_train,
                      test_per_class=test_per_class, notes=notes, checked=checked)


def unchecked_note(label: str, kind: str) -> str:
    """The words for a category that has no picture kept aside to check the model with (split
    ``kind`` "folder": the folder's own val/ lacks it; otherwise it has too few pictures)."""
    if kind == SPLIT_FOLDER:
        return (f"'{label}' has no pictures in val/, so the model will never be checked on it. Add some "
                f"pictures of '{label}' to val/{label}/.")
    return (f"'{label}' has too few pictures (or only copies of one picture) to keep one aside, so the "
            f"model will never be checked on it. Add more pictures of '{label}'.")


def training_warnings(data: PreparedDataset) -> list[tuple[str, str]]:
    """What training says about the data before it starts, as ``(warning kind, message)``: every
    error-level problem of the data check, the pictures left out because they cannot be opened,
    and each category the validation accuracy leaves out. Training goes on (the data check
    refuses what cannot be trained at all), but none of these may pass in silence: a "val acc
    1.000" that never looked at one category is not a result."""
    unchecked = data.unchecked
    out: list[tuple[str, str]] = []
    for p in data.report.problems:
        if p.severity != "error" or (p.kind == "too_few_to_split" and unchecked):
            continue  # a category too small to split is said below, with what it means for the accuracy
        out.append(("data_problem", f"{p.message} {p.fix}".strip()))
    unreadable = [p for p in data.report.problems if p.kind == "unreadable"]
    if unreadable:
        examples = " ".join(p.message for p in unreadable[:UNREADABLE_EXAMPLES])
        more = (f" ({len(unreadable) - UNREADABLE_EXAMPLES} more: run the data check to see them all)"
                if len(unreadable) > UNREADABLE_EXAMPLES else "")
        out.append(("unreadable", f"{len(unreadable)} picture{'s' if len(unreadable) != 1 else ''} could not be "
                                  f"opened and {'are' if len(unreadable) != 1 else 'is'} left out of training. "
                                  f"{examples}{more}"))
    kind = data.split.kind if data.split is not None else SPLIT_RANDOM
    for c in unchecked:
        out.append(("category_not_checked", f"{unchecked_note(c, kind)} The validation accuracy leaves '{c}' out."))
    return out


def split_facts(cfg: Any, report: CheckReport | None = None, scan: DatasetScan | None = None) -> SplitFacts:
    """How ``cfg.root`` will be split for ``cfg.val_fraction`` and ``cfg.split_seed`` (a
    :class:`~tl_core.config.DataConfig`, a whole RunConfig, or anything with those attributes).

    Computed by the same code as :func:`prepare_dataset`. Without ``report`` only file names are
    read (instant; unreadable pictures still counted, copies not known); with the folder's
    :class:`CheckReport` (``tl_core.check``) the numbers are exactly training's. Raises
    :class:`DataError` only when the folder cannot be used at all (as :func:`scan_folder`); problems
    with the split itself (a category missing from ``val/``, an empty ``val/``) are ``notes``.
    """
    cfg = getattr(cfg, "data", cfg)
    val_fraction = float(getattr(cfg, "val_fraction", 0.2))
    seed = int(getattr(cfg, "split_seed", 0) or 0)
    if report is None:
        scan = scan if scan is not None else scan_folder(cfg.root)   # a caller may have scanned already
        records, groups, checked = list(scan.records), [], False
    else:
        scan = report.scan
        records, groups, checked = list(report.readable), report.duplicate_groups, True
    classes = list(scan.classes)
    train, val, test, kind, from_train = _assign_split(records, classes, scan.layout, val_fraction, seed, groups)
    return _facts(classes, train, val, test, kind, val_fraction, from_train, checked)


def _as_count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def recorded_split(summary: dict, config: Any = None) -> SplitFacts | None:
    """The split a run used, from its summary.json (``split``, ``counts``, ``val_counts``) and, for runs
    recorded before the ``split`` entry existed, its config: a folder that still has pictures in its own
    ``val/`` says "folder", otherwise a random split at the config's share. None when the run never got
    as far as reading its data."""
    summary = summary if isinstance(summary, dict) else {}
    counts = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    val_counts = summary.get("val_counts") if isinstance(summary.get("val_counts"), dict) else {}
    if not counts and not val_counts:
        return None
    classes = [c for c in (summary.get("classes") or []) if isinstance(c, str)]
    classes += [c for c in list(counts) + list(val_counts) if c not in classes]
    per_class = {c: (_as_count(counts.get(c)), _as_count(val_counts.get(c))) for c in classes}
    data = getattr(config, "data", config)
    record = summary.get("split") if isinstance(summary.get("split"), dict) else {}
    if record.get("kind") in (SPLIT_FOLDER, SPLIT_RANDOM):
        kind, from_train = record["kind"], bool(record.get("from_train"))
        val_fraction = record.get("val_fraction", getattr(data, "val_fraction", None))
    else:
        val_fraction = getattr(data, "val_fraction", None)
        kind, from_train = "unknown", False
        root = getattr(data, "root", None)
        if root:
            try:
                scan = scan_folder(root)
            except (TransferLabError, OSError):
                scan = None
            if scan is not None:
                if scan.layout == "train_val" and any(r.split == "val" for r in scan.records):
                    kind = SPLIT_FOLDER
                else:
                    kind, from_train = SPLIT_RANDOM, scan.layout == "train_val"
        if kind == "unknown" and val_fraction is not None and per_class and all(
                v == val_target(t + v, float(val_fraction)) for t, v in per_class.values()):
            kind = SPLIT_RANDOM
    return SplitFacts(kind=kind, val_fraction=val_fraction if kind == SPLIT_RANDOM else None, per_class=per_class,
                      from_train=from_train, checked=True)


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

