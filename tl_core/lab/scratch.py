"""Experiment 1: pretrained against from scratch.

The same model, pictures, split and number of passes, trained twice: once starting from its ImageNet
weights with only the new classifier learning ('head'), once from random weights with every layer
learning ('scratch'). The claim every text about transfer learning makes (good accuracy from little
data, for a fraction of the compute) shown on the user's own pictures: both curves on the same axes,
accuracy and seconds side by side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tl_core.lab.common import ExperimentBase
from tl_core.lab.runner import Part, expected_work, model_factor
from tl_core.lab.words import pct, range_text, seconds_text, tell_apart, times, wilson

ARMS = (("pretrained", "head", "Starting from ImageNet weights"), ("scratch", "scratch", "Starting from random weights"))


@dataclass
class ScratchExperiment(ExperimentBase):
    """``tl lab scratch DATA_DIR``: the same training from ImageNet weights and from random weights."""

    kind: ClassVar[str] = "scratch"
    epochs: int = 3

    def parts(self, folder) -> list[Part]:  # noqa: ARG002 - ordinary runs on the data folder itself
        n_train, n_val = self.split_sizes()
        factor = model_factor(self.model, self.image_size)
        out = []
        for arm, preset, words in ARMS:
            prepare, train = expected_work(preset, n_train, n_val, self.epochs, factor=factor)
            out.append(Part(key=arm, label=words, config=self.run_config(preset=preset, name=f"lab {arm}"),
                            meta={"arm": arm, "preset": preset}, prepare_work=prepare, train_work=train))
        return out

    def summarize(self, records: list[dict], parts_total: int) -> dict:
        arms = {r["meta"]["arm"]: _arm(r) for r in records if r.get("meta", {}).get("arm") in ("pretrained", "scratch")}
        return {"model": self.model, "epochs": self.epochs, "pretrained": arms.get("pretrained"),
                "scratch": arms.get("scratch"), "conclusion": conclusion(arms.get("pretrained"), arms.get("scratch"),
                                                                          self.epochs)}


def _arm(record: dict) -> dict:
    n = int(record.get("val_pictures") or 0)
    acc = float(record.get("accuracy") or 0.0)
    return {"accuracy": acc, "accuracy_ci": wilson(acc, n), "seconds": record.get("seconds"),
            "epochs_done": record.get("epochs_done"), "val_pictures": n, "run_dir": record.get("run_dir"),
            "trainable_params": record.get("trainable_params"), "total_params": record.get("total_params"),
            "curve": record.get("curve", [])}


def conclusion(pretrained: dict | None, scratch: dict | None, epochs: int) -> str:
    """Two or three sentences from the numbers: both results, whether they differ, what it cost."""
    if not pretrained or not scratch:
        done = pretrained or scratch
        if not done:
            return "No run finished, so there is nothing to compare yet."
        which = "from ImageNet weights" if pretrained else "from random weights"
        return (f"Only the run {which} finished: {pct(done['accuracy'])} of the {done['val_pictures']} checking "
                f"pictures right ({range_text(done['accuracy_ci'])}, 95% range). Run the experiment to the end to "
                "compare the two starts.")
    n = pretrained["val_pictures"]
    first = (f"Starting from ImageNet weights, the model got {pct(pretrained['accuracy'])} of the {n} checking pictures "
             f"right ({range_text(pretrained['accuracy_ci'])}) in {seconds_text(pretrained['seconds'])}; from random "
             f"weights, with the same {epochs} passes over the same pictures, {pct(scratch['accuracy'])} "
             f"({range_text(scratch['accuracy_ci'])}) in {seconds_text(scratch['seconds'])}.")
    _, verdict = tell_apart("the pretrained start", pretrained["accuracy"], pretrained["accuracy_ci"],
                            "the random start", scratch["accuracy"], scratch["accuracy_ci"], n)
    ratio = (scratch["seconds"] or 0) / max(pretrained["seconds"] or 0, 1e-9)
    learned = scratch.get("trainable_params") or 0
    head = pretrained.get("trainable_params") or 0
    if ratio >= 1.5 and learned and head:
        cost = (f"From scratch took {times(ratio)} as long, because all {learned:,} of its weights had to learn; the "
                f"pretrained model only taught its new classifier ({head:,} weights).")
    else:
        cost = (f"Both took about as long here ({seconds_text(pretrained['seconds'])} and "
                f"{seconds_text(scratch['seconds'])}).")
    return " ".join((first, verdict, cost))


__all__ = ["ScratchExperiment", "conclusion"]
