"""Hold some pictures aside to check the model: a stratified, seeded, copy-aware split.

Stratified so every category is checked (a random split of a small folder can leave a
category with nothing in validation); seeded so the same folder and seed always give the
same split (runs are comparable and reproducible); copy-aware so exact or near duplicates
never end up on both sides, which would let the model be "checked" on pictures it has
already learned.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Sequence

from tl_core.errors import ConfigError

__all__ = ["Split", "stratified_split", "val_target", "SPLIT_FOLDER", "SPLIT_RANDOM", "split_source", "describe_split"]

#: How the pictures to check with were chosen: the data folder's own ``val/`` folder, or a share of
#: the pictures kept aside at random (per category, copies kept together) by :func:`stratified_split`.
SPLIT_FOLDER = "folder"
SPLIT_RANDOM = "random"


@dataclass
class Split:
    """Indices (into the list of labels given) for training and for validation."""

    train: list[int]
    val: list[int]


def val_target(n: int, val_fraction: float) -> int:
    """How many of a class's ``n`` pictures go to validation.

    ``round(n * val_fraction)`` (Python's rounding, so the app's preview computed the same
    way agrees exactly), but at least 1 and at most ``n - 1`` when ``n >= 2`` (each class is
    both learned and checked), and 0 when ``n == 1``.
    """
    if n < 2:
        return 0
    return min(max(1, int(round(n * val_fraction))), n - 1)


def stratified_split(
    labels: Sequence[int],
    val_fraction: float,
    seed: int,
    groups: Sequence[int] | None = None,
) -> Split:
    """Split item indices into train and validation, class by class.

    ``groups`` (optional, one id per item) keeps items that share an id on the same side:
    pass the duplicate group of each picture; a negative id means "no group". A group whose
    members carry different labels (the same picture filed under two categories) is kept
    together too. Deterministic for a given ``seed``.
    """
    n = len(labels)
    if not (0.0 <= float(val_fraction) < 1.0):
        raise ConfigError(f"The validation share must be at least 0 and below 1, got {val_fraction}.")
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries but labels has {n}; give one group id per item")

    # Units: the things that are placed as a whole (a single picture or a group of copies).
    units: list[list[int]] = []
    unit_of_group: dict[Hashable, int] = {}
    for i in range(n):
        g = None if groups is None else groups[i]
        if g is None or (isinstance(g, (int, float)) and g < 0):
            units.append([i])
        elif g in unit_of_group:
            units[unit_of_group[g]].append(i)
        else:
            unit_of_group[g] = len(units)
            units.append([i])

    per_class = Counter(labels[i] for i in range(n))
    target = {c: val_target(k, val_fraction) for c, k in per_class.items()}
    unit_counts = [Counter(labels[i] for i in unit) for unit in units]

    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    rank = {u: r for r, u in enumerate(order)}

    in_val = [False] * len(units)
    val_count: Counter = Counter()
    for u in order:
        if all(val_count[c] + k <= target[c] for c, k in unit_counts[u].items()):
            in_val[u] = True
            val_count.update(unit_counts[u])

    # Big copy groups can make the greedy pass skip a class entirely; give every class
    # that should be checked at least one validation unit, if that leaves it (and every
    # other class in that unit) with something to learn from.
    for c in sorted(per_class, key=repr):
        if target[c] == 0 or val_count[c] > 0:
            continue
        candidates = [
            u for u in order
            if not in_val[u] and c in unit_counts[u]
            and all(per_class[d] - val_count[d] - k >= 1 for d, k in unit_counts[u].items())
        ]
        if candidates:
            best = min(candidates, key=lambda u: (len(units[u]), rank[u]))
            in_val[best] = True
            val_count.update(unit_counts[best])

    train = sorted(i for u, unit in enumerate(units) if not in_val[u] for i in unit)
    val = sorted(i for u, unit in enumerate(units) if in_val[u] for i in unit)
    return Split(train=train, val=val)


def _percent(val_fraction: float | None) -> str:
    try:
        return f"{100 * float(val_fraction):.3g}%"
    except (TypeError, ValueError):
        return "a share"


def split_source(kind: str, val_fraction: float | None = None, *, from_train: bool = False,
                 detailed: bool = False) -> str:
    """Where the pictures to check with come from, in plain words.

    ``"the folder's own val/ folder"`` or ``"20% kept aside at random"`` (``"20% of train/ ..."``
    when the folder has a train/ but no val/ pictures); ``detailed`` adds how the random split
    works (", per category, copies kept together"). Any other ``kind`` (an old run that did not
    record it) says so rather than guess.
    """
    if kind == SPLIT_FOLDER:
        return "the folder's own val/ folder"
    if kind == SPLIT_RANDOM:
        words = f"{_percent(val_fraction)} {'of train/ ' if from_train else ''}kept aside at random"
        return words + (", per category, copies kept together" if detailed else "")
    return "how they were chosen was not recorded"


def describe_split(kind: str, n_train: int, n_val: int, val_fraction: float | None = None, *,
                   from_train: bool = False, detailed: bool = False) -> str:
    """``"245 pictures to learn from, 153 to check with (the folder's own val/ folder)"``: the one
    sentence every screen and the model card use for the split actually used."""
    noun = "picture" if n_train == 1 else "pictures"
    return (f"{n_train:,} {noun} to learn from, {n_val:,} to check with "
            f"({split_source(kind, val_fraction, from_train=from_train, detailed=detailed)})")
