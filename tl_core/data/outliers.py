"""Pictures that look unlike the rest of their category: a broken download's "image not found"
placeholder, a screenshot, a picture of the wrong thing or of another category.

Why: one such picture in a category folder teaches the model a wrong answer, and nothing else in
the check can see it (it opens fine and is no copy). The pretrained network already knows what
pictures look like, so each picture is compared with the others of its category in the network's
view (the pooled features before the classifier, which a "classifier only" training uses too).

How, and why so strict: a beginner reads every flag, so a flag must be worth reading; a
handful of sure ones beats a tenth of the folder. For each picture we take its mean distance to
its :data:`NEIGHBOURS` nearest pictures of the same category (cosine distance on square-rooted
features, which tames the few very large values that otherwise decide every distance). A typical
picture of the category has such neighbours close by; an odd one does not. Its distance is then
compared with the category's typical one in two ways that fail differently, and both must agree:

* ``ratio``: its distance over the category's median distance. Stable for small categories, but
  categories of very alike pictures (28-pixel clothes) spread wider in this measure;
* ``score``: how many typical deviations (median absolute deviation, pooled over the categories)
  it lies above the median. Comparable across data sets, but noisy for small categories.

The typical distance is measured against the category without its own odd-looking pictures (a
first pass leaves them out), so that two odd pictures cannot vouch for each other. A picture is
also flagged when it is clearly nearer to another category's typical pictures than to its own.
Categories with fewer than :data:`MIN_PICTURES` pictures are not judged: there is no "rest of the
category" to compare with. Identical files count once (a copy is no neighbour vouching for it).

The thresholds were measured on real photos (``tests/test_outliers.py`` and the numbers in its
docstring): on clean pet photos about one flag per thousand pictures, most of them real oddities
of the set (logos, flyers, drawings). Injected placeholders and screenshots are found in nearly
every category of 20 or more pictures, 28-pixel clothes among pets in most categories of 40 and all
of 200, a picture of the other category about half the time; in categories of 8-12 pictures what is
typical is uncertain, so only the grossest odd pictures stand out there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from tl_core.data.scan import ImageRecord, Problem

__all__ = ["OddPicture", "OddScores", "OddPictures", "score_pictures", "find_odd_pictures", "odd_problems",
           "MIN_PICTURES", "OUTLIER_MODEL"]

#: The network whose view of the pictures is used: the catalogue's recommended model, whose
#: ImageNet weights ship with Transfer Lab (``weights="offline"``), so the check works offline and
#: its features are the ones a "classifier only" run of that model computes (kept per picture in
#: :mod:`tl_core.results.picture_features`' bank, so neither the next check nor that work repeats).
OUTLIER_MODEL = "tf_efficientnet_lite0"
OUTLIER_WEIGHTS = "offline"
#: Below this many readable pictures a category is not judged.
MIN_PICTURES = 8
#: How many nearest pictures of its category vouch for a picture.
NEIGHBOURS = 4
# Thresholds (see the module docstring). A picture is "unlike its category" when both its score
# and its ratio are high; "nearer to another category" when its own distance is this many times
# its distance to the other category's typical pictures and it is somewhat unusual for its own.
_SCORE = 5.0
_RATIO = 1.4
_NEARER = 1.4
_NEARER_SCORE = 1.0
# Said "it looks more like the 'x' pictures" from this ratio of distances on (else "like none").
_LOOKS_LIKE = 1.2
# First pass: pictures this many deviations above their category's median are left out of the
# reference the second pass measures against.
_REFERENCE_CUT = 3.0
# Never more flags per category than this share of it (at least _MIN_CAP): a safety net for data
# sets unlike any measured, where the thresholds would otherwise flag many ordinary pictures.
_CAP_SHARE = 0.03
_MIN_CAP = 5
_SAME_FILE = 1.0 - 1e-5   # cosine similarity of identical features (the same file twice)
_BLOCK_CELLS = 4_000_000  # similarities computed at a time (16 MB: bounded memory on big folders)

Progress = Callable[[int, int], None]


@dataclass
class OddScores:
    """Per picture (in the order given): how unusual it is for its category; ``judged`` is False
    for pictures of categories too small to judge (their other fields are then 0 / None)."""

    ratio: np.ndarray            # distance to its nearest pictures / the category's typical one
    score: np.ndarray            # the same in typical deviations above the category's median
    nearer: np.ndarray           # own distance / distance to the nearest other category (0: none)
    looks_like: list[str | None]  # the other category it is nearest to, when clearly nearer
    judged: np.ndarray           # bool
    flagged: np.ndarray          # bool


@dataclass
class OddPicture:
    """One picture that looks unlike the rest of its category."""

    path: str
    rel_path: str
    label: str
    looks_like: str | None       # another category it looks more like; None: like none of them
    ratio: float
    score: float

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "looks_like": self.looks_like,
                "ratio": round(self.ratio, 3), "score": round(self.score, 2)}


@dataclass
class OddPictures:
    """What :func:`find_odd_pictures` found: the odd pictures (most unusual first), the categories
    it compared, and in plain words what it could not do (``note``, "" when nothing to say)."""

    odd: list[OddPicture] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    note: str = ""
    computed: int = 0            # pictures that went through the network now (the rest were remembered)


# -- the arithmetic (pure numpy) --------------------------------------------------------------------

def _unit_rows(features: np.ndarray) -> np.ndarray:
    """Square-rooted, unit-length rows: cosine similarity is then a dot product."""
    x = np.sqrt(np.maximum(np.asarray(features, dtype=np.float32), 0.0))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _neighbour_distance(query: np.ndarray, ref: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Mean cosine distance from each query row to its ``k`` nearest ``ref`` rows, identical rows
    (the picture itself, or the same file twice) left out; 0 where there is nothing to compare."""
    out = np.zeros(len(query), dtype=np.float64)
    if len(query) == 0 or len(ref) == 0:
        return out
    k = max(1, min(k, len(ref)))
    block = max(1, _BLOCK_CELLS // len(ref))
    for start in range(0, len(query), block):
        sims = query[start:start + block] @ ref.T
        sims[sims >= _SAME_FILE] = -np.inf
        top = np.partition(sims, len(ref) - k, axis=1)[:, len(ref) - k:]
        usable = np.isfinite(top)
        counts = usable.sum(axis=1)
        sums = np.where(usable, top, 0.0).sum(axis=1)
        mean = np.divide(sums, counts, out=np.ones_like(sums), where=counts > 0)
        out[start:start + len(top)] = np.where(counts > 0, 1.0 - mean, 0.0)
    return out


def _robust_centre(values: np.ndarray) -> tuple[float, float]:
    """Median and median absolute deviation (scaled to a normal's standard deviation)."""
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med)))


def _typical_members(x: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The category's pictures without those that already look odd at a first glance, so that a
    few odd pictures (two placeholders) cannot vouch for each other in the second pass."""
    first = _neighbour_distance(x[members], x[members])
    med, dev = _robust_centre(first)
    if dev <= 0:
        return members
    typical = members[first - med <= _REFERENCE_CUT * dev]
    return typical if len(typical) > NEIGHBOURS else members


def score_pictures(features: np.ndarray, labels: Sequence[str]) -> OddScores:
    """How unusual each picture looks for its category, and which ones to flag (see the module
    docstring). ``features``: one row per picture (the network's pooled features); ``labels``: the
    category of each row. Categories with fewer than :data:`MIN_PICTURES` rows are not judged."""
    x = _unit_rows(features)
    groups = _judged_groups(labels)
    typical = {c: _typical_members(x, idx) for c, idx in groups.items()}
    own, ratio, score = _own_category(x, groups, typical)
    nearer, looks_like = _nearest_other_category(x, groups, typical, own)
    judged = np.zeros(len(x), dtype=bool)
    for idx in groups.values():
        judged[idx] = True
    unlike = (score > _SCORE) & (ratio > _RATIO)
    elsewhere = (nearer > _NEARER) & (score > _NEARER_SCORE)
    flagged = judged & (unlike | elsewhere)
    for idx in groups.values():
        _cap(flagged, score, idx)
    return OddScores(ratio=ratio, score=score, nearer=nearer, looks_like=looks_like, judged=judged, flagged=flagged)


def _judged_groups(labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Row indices per category big enough to judge."""
    arr = np.asarray(list(labels), dtype=object)
    names = sorted({str(v) for v in arr})
    groups = {c: np.flatnonzero(arr == c) for c in names}
    return {c: idx for c, idx in groups.items() if len(idx) >= MIN_PICTURES}


def _own_category(x: np.ndarray, groups: dict[str, np.ndarray],
                  typical: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per picture: its distance to its category's typical pictures, that over the category's
    median (``ratio``) and in deviations pooled over the categories (``score``)."""
    n = len(x)
    own, ratio, dev = np.zeros(n), np.zeros(n), np.zeros(n)
    deviations: list[np.ndarray] = []
    for c, idx in groups.items():
        own[idx] = _neighbour_distance(x[idx], x[typical[c]])
        ref = own[typical[c]]
        med = float(np.median(ref))
        ratio[idx] = own[idx] / med if med > 0 else 0.0
        dev[idx] = own[idx] - med
        deviations.append(np.abs(ref - med))
    scale = 1.4826 * float(np.median(np.concatenate(deviations))) if deviations else 0.0
    return own, ratio, (dev / scale if scale > 0 else np.zeros(n))


def _nearest_other_category(x: np.ndarray, groups: dict[str, np.ndarray], typical: dict[str, np.ndarray],
                            own: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Per picture: its own distance over its distance to the nearest other category's typical
    pictures (0 with no other category), and that category's name where it is clearly nearer."""
    n = len(x)
    nearer = np.zeros(n)
    looks_like: list[str | None] = [None] * n
    for c, idx in groups.items():
        best = np.full(len(idx), np.inf)
        best_name = np.full(len(idx), None, dtype=object)
        for other in groups:
            if other != c:
                d = _neighbour_distance(x[idx], x[typical[other]])
                closer = d < best
                best[closer], best_name[closer] = d[closer], other
        usable = np.isfinite(best) & (best > 0)
        rel = np.divide(own[idx], best, out=np.zeros(len(idx)), where=usable)
        nearer[idx] = rel
        for j in np.flatnonzero(rel >= _LOOKS_LIKE):
            looks_like[idx[j]] = str(best_name[j])
    return nearer, looks_like


def _cap(flagged: np.ndarray, score: np.ndarray, idx: np.ndarray) -> None:
    """Keep at most a small share of a category flagged (the most unusual)."""
    cap = max(_MIN_CAP, math.ceil(_CAP_SHARE * len(idx)))
    hits = idx[flagged[idx]]
    if len(hits) > cap:
        drop = hits[np.argsort(-score[hits], kind="stable")[cap:]]
        flagged[drop] = False


# -- pictures on disk ---------------------------------------------------------------------------------

def find_odd_pictures(records: Sequence[ImageRecord], progress: Progress | None = None,
                      model: str = OUTLIER_MODEL, weights: str = OUTLIER_WEIGHTS) -> OddPictures:
    """The pictures among ``records`` (readable ones, from the check) that look unlike the rest of
    their category, most unusual first.

    Each picture's features come from the bank of :mod:`tl_core.results.picture_features` when its
    bytes were seen before (a second check, or after training), else from the network now.
    ``progress(done, total)`` counts pictures looked at. Never raises for a picture or a missing
    network: what could not be done is said in ``note``.
    """
    counts: dict[str, int] = {}
    for r in records:
        counts[r.label] = counts.get(r.label, 0) + 1
    judged = sorted(c for c, m in counts.items() if m >= MIN_PICTURES)
    small = sorted(c for c, m in counts.items() if m < MIN_PICTURES)
    if not judged:
        return OddPictures(note=_too_small_note(small, everything=True))
    chosen = [r for r in records if r.label in set(judged)]
    try:
        found = _features(chosen, progress, model, weights)
    except Exception as err:  # noqa: BLE001 - the rest of the check stands without this part
        reason = str(err) if _is_plain(err) else f"{type(err).__name__}: {err}"
        return OddPictures(categories=[], note=f"Odd pictures were not looked for: {reason}")
    x, kept, computed = found
    scores = score_pictures(x, [r.label for r in kept])
    order = np.argsort(-scores.score, kind="stable")
    odd = [OddPicture(kept[i].path, kept[i].rel_path, kept[i].label, scores.looks_like[i],
                      float(scores.ratio[i]), float(scores.score[i])) for i in order if scores.flagged[i]]
    return OddPictures(odd=odd, categories=judged, note=_too_small_note(small), computed=computed)


def _features(records: Sequence[ImageRecord], progress: Progress | None, model: str,
              weights: str) -> tuple[np.ndarray, list[ImageRecord], int]:
    """The network's features of the readable ``records`` (those that fail to decode now are left
    out: the check has reported unreadable files already), and how many were computed now."""
    from tl_core.config import DataConfig, ModelConfig, RunConfig
    from tl_core.results.picture_features import extractor, picture_features

    config = RunConfig(data=DataConfig(root="."), model=ModelConfig(name=model, weights=weights))
    ex = _channels_last_on_cpu(extractor(config))
    got = picture_features(ex, [r.path for r in records], progress)
    by_path = {r.path: r for r in records}
    kept = [by_path[p] for p in got.paths]
    x = got.x.numpy() if len(kept) else np.zeros((0, 1), dtype=np.float32)
    return x, kept, got.computed


def _channels_last_on_cpu(ex):
    """The extractor with channels-last memory on a CPU too: measured 1.4-1.7x more pictures per
    CPU-second for this network's forward pass on 2 cores (training keeps its own setting). The
    features agree with the default layout to float rounding, so the shared bank stays valid."""
    import dataclasses

    import torch

    if ex.device.device.type != "cpu" or ex.device.channels_last:
        return ex
    ex.model.to(memory_format=torch.channels_last)
    ex.device = dataclasses.replace(ex.device, channels_last=True)
    return ex


def _is_plain(err: Exception) -> bool:
    from tl_core.errors import TransferLabError

    return isinstance(err, TransferLabError)


def _too_small_note(small: list[str], everything: bool = False) -> str:
    if not small:
        return ""
    names = ", ".join(f"'{c}'" for c in small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
    if everything:
        return (f"Odd pictures were not looked for: every category has fewer than {MIN_PICTURES} pictures, too few "
                "to tell an odd one from the rest.")
    return (f"Odd pictures were not looked for in {names}: fewer than {MIN_PICTURES} pictures, too few to tell an "
            "odd one from the rest.")


def odd_problems(found: OddPictures) -> list[Problem]:
    """One warning per odd picture, with its path, what it looks like and what to do."""
    return [Problem("outlier", o.path, _message(o, len(found.categories)), _fix(o), "warning") for o in found.odd]


def _message(o: OddPicture, compared: int) -> str:
    if o.looks_like:
        like = f"it looks more like the '{o.looks_like}' pictures"
    else:
        like = "it looks like none of your categories" if compared > 1 else "it looks like none of them"
    return f"This picture looks unlike the other '{o.label}' pictures ({like}). Is it in the right folder?"


def _fix(o: OddPicture) -> str:
    keep = f"If it really is a '{o.label}' picture, keep it: unusual pictures of a category teach the model too."
    if o.looks_like:
        return (f"Look at {o.rel_path}: if it shows '{o.looks_like}', move it to that folder; if it shows neither, "
                f"delete it or move it out of the data folder. {keep}")
    return (f"Look at {o.rel_path}: if it is not a '{o.label}' picture (a broken download's placeholder, a "
            f"screenshot, something else), delete it or move it out of the data folder. {keep}")
