"""What a training run says while it runs: event names, their payloads, stage and warning words.

The training loop publishes these events to its callbacks; :class:`~tl_core.training.callbacks.RunRecorder`
writes each one as a line of ``metrics.jsonl``; the CLI prints them; the app's live view reads them
back. They all use the names below, so renaming an event is a change in one place. The names are
the callback method names (Keras' ``on_epoch_end``), which is also what old run folders contain.

One line of ``metrics.jsonl`` is ``{"event": NAME, "time": UNIX_SECONDS, **payload}`` with:

==================  ====================================================================
``on_fit_start``    ``info``: model, weights, device, mode, epochs, steps_per_epoch, batch_size,
                    lr, train_images, val_images, classes, trainable/total params, ...
``on_prepare``      ``stage`` (one of :data:`STAGE_LABELS`), ``done``, ``total``
``on_batch_end``    ``step``, ``logs``: epoch, loss, lr, images_per_sec, progress (0..1 of the run)
``on_epoch_end``    ``epoch``, ``logs``: train_loss, train_accuracy, val_loss, val_accuracy, lr,
                    epoch_seconds, images_per_sec, eta_seconds, best_val_accuracy, best_epoch, improved
``on_warning``      ``kind`` (one of :data:`WARNING_TITLES`), ``message`` (plain language)
``on_fit_end``      ``logs``: the :class:`~tl_core.training.loop.FitResult` without its history
==================  ====================================================================
"""
from __future__ import annotations

import time
from typing import Any

FIT_START = "on_fit_start"
PREPARE = "on_prepare"
BATCH_END = "on_batch_end"
EPOCH_END = "on_epoch_end"
WARNING = "on_warning"
FIT_END = "on_fit_end"
EVENTS = (FIT_START, PREPARE, BATCH_END, EPOCH_END, WARNING, FIT_END)

# The one-time preparation before the first epoch, in the words the CLI and the app show.
STAGE_LABELS = {"check": "Checking images", "decode": "Reading images", "features": "Computing features once from your pictures",
                "weights": "Loading pretrained weights"}

# Every warning kind the loop can publish, with the title the app shows above its message.
WARNING_TITLES = {"overfitting": "Memorising instead of learning", "loss_not_falling": "Not learning yet",
                  "nan": "Training broke down", "early_stop": "Stopped early", "unreadable": "Skipped a picture",
                  "no_feature_cache": "Slower training", "cache_not_saved": "Not kept for next time",
                  "data_problem": "A problem in your pictures", "category_not_checked": "A category is not checked"}


def stage_label(stage: str | None) -> str:
    """The words for a preparation stage (the stage name itself when it is not a known one)."""
    return STAGE_LABELS.get(stage or "", stage or "Preparing")


def warning_title(kind: str) -> str:
    return WARNING_TITLES.get(kind, kind.replace("_", " ").capitalize())


def make_event(name: str, **payload: Any) -> dict:
    """One ``metrics.jsonl`` record: the event name, the time, and its plain-data payload."""
    if name not in EVENTS:
        raise ValueError(f"unknown event {name!r}")
    return {"event": name, "time": time.time(), **payload}
