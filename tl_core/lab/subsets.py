"""The picture folders of the data-size experiment: a share of each category to learn from, and the
same pictures to check with at every point.

Each point trains an ordinary run on its own folder (``train/<category>/`` and ``val/<category>/``),
so its run folder says exactly which pictures it learned from and can be evaluated, redrawn or
redone like any run. The pictures are hard links to the originals (no copy, no extra disk space);
where that is impossible (another disk) they are copied. Picks are nested within a repeat (the 25%
pictures include the 10% ones), so one repeat's curve only ever adds pictures; each repeat draws
its own picks.
"""
from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


@dataclass
class Subset:
    """One folder of the data-size experiment."""

    name: str                                   # folder name under the experiment's data/
    fraction: float
    repeat: int                                 # 1-based; 0 for the shared folder of fraction 1
    root: Path
    per_class: dict[str, int]                   # training pictures per category
    source_of: dict[str, str] = field(default_factory=dict)   # picture in this folder -> original

    @property
    def pictures_per_category(self) -> float:
        return sum(self.per_class.values()) / max(len(self.per_class), 1)


def pictures_for(fraction: float, count: int) -> int:
    """How many of a category's ``count`` training pictures a ``fraction`` keeps: at least one."""
    return max(1, min(count, int(round(fraction * count))))


def orders(train: Sequence, classes: Sequence[str], seed: int, repeat: int) -> dict[str, list]:
    """Each category's training records in this repeat's random order (prefixes are the picks)."""
    rng = random.Random(f"{seed}:{repeat}")
    by_class: dict[str, list] = {c: [] for c in classes}
    for record in train:
        by_class[record.label].append(record)
    for records in by_class.values():
        rng.shuffle(records)
    return by_class


def _place(src: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:   # another disk, or a file system without hard links
        shutil.copy2(src, dest)


def write_subset(root: Path, train: Sequence, val: Sequence) -> dict[str, str]:
    """``root/train/<category>/`` and ``root/val/<category>/`` with the given records' pictures;
    returns each new path's original. Names get a running number, so two pictures with the same name
    in different sub-folders of a category stay two pictures."""
    source_of: dict[str, str] = {}
    for split, records in (("train", train), ("val", val)):
        for i, record in enumerate(records):
            dest = root / split / record.label / f"{i:05d}-{Path(record.path).name}"
            _place(record.path, dest)
            source_of[str(dest)] = record.path
    return source_of


def build_subsets(data_dir: Path, train: Sequence, val: Sequence, classes: Sequence[str], fractions: Sequence[float],
                  repeats: int, seed: int) -> list[Subset]:
    """Every folder the experiment trains on, smallest share first (a share of 1 is one folder for
    all repeats: it keeps every picture)."""
    counts = {c: 0 for c in classes}
    for record in train:
        counts[record.label] += 1
    per_repeat = [orders(train, classes, seed, r) for r in range(1, repeats + 1)]
    out: list[Subset] = []
    for fraction in sorted(fractions):
        keep = {c: pictures_for(fraction, counts[c]) for c in classes}
        for r in ([0] if fraction >= 1.0 else range(1, repeats + 1)):
            name = "all" if r == 0 else f"share-{fraction:g}-pick-{r}"
            picks = [rec for c in classes for rec in (per_repeat[max(r, 1) - 1][c][:keep[c]])]
            root = (data_dir / name).resolve()
            source_of = write_subset(root, picks, val)
            out.append(Subset(name, fraction, r, root, keep, source_of))
    return out


__all__ = ["Subset", "build_subsets", "write_subset", "pictures_for", "orders"]
