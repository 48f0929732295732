"""How good is the trained model, and where does it go wrong?

Accuracy alone hides the failures a beginner most needs to see: a model that always answers the
majority class can score 90% on an imbalanced folder. So next to accuracy we report balanced
accuracy (the mean of per-class recalls), the accuracy's 95% range (``accuracy_ci``: how sure the
number is for this many pictures), precision/recall/F1 per class, the confusion matrix
(rows = true class, columns = predicted class) and every prediction with its confidence, which is
what the Results page needs to show "the images behind a cell" and "the most confidently wrong".

The metric arithmetic is a small pure numpy function (:func:`compute_metrics`) so it can be
checked by hand in the tests and does not pull scikit-learn into the app at run time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tl_core.data.images import load_image
from tl_core.data.scan import scan_folder
from tl_core.errors import DataError, RunError, TransferLabError
from tl_core.files import write_json_atomic
from tl_core.results.stats import accuracy_interval
from tl_core.runs import RunFolder, read_json

# Progress callbacks receive (images done, images in total); the app turns this into a bar.
ProgressFn = Callable[[int, int], None]

EVAL_PREFIX = "eval_"
VALIDATION_NAME = "val"


# ----------------------------------------------------------------------------------------------
# Pure metrics
# ----------------------------------------------------------------------------------------------
def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0``: a class the model never predicts has precision 0
    (not NaN), which is what a beginner should read, and NaN would break JSON."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``C[t, p]`` of images of true class ``t`` predicted as ``p``."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``y_true``/``y_pred`` are class indices into ``classes``. Conventions (same as scikit-learn
    with ``zero_division=0``): precision of a never-predicted class is 0, recall of a class with
    no images is 0, F1 is 0 when precision + recall is 0; balanced accuracy averages recall over
    the classes that have at least one image (a class absent from the folder is not a failure).
    """
    classes = [str(c) for c in classes]
    k = len(classes)
    if k == 0:
        raise TransferLabError("The model has no classes, so there is nothing to evaluate.")
    t = np.asarray(list(y_true), dtype=np.int64).reshape(-1)
    p = np.asarray(list(y_pred), dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise TransferLabError(f"There are {t.size} true labels but {p.size} predictions; they must match one to one.")
    if t.size == 0:
        raise TransferLabError("There are no images to evaluate.")
    for name, arr in (("true label", t), ("prediction", p)):
        if arr.min() < 0 or arr.max() >= k:
            raise TransferLabError(f"A {name} index is outside the {k} known classes.")

    cm = confusion_matrix(t, p, k)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    correct = np.diag(cm)
    precision = _safe_div(correct, predicted)
    recall = _safe_div(correct, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    per_class = {
        c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
            "support": int(support[i]), "predicted": int(predicted[i])}
        for i, c in enumerate(classes)
    }
    return {
        "classes": classes,
        "n": int(t.size),
        "accuracy": float(correct.sum() / t.size),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion": cm.tolist(),
        "confusion_normalized": _safe_div(cm, support[:, None]).tolist(),
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
@dataclass
class EvalReport:
    """Everything the Results page shows about one evaluation, as plain data.

    ``items`` holds one entry per evaluated image: ``path``, ``true`` and ``pred`` (class names),
    ``confidence`` (the probability of the predicted class) and ``probs`` (all classes, in
    ``classes`` order). ``skipped`` lists the images that could not be read, with the reason.
    """

    classes: list[str]
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, dict]
    confusion: list[list[int]]
    confusion_normalized: list[list[float]]
    items: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    macro_f1: float = 0.0
    name: str = ""
    data_dir: str | None = None
    model_name: str = ""

    @property
    def n(self) -> int:
        return int(sum(sum(row) for row in self.confusion))

    @property
    def correct(self) -> int:
        """Pictures predicted right (the confusion matrix's diagonal)."""
        return int(sum(row[i] for i, row in enumerate(self.confusion) if i < len(row)))

    @property
    def accuracy_ci(self) -> tuple[float, float]:
        """The accuracy's 95% range (Wilson's interval, :func:`tl_core.results.stats.accuracy_interval`):
        90% on 30 pictures could be 74-97%, so one number alone claims more than the pictures show.
        Computed from the confusion matrix, so a saved evaluation from before it existed has it too."""
        return accuracy_interval(self.correct, self.n)

    @classmethod
    def from_predictions(cls, classes: Sequence[str], items: list[dict], skipped: list[dict] | None = None,
                         **meta: Any) -> "EvalReport":
        """Build the report from per-image items (``true``/``pred`` are class names)."""
        index = {c: i for i, c in enumerate(classes)}
        m = compute_metrics([index[it["true"]] for it in items], [index[it["pred"]] for it in items], classes)
        return cls(classes=list(m["classes"]), accuracy=m["accuracy"], balanced_accuracy=m["balanced_accuracy"],
                   per_class=m["per_class"], confusion=m["confusion"],
                   confusion_normalized=m["confusion_normalized"], items=list(items), skipped=list(skipped or []),
                   macro_f1=m["macro_f1"], **meta)

    def to_dict(self, include_items: bool = False) -> dict:
        """Plain JSON data. The default is the compact form the CLI prints as its last line (the
        metrics plus the 12 most confident mistakes); ``include_items=True`` adds every image's
        prediction, which is what ``eval_<name>.json`` stores for the Results page."""
        out = {"name": self.name, "data_dir": self.data_dir, "model": self.model_name, "classes": list(self.classes),
               "n": self.n, "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
               "balanced_accuracy": self.balanced_accuracy,
               "macro_f1": self.macro_f1, "per_class": self.per_class, "confusion": self.confusion,
               "confusion_normalized": self.confusion_normalized, "skipped": len(self.skipped)}
        if include_items:
            out["items"] = self.items
            out["skipped_images"] = self.skipped
        else:
            out["most_confident_wrong"] = [{k: it[k] for k in ("path", "true", "pred", "confidence") if k in it}
                                           for it in self.most_confident_wrong(12)]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "EvalReport":
        """Rebuild a saved report (``eval_<name>.json``)."""
        try:
            return cls(classes=list(data["classes"]), accuracy=float(data["accuracy"]),
                       balanced_accuracy=float(data["balanced_accuracy"]), per_class=dict(data["per_class"]),
                       confusion=[list(map(int, r)) for r in data["confusion"]],
                       confusion_normalized=[list(map(float, r)) for r in data["confusion_normalized"]],
                       items=list(data.get("items") or []), skipped=list(data.get("skipped_images") or []),
                       macro_f1=float(data.get("macro_f1", 0.0)), name=str(data.get("name") or ""),
                       data_dir=data.get("data_dir"), model_name=str(data.get("model") or ""))
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(f"This saved evaluation is incomplete or damaged ({err}); evaluate again.") from None

    def _label(self, value: str | int) -> str:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= int(value) < len(self.classes):
                raise TransferLabError(f"There is no class number {value}; this model has {len(self.classes)}.")
            return self.classes[int(value)]
        if value not in self.classes:
            raise TransferLabError(f"Unknown class {value!r}. The classes are: {', '.join(self.classes)}.")
        return str(value)

    def wrong(self) -> list[dict]:
        return [it for it in self.items if it["true"] != it["pred"]]

    def most_confident_wrong(self, k: int = 12) -> list[dict]:
        """The mistakes the model was surest about: often mislabelled images or a shortcut the
        model learned (a background, a watermark), so they are the first thing to look at."""
        return sorted(self.wrong(), key=lambda it: -float(it.get("confidence", 0.0)))[: max(0, int(k))]

    def cell(self, true_label: str | int, pred_label: str | int) -> list[dict]:
        """The images behind one confusion-matrix cell (labels by name or index), most confident first."""
        t, p = self._label(true_label), self._label(pred_label)
        found = [it for it in self.items if it["true"] == t and it["pred"] == p]
        return sorted(found, key=lambda it: -float(it.get("confidence", 0.0)))


# ----------------------------------------------------------------------------------------------
# Reading images and records
# ----------------------------------------------------------------------------------------------
def record_parts(record: Any) -> tuple[str, Any]:
    """(path, label) from a tuple, a dict or an object with ``path``/``label`` attributes."""
    if isinstance(record, dict):
        path, label = record.get("path"), record.get("label", record.get("class"))
    elif isinstance(record, (tuple, list)) and len(record) >= 2:
        path, label = record[0], record[1]
    else:
        path = getattr(record, "path", None)
        label = next((getattr(record, a) for a in ("label", "class_name", "label_name", "cls")
                      if getattr(record, a, None) is not None), None)
    if path is None or label is None:
        raise TransferLabError("Each image to evaluate needs a path and a class label.")
    return str(path), label


def _label_name(label: Any, classes: list[str]) -> str:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if not 0 <= int(label) < len(classes):
            raise TransferLabError(f"Class number {label} does not exist: the model knows {len(classes)} classes.")
        return classes[int(label)]
    return str(label)


def evaluate_records(loaded: Any, records: Iterable[Any], progress: ProgressFn | None = None,
                     batch_size: int = 32, **meta: Any) -> EvalReport:
    """Predict every record and compare with its label.

    ``records``: ``(path, label)`` pairs, ``{"path", "label"}`` dicts or objects with ``path`` and
    ``label``; labels are class names or indices into ``loaded.classes``. Unreadable images are
    skipped and listed in ``report.skipped`` rather than failing the whole evaluation.
    """
    classes = list(loaded.classes)
    pairs = [(p, _label_name(lab, classes)) for p, lab in map(record_parts, records)]
    unknown = sorted({lab for _, lab in pairs} - set(classes))
    if unknown:
        raise DataError(
            f"These classes are not ones the model was trained on: {', '.join(unknown)}. "
            f"The model knows: {', '.join(classes)}. Rename or remove those folders and try again.")
    if not pairs:
        raise DataError("There are no images to evaluate.")
    total = len(pairs)
    items: list[dict] = []
    skipped: list[dict] = []
    done = 0
    for start in range(0, total, batch_size):
        chunk = pairs[start:start + batch_size]
        images, kept = [], []
        for path, label in chunk:
            try:
                images.append(load_image(path))
                kept.append((path, label))
            except Exception as err:  # noqa: BLE001 - one bad file must not stop the evaluation
                reason = getattr(err, "reason", None) or f"not a readable image ({type(err).__name__})"
                skipped.append({"path": path, "reason": str(reason)})
        if images:
            probs = loaded.predict_proba(images, batch_size=batch_size).numpy()
            for (path, label), row in zip(kept, probs):
                j = int(row.argmax())
                items.append({"path": path, "true": label, "pred": classes[j], "confidence": float(row[j]),
                              "probs": [round(float(v), 6) for v in row]})
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    if not items:
        raise DataError(f"None of the {total} images could be read, so nothing was evaluated. "
                        f"First problem: {skipped[0]['path']}: {skipped[0]['reason']}.")
    meta.setdefault("model_name", getattr(loaded, "model_name", ""))
    return EvalReport.from_predictions(classes, items, skipped, **meta)


def scan_class_folders(data_dir: str | Path) -> list[tuple[str, str]]:
    """``(path, class)`` for every image under ``data_dir/<class>/...`` (sub-folders included).

    Read by exactly the rules of the training folder (ignored names, Unicode class names,
    train/val layout); a test folder may hold only some of the classes.
    """
    scan = scan_folder(data_dir, min_classes=1, what="test folder")
    return [(r.path, r.label) for r in scan.records]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:60] or "data"


def _resolve(path: str, roots: list[Path]) -> str:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    for root in roots:
        if (root / p).exists():
            return str(root / p)
    return str(p)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, progress: ProgressFn | None = None,
                 name: str | None = None, device: str = "cpu") -> EvalReport:
    """Evaluate a run on its validation images (``data_dir=None``) or on a separate test folder.

    The report is also saved as ``run_dir/eval_<name>.json`` (``eval_val.json`` for the
    validation split, ``eval_test-<folder>.json`` for a test folder) so the Results page can show
    it again after a restart without recomputing.
    """
    from tl_core.results.inference import load_run_model

    run = RunFolder.open(run_dir)
    loaded = load_run_model(run.path, device=device)
    if data_dir is None:
        raw = run.summary().get("val_records")
        if not raw or not isinstance(raw, list):
            raise RunError(f"Run {run.run_id} has no list of validation images (it may have stopped before "
                           "training started, or summary.json was changed). Evaluate it on a test folder instead.")
        roots = []
        try:
            roots.append(Path(run.config().data.root))
        except TransferLabError:
            pass
        records = [(_resolve(p, roots), lab) for p, lab in map(record_parts, raw)]
        name = name or VALIDATION_NAME
        source = None
    else:
        records = scan_class_folders(data_dir)
        name = name or f"test-{_slug(Path(data_dir).expanduser().resolve().name)}"
        source = str(data_dir)
    from tl_core.runtime.allocator import training_allocator

    with training_allocator():  # batch inference frees large activations too (see tl_core.runtime.allocator)
        report = evaluate_records(loaded, records, progress=progress, name=_slug(name), data_dir=source)
    write_json_atomic(run.path / f"{EVAL_PREFIX}{report.name}.json", report.to_dict(include_items=True))
    return report


def list_evaluations(run_dir: str | Path) -> list[str]:
    """Names of the saved evaluations of a run (``val`` first)."""
    names = [p.stem[len(EVAL_PREFIX):] for p in Path(run_dir).glob(f"{EVAL_PREFIX}*.json")]
    return sorted(names, key=lambda n: (n != VALIDATION_NAME, n))


def load_evaluation(run_dir: str | Path, name: str = VALIDATION_NAME) -> EvalReport | None:
    """A saved evaluation, or None when that one was never computed."""
    data = read_json(Path(run_dir) / f"{EVAL_PREFIX}{_slug(name)}.json")
    return EvalReport.from_dict(data) if data else None


__all__ = ["EvalReport", "compute_metrics", "confusion_matrix", "evaluate_records", "evaluate_run",
           "scan_class_folders", "list_evaluations", "load_evaluation", "record_parts"]
