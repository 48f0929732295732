"""Experiment 2: how many pictures do I need?

Train on growing shares of each category (10%, 25%, 50%, all), several times with different
picks, and check every run on the same pictures: the validation split (or the folder's own val/),
kept out of every pick. The result is accuracy against pictures per category, with the spread, and
for each category whether the curve is still rising (more pictures likely help) or levelling off.

Every pretrained run only trains a classifier on the frozen layers' output, so the experiment
computes that output once for every picture (:mod:`tl_core.lab.features`) and each of the runs
finds its share in the cache: the whole experiment costs one forward pass per picture plus seconds.
With ``with_scratch`` a from-scratch run per share is added (one pick each: those are full trainings).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tl_core.errors import ConfigError
from tl_core.lab.common import ExperimentBase
from tl_core.lab.runner import RUN_OVERHEAD, Part, expected_work, model_factor
from tl_core.lab.words import FLAT, category_trend, overlap, pct, points, range_text, spread_interval

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
MAX_REPEATS = 10


def parse_fractions(value: str | list | tuple) -> tuple[float, ...]:
    """``"0.1,0.25,1"`` -> ``(0.1, 0.25, 1.0)``, sorted, each more than 0 and at most 1."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[float] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            f = float(text)
        except ValueError:
            raise ConfigError(f"{text!r} is not a share of the pictures: write shares like 0.1,0.25,0.5,1.") from None
        if not (0.0 < f <= 1.0):
            raise ConfigError(f"Each share of the pictures must be more than 0 and at most 1 (1 = all of them), "
                              f"got {f:g}.")
        if f not in out:
            out.append(f)
    if not out:
        raise ConfigError("Name at least one share of the pictures, e.g. 0.1,0.25,0.5,1.")
    return tuple(sorted(out))


@dataclass
class DataSizeExperiment(ExperimentBase):
    """``tl lab data-size DATA_DIR``: accuracy against pictures per category."""

    kind: ClassVar[str] = "data-size"
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    repeats: int = 3
    with_scratch: bool = False
    _base: Any = field(default=None, init=False, repr=False, compare=False)
    _subsets: list = field(default_factory=list, init=False, repr=False, compare=False)
    _pictures_computed: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fractions = parse_fractions(self.fractions)
        if isinstance(self.repeats, bool) or int(self.repeats) != self.repeats or not 1 <= self.repeats <= MAX_REPEATS:
            raise ConfigError(f"Repeats must be a whole number from 1 to {MAX_REPEATS}, got {self.repeats!r}.")
        self.repeats = int(self.repeats)

    def validate(self) -> None:
        """Also checks every picture and makes the split: the held-out pictures are fixed here."""
        from tl_core.data.dataset import prepare_dataset

        super().validate()
        self._base = prepare_dataset(self.data_config())

    # -- the runs ---------------------------------------------------------------------------
    def parts(self, folder) -> list[Part]:
        from tl_core.lab.subsets import build_subsets

        base = self._base
        if base is None:
            self.validate()
            base = self._base
        self._subsets = build_subsets(folder.data_dir, base.train, base.val, base.classes, self.fractions,
                                      self.repeats, self.seed)
        factor = model_factor(self.model, self.image_size)
        n_val = len(base.val)
        out: list[Part] = []
        for sub in self._subsets:
            picks = [sub.repeat] if sub.repeat else list(range(1, self.repeats + 1))
            n_train = sum(sub.per_class.values())
            prepare, train = expected_work("head", n_train, n_val, self.epochs, features_ready=True, factor=factor)
            for pick in picks:
                meta = {"arm": "pretrained", "fraction": sub.fraction, "repeat": pick, "folder": sub.name,
                        "pictures_per_category": sub.pictures_per_category, "per_class_pictures": sub.per_class}
                out.append(Part(key=f"{sub.name}-seed-{pick}", label=_label(sub.fraction, pick, self.repeats),
                                config=self.run_config(root=str(sub.root), seed=self.seed + pick - 1,
                                                       name=f"lab data-size {sub.fraction:g} pick {pick}"),
                                meta=meta, prepare_work=prepare, train_work=train, heavy_prepare=False))
        if self.with_scratch:
            for sub in self._subsets:
                if sub.repeat not in (0, 1):
                    continue
                n_train = sum(sub.per_class.values())
                prepare, train = expected_work("scratch", n_train, n_val, self.epochs, factor=factor)
                meta = {"arm": "scratch", "fraction": sub.fraction, "repeat": 1, "folder": sub.name,
                        "pictures_per_category": sub.pictures_per_category, "per_class_pictures": sub.per_class}
                out.append(Part(key=f"{sub.name}-scratch", label=f"{_share(sub.fraction)}, from random weights",
                                config=self.run_config(preset="scratch", root=str(sub.root),
                                                       name=f"lab data-size {sub.fraction:g} scratch"),
                                meta=meta, prepare_work=prepare, train_work=train))
        return out

    def shared_work(self) -> float:
        base = self._base
        n = len(base.train) + len(base.val) if base is not None else 0
        return (RUN_OVERHEAD + n) * model_factor(self.model, self.image_size)

    def prepare(self, folder, progress, stop) -> None:  # noqa: ARG002
        """The one feature pass: every picture through the frozen layers (or found in the picture
        feature bank from an earlier time), then each folder's share written where its run looks."""
        from tl_core.lab.features import compute_bank, seed_cache

        base = self._base
        records = list(base.train) + list(base.val)
        bank = compute_bank(self.run_config(), [r.path for r in records], progress, stop)
        self._pictures_computed = bank.computed
        for sub in self._subsets:
            seed_cache(bank, str(sub.root), sub.source_of)

    # -- the numbers ------------------------------------------------------------------------
    def summarize(self, records: list[dict], parts_total: int) -> dict:  # noqa: ARG002
        pre = [r for r in records if r.get("meta", {}).get("arm") == "pretrained"]
        pts = _points(pre)
        out = {"model": self.model, "epochs": self.epochs, "fractions": list(self.fractions),
               "repeats": self.repeats, "points": pts,
               "features_computed_once": bool(pre) and all(r.get("feature_cache_hit") for r in pre),
               "pictures_through_network": self._pictures_computed,
               "categories": _categories(pts, pre), "conclusion": conclusion(pts)}
        if self.with_scratch:
            scratch = _points([r for r in records if r.get("meta", {}).get("arm") == "scratch"])
            out["scratch_points"] = scratch
            out["scratch_conclusion"] = scratch_sentence(pts, scratch)
        return out


def _share(fraction: float) -> str:
    return "all the pictures" if fraction >= 1 else f"{fraction:.0%} of the pictures"


def _label(fraction: float, pick: int, repeats: int) -> str:
    if repeats == 1:
        return _share(fraction)
    return f"{_share(fraction)}, " + (f"repeat {pick}" if fraction >= 1 else f"pick {pick}")


def _points(records: list[dict]) -> list[dict]:
    """One point per share: the mean of its repeats, with a 95% range covering them."""
    by_fraction: dict[float, list[dict]] = {}
    for r in records:
        by_fraction.setdefault(float(r["meta"]["fraction"]), []).append(r)
    out = []
    for fraction in sorted(by_fraction):
        reps = sorted(by_fraction[fraction], key=lambda r: r["meta"].get("repeat", 0))
        accs = [float(r.get("accuracy") or 0.0) for r in reps]
        n = int(reps[0].get("val_pictures") or 0)
        per_class: dict[str, float] = {}
        for name in reps[0].get("per_class") or {}:
            values = [float(r["per_class"][name]) for r in reps if name in (r.get("per_class") or {})]
            per_class[name] = round(sum(values) / len(values), 4)
        mean = sum(accs) / len(accs)
        out.append({"fraction": fraction, "pictures_per_category": round(reps[0]["meta"]["pictures_per_category"], 2),
                    "per_class_pictures": reps[0]["meta"].get("per_class_pictures"), "accuracy": round(mean, 4),
                    "accuracy_ci": spread_interval(accs, n), "per_class": per_class, "val_pictures": n,
                    "seconds": round(sum(float(r.get("seconds") or 0) for r in reps) / len(reps), 3),
                    "repeats": [{"repeat": r["meta"].get("repeat"), "accuracy": r.get("accuracy"),
                                 "run_dir": r.get("run_dir")} for r in reps]})
    return out


def _categories(pts: list[dict], records: list[dict]) -> list[dict]:
    """For each category: is its curve still rising? From its mean accuracy at each share."""
    if not pts:
        return []
    checked = next((r.get("val_counts") for r in records if r.get("val_counts")), None) or {}
    out = []
    for name in pts[-1]["per_class"]:
        values = [p["per_class"][name] for p in pts if name in p["per_class"]]
        verdict, sentence = category_trend(values, checked.get(name))
        out.append({"category": name, "accuracy": values[-1] if values else None, "checked_on": checked.get(name),
                    "verdict": verdict, "sentence": sentence})
    return out


def conclusion(pts: list[dict]) -> str:
    """Two or three sentences: the smallest and largest point, whether they can be told apart, and
    whether the last step still added much."""
    if not pts:
        return "No run finished yet, so there is no point to show."
    n = pts[0]["val_pictures"]
    first, last = pts[0], pts[-1]
    if len(pts) == 1:
        return (f"With {first['pictures_per_category']:g} pictures per category the model got {pct(first['accuracy'])} "
                f"of the {n} checking pictures right ({range_text(first['accuracy_ci'])}, 95% range). Only one amount "
                "of pictures finished, so there is no curve yet.")
    said = (f"With {first['pictures_per_category']:g} pictures per category the model got {pct(first['accuracy'])} of the "
            f"{n} checking pictures right ({range_text(first['accuracy_ci'])}); with {last['pictures_per_category']:g}, "
            f"{pct(last['accuracy'])} ({range_text(last['accuracy_ci'])}).")
    if overlap(first["accuracy_ci"], last["accuracy_ci"]):
        verdict = (f"Those 95% ranges overlap: with only {n} pictures to check with, we cannot tell apart the smallest "
                   "and the largest training set.")
    elif last["accuracy"] > first["accuracy"]:
        verdict = "Those 95% ranges do not overlap: more pictures clearly helped."
    else:
        verdict = ("Those 95% ranges do not overlap, and the smaller set did better: check the pictures for wrong "
                   "categories.")
    prev = pts[-2]
    gain = last["accuracy"] - prev["accuracy"]
    step = (f"The last step (from {prev['pictures_per_category']:g} to {last['pictures_per_category']:g} pictures per "
            f"category)")
    if gain >= FLAT and overlap(prev["accuracy_ci"], last["accuracy_ci"]):
        trend = (f"{step} added {points(gain)}: a hint, not proof with this few checking pictures, that more pictures "
                 "would help further.")
    elif gain >= FLAT:
        trend = f"{step} still added {points(gain)}, beyond the uncertainty: more pictures are likely to help further."
    else:
        trend = (f"{step} changed it by {points(gain)}: the curve is levelling off, so more pictures of the same kind "
                 "are likely to add little.")
    return " ".join((said, verdict, trend))


def scratch_sentence(pts: list[dict], scratch: list[dict]) -> str:
    """One sentence on the from-scratch curve, at the largest share both have."""
    common = sorted({p["fraction"] for p in pts} & {s["fraction"] for s in scratch})
    if not common:
        return "No from-scratch run finished yet."
    f = common[-1]
    p = next(x for x in pts if x["fraction"] == f)
    s = next(x for x in scratch if x["fraction"] == f)
    return (f"From random weights, {p['pictures_per_category']:g} pictures per category gave {pct(s['accuracy'])} "
            f"({range_text(s['accuracy_ci'])}) against {pct(p['accuracy'])} ({range_text(p['accuracy_ci'])}) from "
            "ImageNet weights.")


__all__ = ["DataSizeExperiment", "parse_fractions", "conclusion", "DEFAULT_FRACTIONS"]
