"""Likely label mistakes: the pictures whose folder the model confidently disagrees with.

A model cannot judge the label of a picture it learned from: a network that has fitted its
training pictures agrees with every label it was taught, wrong ones included (that is what
fitting means). The judgement has to be *out of sample*: each picture scored by a classifier that
never saw it. So:

1. every picture the run used (learned from and kept aside; not a separate test folder) is
   described by the pooled features of the *pretrained* network the run started from
   (:mod:`tl_core.results.picture_features`: shared with training's cache, kept per picture);
2. the pictures are cut into K folds (K = 5, fewer for tiny categories), stratified and seeded,
   copies of one picture (the same bytes) always in the same fold; for each fold a logistic
   regression (standardised features, a strong penalty: see ``PENALTY_C``) learns from the other
   folds and gives class probabilities for the pictures of this fold;
3. those out-of-fold probabilities go to confident learning (``cleanlab.filter.find_label_issues``,
   pruning by the estimated noise rate per pair of categories, ranked by self-confidence): a
   picture is flagged when the probability of its own category is below what that category's
   pictures usually get, and another category's is above that one's usual level. The count of
   flags per pair comes from the estimated joint distribution of given and true categories, so a
   handful of hard pictures in a clean folder is not a flood.

Why this is fair for a fine-tuned run too: a "classifier only" run *is* a linear classifier on
exactly these features, so the folds retrain the run's own model on 4/5 of the pictures. A run
that also trained deeper layers moved its features towards its training labels (wrong ones
included), so its own features are not out of sample; the pretrained features are, and a linear
classifier on them is the standard, strong baseline of transfer learning: where it confidently
disagrees with a label across folds, the label, not the model, is the likely culprit. It costs
one pass of the pretrained network (already cached by a "classifier only" run) and a few seconds
of logistic regression.

The result is saved in the run folder (``label_issues.json``, written whole), made in the
background after training (:mod:`tl_core.app.aftercare`) and drawn by the Results page.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tl_core.errors import RunError
from tl_core.files import write_json_atomic
from tl_core.runs import RunFolder
from tl_core.runs.folder import read_json

__all__ = ["LabelIssue", "LabelIssues", "ISSUES_FILE", "find_label_issues", "load_label_issues",
           "label_issues_ready", "out_of_sample_probabilities", "rank_label_issues"]

ISSUES_FILE = "label_issues.json"
FOLDS = 5
# The logistic regression's L2 strength (on standardised features). Pooled features have ~1,000
# dimensions for tens to thousands of pictures: a weak penalty (sklearn's C=1) fits the folds
# apart and is sure of everything (99% on its own errors), and confident learning then flags every
# hard picture. Measured on real pets photos, 128 px, a dog filed as a cat planted: 81 pictures:
# C=1 flags 3 (cross-validated accuracy 0.889), C=0.01 flags 2 (0.889); 5,001 pictures: C=1 flags
# 121 (0.953), C=0.01 flags 21 (0.960), C=0.001 flags 7 (0.962, the planted dog 2nd); the planted
# dog is 1st at C=0.01 in both.
PENALTY_C = 0.01
METHOD = ("cleanlab confident learning (prune by noise rate, ranked by self-confidence) on out-of-fold "
          "probabilities of a logistic regression on the pretrained network's pooled features")
FORMAT = 1

Progress = Callable[[int, int], None]


@dataclass
class LabelIssue:
    """One picture whose folder the out-of-sample model disagrees with."""

    path: str                 # absolute, where it was when checked
    rel_path: str             # inside the data folder
    label: str                # its folder (the category it was given)
    suggested: str            # the category the model thinks
    confidence: float         # how sure the model is of ``suggested`` (0-1)
    label_probability: float  # what the model gives its own folder (0-1)
    quality: float            # cleanlab's label quality score: the lower, the likelier a mistake
    side: str                 # "learn" (training pictures) or "check" (kept aside)


@dataclass
class LabelIssues:
    """All flagged pictures of a run, likeliest mistake first, and how they were found."""

    classes: list[str]
    issues: list[LabelIssue]
    checked: int                          # pictures scored
    folds: int
    seconds: float
    data_root: str
    method: str = METHOD
    unreadable: list[str] = field(default_factory=list)

    def rank_of(self, path: str | Path) -> int | None:
        """1-based place of ``path`` in the list (None when not flagged)."""
        target = str(Path(path).resolve())
        for i, issue in enumerate(self.issues, 1):
            if str(Path(issue.path).resolve()) == target:
                return i
        return None

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelIssues":
        issues = [LabelIssue(**{k: item[k] for k in LabelIssue.__dataclass_fields__}) for item in d["issues"]]
        return cls(classes=list(d["classes"]), issues=issues, checked=int(d["checked"]), folds=int(d["folds"]),
                   seconds=float(d["seconds"]), data_root=str(d["data_root"]), method=str(d.get("method", METHOD)),
                   unreadable=list(d.get("unreadable", [])))


# -- the method -----------------------------------------------------------------------------------

def _folds_for(y: np.ndarray) -> int:
    smallest = int(np.bincount(y).min()) if len(y) else 0
    return max(2, min(FOLDS, smallest))


def out_of_sample_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int | None = None,
                                seed: int = 0, groups: list | np.ndarray | None = None) -> np.ndarray:
    """(N, C) class probabilities, each row from a logistic regression trained without that row
    (stratified, seeded K-fold). ``groups``: rows with the same group (copies of one picture) fall in
    the same fold, so a copy filed elsewhere cannot vouch for a wrong label (nor accuse a right one).
    A category missing from a fold's training part gets probability 0 there (then a tiny floor:
    confident learning needs every row to sum to 1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = folds or _folds_for(y)
    probs = np.zeros((len(y), n_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "the least populated class has only 3 members": handled below
        if groups is not None and len(set(groups)) < len(y):
            splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, groups)
        else:
            splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y)
        for train_idx, test_idx in splits:
            seen = np.unique(y[train_idx])
            if len(seen) == 1:
                probs[np.ix_(test_idx, seen)] = 1.0
                continue
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=PENALTY_C, max_iter=2000))
            clf.fit(x[train_idx], y[train_idx])
            probs[np.ix_(test_idx, clf.classes_)] = clf.predict_proba(x[test_idx])
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)


def rank_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> list[int]:
    """Indices of the likely label mistakes, likeliest first (confident learning), keeping only
    pictures whose most likely category is not their own."""
    from cleanlab.filter import find_label_issues as cl_find

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = cl_find(labels, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return [int(i) for i in ranked if int(np.argmax(pred_probs[i])) != int(labels[i])]


# -- a run ----------------------------------------------------------------------------------------

def _run_inputs(run_dir: str | Path):
    run = RunFolder.open(run_dir)
    return run, run.config(), read_json(run.path / "preprocessing.json")


def find_label_issues(run_dir: str | Path, progress: Progress | None = None, save: bool = True) -> LabelIssues:
    """Rank the pictures of run ``run_dir`` whose folder is likely wrong (see the module docstring)
    and save the list in the run folder (``label_issues.json``). Uses the pictures as they are now
    in the run's data folder. ``progress(done, total)`` counts pictures read through the network."""
    from tl_core.data.dataset import prepare_dataset
    from tl_core.models.preprocess import Preprocessing
    from tl_core.results import picture_features as pf

    started = time.perf_counter()
    run, config, prep = _run_inputs(run_dir)
    data = prepare_dataset(config.data)
    ex = pf.extractor(config, Preprocessing.from_dict(prep) if isinstance(prep, dict) else None)
    bank = pf.load_bank(ex)
    sets = [([r.path for r in recs], data.labels(recs)) for recs in (data.train, data.val)]
    from_training = pf.from_training_cache(ex, sets, bank)
    records = {r.path: (r, side) for recs, side in ((data.train, "learn"), (data.val, "check")) for r in recs}
    paths = list(records)
    got = pf.picture_features(ex, paths, progress, bank=bank)
    if from_training and not got.computed:
        pf.save_bank(ex, bank, keep=[k for k in map(pf.content_key, paths) if k])
    index = {c: i for i, c in enumerate(data.classes)}
    y = np.array([index[records[p][0].label] for p in got.paths], dtype=int)
    x = pf.as_numpy(got.x)
    copies = [pf.content_key(p) or p for p in got.paths]   # the same bytes: one group, one fold
    probs = out_of_sample_probabilities(x, y, len(data.classes), seed=config.train.seed, groups=copies)
    ranked = rank_label_issues(y, probs)
    issues = [_issue(records[got.paths[i]], probs[i], y[i], data.classes) for i in ranked]
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(y, probs)
    for issue, i in zip(issues, ranked):
        issue.quality = round(float(quality[i]), 4)
    result = LabelIssues(classes=list(data.classes), issues=issues, checked=len(y), folds=_folds_for(y),
                         seconds=round(time.perf_counter() - started, 2), data_root=str(config.data.root),
                         unreadable=[p for p, _ in got.failed])
    if save:
        write_json_atomic(run.path / ISSUES_FILE, result.to_dict())
    return result


def _issue(entry, p: np.ndarray, given: int, classes: list[str]) -> LabelIssue:
    record, side = entry
    best = int(np.argmax(p))
    return LabelIssue(path=record.path, rel_path=record.rel_path, label=record.label, suggested=classes[best],
                      confidence=round(float(p[best]), 4), label_probability=round(float(p[given]), 4),
                      quality=0.0, side=side)


def load_label_issues(run_dir: str | Path) -> LabelIssues | None:
    """The saved list, or None when there is none (or it cannot be read)."""
    try:
        saved = read_json(Path(run_dir) / ISSUES_FILE)
    except RunError:
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        return None
    try:
        return LabelIssues.from_dict(saved)
    except (KeyError, TypeError, ValueError):
        return None


def label_issues_ready(run_dir: str | Path) -> bool:
    """The saved list is there, readable, and newer than the run's weights (a run trained on is looked
    at again)."""
    run = RunFolder(Path(run_dir))
    saved = run.path / ISSUES_FILE
    try:
        fresh = saved.is_file() and saved.stat().st_mtime >= run.weights_path.stat().st_mtime
    except OSError:
        return False
    return fresh and load_label_issues(run_dir) is not None
