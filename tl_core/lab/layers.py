"""Experiment 3: which layers should learn?

One run per freeze preset ('head': only the new classifier; 'last:N': also the last N layer groups;
'none': every layer), everything else the same. Besides accuracy and time, each run's gap between
its accuracy on the pictures it learned from and on the checking pictures is shown: a large gap is
overfitting made visible, the usual cost of letting many layers learn from few pictures.

The training accuracy is the one measured while the best epoch trained (on the pictures as the run
saw them, augmented when the whole model trains), so the gap is a guide, not an exact measure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tl_core.config import FreezeConfig
from tl_core.lab.common import ExperimentBase, check_preset, parse_list, run_words
from tl_core.lab.runner import Part, expected_work, model_factor
from tl_core.lab.words import next_best, pct, seconds_text, times, wilson

DEFAULT_PRESETS = ("head", "last:1", "last:2", "none")
OVERFIT_GAP = 0.10    # train accuracy this far above the checking accuracy is called overfitting


@dataclass
class LayersExperiment(ExperimentBase):
    """``tl lab layers DATA_DIR``: one run per freeze preset."""

    kind: ClassVar[str] = "layers"
    presets: tuple[str, ...] = DEFAULT_PRESETS
    epochs: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        self.presets = tuple(parse_list(self.presets, "freeze preset"))
        for preset in self.presets:
            FreezeConfig(preset=preset)   # the preset's own words for a typo

    def validate(self) -> None:
        super().validate()
        for preset in self.presets:
            check_preset(preset, self.model)

    def parts(self, folder) -> list[Part]:  # noqa: ARG002
        n_train, n_val = self.split_sizes()
        factor = model_factor(self.model, self.image_size)
        out = []
        for preset in self.presets:
            prepare, train = expected_work(FreezeConfig(preset=preset).kind, n_train, n_val, self.epochs, factor=factor)
            out.append(Part(key=preset, label=f"learning {run_words(preset)}",
                            config=self.run_config(preset=preset, name=f"lab layers {preset}"),
                            meta={"preset": preset}, prepare_work=prepare, train_work=train))
        return out

    def summarize(self, records: list[dict], parts_total: int) -> dict:  # noqa: ARG002
        order = {p: i for i, p in enumerate(self.presets)}
        results = [_result(r) for r in sorted(records, key=lambda r: order.get(r["meta"].get("preset"), 99))]
        return {"model": self.model, "epochs": self.epochs, "presets": list(self.presets), "results": results,
                "conclusion": conclusion(results)}


def _result(record: dict) -> dict:
    n = int(record.get("val_pictures") or 0)
    acc = float(record.get("accuracy") or 0.0)
    train = record.get("train_accuracy")
    return {"preset": record["meta"]["preset"], "learns": run_words(record["meta"]["preset"]), "accuracy": acc,
            "accuracy_ci": wilson(acc, n), "train_accuracy": train,
            "gap": None if train is None else round(float(train) - acc, 4), "seconds": record.get("seconds"),
            "trainable_params": record.get("trainable_params"), "total_params": record.get("total_params"),
            "epochs_done": record.get("epochs_done"), "val_pictures": n, "run_dir": record.get("run_dir"),
            "curve": record.get("curve", [])}


def conclusion(results: list[dict]) -> str:
    """The best setting, whether it can be told apart from the next, and overfitting or time."""
    if not results:
        return "No run finished yet, so there is nothing to compare."
    ranked = sorted(results, key=lambda r: -r["accuracy"])
    best = ranked[0]
    n = best["val_pictures"]
    first = (f"Letting {best['learns']} learn did best: {pct(best['accuracy'])} of the {n} checking pictures right in "
             f"{seconds_text(best['seconds'])}.")
    if len(ranked) == 1:
        return first + " Only one setting finished, so there is nothing to compare it with yet."
    second = ranked[1]
    _, verdict = next_best(f"letting {second['learns']} learn", second["accuracy"], second["accuracy_ci"],
                           best["accuracy"], best["accuracy_ci"], n)
    gaps = [r for r in results if r.get("gap") is not None]
    worst = max(gaps, key=lambda r: r["gap"]) if gaps else None
    if worst is not None and worst["gap"] >= OVERFIT_GAP:
        third = (f"With {worst['learns']} learning, the model got {pct(worst['train_accuracy'])} of its own pictures "
                 f"right but only {pct(worst['accuracy'])} of new ones: that gap is overfitting, the usual cost of "
                 "letting many layers learn from few pictures.")
    else:
        fast = min(results, key=lambda r: r["seconds"] or 0)
        slow = max(results, key=lambda r: r["seconds"] or 0)
        ratio = (slow["seconds"] or 0) / max(fast["seconds"] or 0, 1e-9)
        third = (f"No setting learned its own pictures much better than new ones (no sign of overfitting); letting "
                 f"{slow['learns']} learn took {times(ratio)} as long as {fast['learns']}.")
    return " ".join((first, verdict, third))


__all__ = ["LayersExperiment", "conclusion", "DEFAULT_PRESETS"]
