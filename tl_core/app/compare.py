"""Two or more runs side by side: their curves, what was set differently, how each category
changed, and one honest sentence on which is better and whether the difference is real."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_core.app.formatting import run_label
from tl_core.results.stats import Verdict, accuracy_interval, compare_accuracies
from tl_core.runs import RunFolder, read_json

# The settings worth showing, in plain words, in the order a beginner thinks about them.
SETTING_NAMES = {
    "data.root": "Pictures", "data.val_fraction": "Share kept aside to check", "data.split_seed": "Split seed",
    "model.name": "Model", "model.image_size": "Picture size", "model.weights": "Starting weights",
    "freeze.preset": "Layers that learn", "freeze.frozen_groups": "Layers kept fixed (custom)",
    "freeze.layer_lr_decay": "Layer-wise learning-rate decay", "train.epochs": "Epochs",
    "train.lr": "Learning rate", "train.batch_size": "Batch size", "train.augment": "Augmentation",
    "train.label_smoothing": "Label smoothing", "train.early_stopping_patience": "Stop early after",
    "train.balance": "Balance categories", "train.seed": "Random seed", "train.schedule": "Schedule",
    "train.weight_decay": "Weight decay", "train.warmup_epochs": "Warm-up epochs",
}


@dataclass
class RunScore:
    """A run's best validation accuracy as counts, with its 95% interval."""

    label: str
    accuracy: float | None
    correct: int
    total: int
    interval: tuple[float, float] | None


@dataclass
class Comparison:
    labels: dict[str, str]                          # run folder -> label
    curves: dict[str, list[dict]]                   # label -> epoch logs
    settings: list[dict] = field(default_factory=list)     # only the settings that differ
    per_class: list[dict] = field(default_factory=list)    # category -> accuracy per run
    scores: list[RunScore] = field(default_factory=list)   # best first
    verdict: Verdict | None = None                  # the best against the runner-up


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _score(run: RunFolder, label: str) -> RunScore:
    summary = run.summary()
    acc = summary.get("best_val_accuracy")
    total = sum(int(v) for v in (summary.get("val_counts") or {}).values() if isinstance(v, (int, float)))
    if not isinstance(acc, (int, float)) or acc < 0 or total <= 0:
        return RunScore(label, acc if isinstance(acc, (int, float)) and acc >= 0 else None, 0, total, None)
    correct = int(round(acc * total))
    return RunScore(label, float(acc), correct, total, accuracy_interval(correct, total))


def _per_picture(run: RunFolder) -> dict[str, bool] | None:
    """Right or wrong per validation picture, from the Results page's saved evaluation, if any."""
    data = read_json(run.path / "eval_val.json")
    items = (data or {}).get("items") if isinstance(data, dict) else None
    if not items:
        return None
    return {str(it.get("path")): it.get("true") == it.get("pred") for it in items if isinstance(it, dict)}


def compare_runs(run_dirs: list[str | Path]) -> Comparison:
    runs = [RunFolder.open(d) for d in run_dirs]
    labels = {str(r.path): run_label(r.describe()) for r in runs}
    seen: dict[str, int] = {}
    for key, label in list(labels.items()):   # two runs must never share a label on a chart
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[key] = f"{label} ({seen[label]})"
    comp = Comparison(labels=labels, curves={labels[str(r.path)]: r.epoch_logs() for r in runs})

    configs = {}
    for r in runs:
        try:
            configs[str(r.path)] = _flat(r.config().to_dict())
        except Exception:  # noqa: BLE001 - a damaged config shows as unknown settings
            configs[str(r.path)] = {}
    keys = [k for k in SETTING_NAMES if len({repr(c.get(k)) for c in configs.values()}) > 1]
    for k in keys:
        row = {"Setting": SETTING_NAMES[k]}
        for r in runs:
            value = configs[str(r.path)].get(k)
            if k == "data.root" and value:
                value = Path(str(value)).name
            row[labels[str(r.path)]] = "automatic" if value is None else str(value)
        comp.settings.append(row)

    per_class: dict[str, dict[str, Any]] = {}
    for r in runs:
        for category, acc in (r.summary().get("per_class_accuracy") or {}).items():
            per_class.setdefault(category, {"Category": category})[labels[str(r.path)]] = acc
    comp.per_class = list(per_class.values())

    comp.scores = sorted((_score(r, labels[str(r.path)]) for r in runs),
                         key=lambda s: -(s.accuracy if s.accuracy is not None else -1))
    scored = [s for s in comp.scores if s.accuracy is not None and s.total]
    if len(scored) >= 2:
        a, b = scored[0], scored[1]
        run_a = next(r for r in runs if labels[str(r.path)] == a.label)
        run_b = next(r for r in runs if labels[str(r.path)] == b.label)
        pa, pb = _per_picture(run_a), _per_picture(run_b)
        disagreements = None
        if pa and pb and set(pa) == set(pb):   # checked on the same pictures: compare picture by picture
            disagreements = (sum(1 for k in pa if pa[k] and not pb[k]), sum(1 for k in pa if pb[k] and not pa[k]))
            a = RunScore(a.label, a.accuracy, sum(pa.values()), len(pa), a.interval)
            b = RunScore(b.label, b.accuracy, sum(pb.values()), len(pb), b.interval)
        comp.verdict = compare_accuracies(a.label, a.correct, a.total, b.label, b.correct, b.total, disagreements)
    return comp


__all__ = ["Comparison", "RunScore", "compare_runs", "SETTING_NAMES"]
