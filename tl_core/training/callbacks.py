"""Callbacks: what listens to the training loop, and the policies that steer it.

The loop publishes events with plain-data payloads, in the style of Keras and fastai callbacks:
``on_fit_start(info)``, ``on_prepare(stage, done, total)``, ``on_batch_end(step, logs)``,
``on_epoch_end(epoch, logs)``, ``on_warning(kind, message)``, ``on_fit_end(logs)``, and, every
step before the optimizer steps, ``after_loss(step, loss)``. A callback sees the trainer as
``self.trainer`` (set before ``on_fit_start``, like Keras' ``set_model``) and can end the run
cleanly after the current epoch with ``self.trainer.stop_training = True``, or fail it by raising.

The policies here are the ones every fit runs, wired in :func:`default_callbacks`:
:class:`NanGuard`, :class:`SaveBestWeights`, :class:`RunRecorder`, :class:`DiagnosisWarnings`,
:class:`EarlyStopping` and :class:`RecordTimings`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn

from tl_core.errors import TransferLabError
from tl_core.runs import RunFolder
from tl_core.runs.events import (BATCH_END, EPOCH_END, FIT_END, FIT_START, PREPARE, WARNING, make_event,
                                 stage_label)

if TYPE_CHECKING:
    from tl_core.config import RunConfig
    from tl_core.training.loop import Trainer

NAN_MESSAGE = ("The training loss became NaN (not a number), so training was stopped. The learning "
               "rate is probably too high: try one 10 times smaller. The best weights so far are kept.")


class Callback:
    """Override any of these; payloads are plain Python data (JSON-serialisable)."""

    trainer: "Trainer | None" = None

    def set_trainer(self, trainer: "Trainer") -> None:
        self.trainer = trainer

    def on_fit_start(self, info: dict) -> None: ...
    def on_prepare(self, stage: str, done: int, total: int) -> None: ...
    def after_loss(self, step: int, loss: torch.Tensor) -> None: ...   # every step, before the optimizer
    def on_batch_end(self, step: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_warning(self, kind: str, message: str) -> None: ...
    def on_fit_end(self, logs: dict) -> None: ...


class CallbackList(Callback):
    """Calls each callback in turn, in the order given."""

    def __init__(self, callbacks: Iterable[Callback]):
        self.callbacks = list(callbacks)
        # after_loss runs every step: only the callbacks that define it are called
        self._loss_hooks = [cb for cb in self.callbacks if type(cb).after_loss is not Callback.after_loss]

    def set_trainer(self, trainer):
        self.trainer = trainer
        for cb in self.callbacks:
            cb.set_trainer(trainer)

    def on_fit_start(self, info):
        for cb in self.callbacks:
            cb.on_fit_start(info)

    def on_prepare(self, stage, done, total):
        for cb in self.callbacks:
            cb.on_prepare(stage, done, total)

    def after_loss(self, step, loss):
        for cb in self._loss_hooks:
            cb.after_loss(step, loss)

    def on_batch_end(self, step, logs):
        for cb in self.callbacks:
            cb.on_batch_end(step, logs)

    def on_epoch_end(self, epoch, logs):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_warning(self, kind, message):
        for cb in self.callbacks:
            cb.on_warning(kind, message)

    def on_fit_end(self, logs):
        for cb in self.callbacks:
            cb.on_fit_end(logs)


# -- recording ----------------------------------------------------------------------------------

class RunRecorder(Callback):
    """Writes every event to the run folder's metrics.jsonl and keeps status.json current."""

    def __init__(self, run: RunFolder):
        self.run = run
        self.epochs = 0
        self._last_prepare = 0.0

    def _event(self, name: str, **payload: Any) -> None:
        self.run.append_event(make_event(name, **payload))

    def on_fit_start(self, info):
        self.epochs = info.get("epochs", 0)
        self._event(FIT_START, info=info)
        self.run.write_status("running", "Training started.", epoch=0, epochs=self.epochs)

    def on_prepare(self, stage, done, total):
        now = time.time()
        if done == total or now - self._last_prepare > 0.5:
            self._last_prepare = now
            self._event(PREPARE, stage=stage, done=done, total=total)
            self.run.write_status("running", f"{stage_label(stage)}: {done}/{total}",
                                  stage=stage, stage_done=done, stage_total=total)

    def on_batch_end(self, step, logs):
        self._event(BATCH_END, step=step, logs=logs)

    def on_epoch_end(self, epoch, logs):
        self._event(EPOCH_END, epoch=epoch, logs=logs)
        self.run.write_status("running", f"Epoch {epoch} of {self.epochs} done.", epoch=epoch, epochs=self.epochs,
                              best_val_accuracy=logs.get("best_val_accuracy"), eta_seconds=logs.get("eta_seconds"),
                              stage="train")

    def on_warning(self, kind, message):
        self._event(WARNING, kind=kind, message=message)

    def on_fit_end(self, logs):
        self._event(FIT_END, logs=logs)


@dataclass
class BestEpoch:
    """The best epoch so far (validation accuracy, then loss) with its weights, kept in memory."""
    epoch: int | None = None
    val_accuracy: float = -1.0
    val_loss: float = math.inf
    state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_loss: float, val_accuracy: float, model: nn.Module) -> bool:
        improved = val_accuracy > self.val_accuracy or (val_accuracy == self.val_accuracy and val_loss < self.val_loss)
        if improved:
            self.epoch, self.val_accuracy, self.val_loss = epoch, val_accuracy, val_loss
            # only what training can change is copied: a frozen tensor stays as it is for the whole run
            # (classifier-only runs copied 3.4 M numbers per improved epoch for 6,405 that change)
            changing = changing_state_names(model)
            self.state = {k: v.detach().to("cpu", copy=k in changing) for k, v in model.state_dict().items()}
        return improved


def changing_state_names(model: nn.Module) -> set[str]:
    """The state-dict entries training can change: trainable parameters, and the buffers (BatchNorm
    statistics) of every module that trains in train mode. A module whose parameters are all frozen is
    kept in eval mode (:func:`~tl_core.models.freezing.set_train_mode`, the same rule), so its buffers stay."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        names.update(dot + n for n, p in module.named_parameters(recurse=False) if p.requires_grad)
        params = list(module.parameters())
        if not params or any(p.requires_grad for p in params):
            names.update(dot + n for n, _ in module.named_buffers(recurse=False))
    return names


class SaveBestWeights(Callback):
    """Writes the best epoch's weights (``trainer.best``, a :class:`BestEpoch` the loop keeps) to
    the run folder whenever an epoch improved on it, like fastai's ``SaveModelCallback``: a crash
    later still leaves a model."""

    def __init__(self, run: RunFolder):
        self.run = run

    def on_epoch_end(self, epoch, logs):
        if logs["improved"]:
            best = self.trainer.best
            self.run.save_weights(best.state, {"epoch": str(best.epoch), "val_accuracy": f"{best.val_accuracy:.6f}"})


# -- policies -----------------------------------------------------------------------------------

NAN_WEIGHTS_MESSAGE = ("The starting weights ({source}) contain NaN (not a number) or infinite values, so the "
                       "model cannot learn from them; the learning rate is not the cause. The weights file is "
                       "damaged: download or copy it again, or choose other weights.")


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of the model's floating-point weights and buffers that hold NaN or infinite values."""
    return [name for name, t in model.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


class NanGuard(Callback):
    """Fails the run with advice as soon as a step's loss is not finite, before the optimizer
    steps on it (the weights kept are those of the best epoch so far). The starting weights are
    checked first: a loss that is NaN because the weights file itself holds NaN is not the
    learning rate's fault, and the advice must say so."""

    def on_fit_start(self, info):
        state = getattr(self.trainer, "state", None)
        model = getattr(state, "model", None)
        if isinstance(model, nn.Module) and non_finite_weights(model):
            source = getattr(getattr(state, "weights_source", None), "description", None) or "the pretrained weights"
            raise TransferLabError(NAN_WEIGHTS_MESSAGE.format(source=source))

    def after_loss(self, step, loss):
        if not torch.isfinite(loss):
            raise TransferLabError(NAN_MESSAGE)


class EarlyStopping(Callback):
    """Ends the run (as finished) when validation has not improved for ``patience`` epochs, like
    Keras' ``EarlyStopping``; nothing to stop after the last epoch."""

    def __init__(self, patience: int):
        self.patience = patience
        self.epochs = 0
        self.bad_epochs = 0

    def on_fit_start(self, info):
        self.epochs = info.get("epochs", 0)
        self.bad_epochs = 0

    def on_epoch_end(self, epoch, logs):
        self.bad_epochs = 0 if logs["improved"] else self.bad_epochs + 1
        if self.bad_epochs >= self.patience and epoch < self.epochs:
            self.trainer.callbacks.on_warning(
                "early_stop", f"Validation accuracy has not improved for {self.patience} epochs, so training "
                              f"stopped early at epoch {epoch}; the best epoch ({logs['best_epoch']}) is kept.")
            self.trainer.stop_training = True


def diagnose(history: list[dict]) -> list[tuple[str, str]]:
    """Plain-language warnings from the epoch logs so far (each kind reported once by the caller)."""
    out = []
    if len(history) >= 3:
        last = history[-3:]
        gap = last[-1]["train_accuracy"] - last[-1]["val_accuracy"]
        rising = last[0]["val_loss"] < last[1]["val_loss"] < last[2]["val_loss"]
        if gap > 0.15 and rising:
            out.append(("overfitting",
                        f"The model is memorising the training images: training accuracy "
                        f"{last[-1]['train_accuracy']:.0%} but validation {last[-1]['val_accuracy']:.0%}, and the "
                        "validation loss has risen for two epochs. More images, more frozen layers or stronger "
                        "augmentation help; the best epoch's weights are kept."))
        first = history[0]["train_loss"]
        if all(h["train_loss"] >= 0.98 * first for h in history[1:]):
            out.append(("loss_not_falling",
                        "The training loss is not going down. Try a smaller learning rate, check that the "
                        "folders really hold different categories, or train more layers."))
    return out


class DiagnosisWarnings(Callback):
    """After each epoch, warns in plain language about overfitting or a loss that does not fall
    (see :func:`diagnose`), each kind once per run."""

    def __init__(self):
        self.history: list[dict] = []
        self.warned: set[str] = set()

    def on_fit_start(self, info):
        self.history, self.warned = [], set()

    def on_epoch_end(self, epoch, logs):
        self.history.append(dict(logs, epoch=epoch))
        for kind, message in diagnose(self.history):
            if kind not in self.warned:
                self.warned.add(kind)
                self.trainer.callbacks.on_warning(kind, message)


class RecordTimings(Callback):
    """Remembers how long this run's preparation and epochs took on this computer, so that later
    estimates for the same model and setting come closer to the truth
    (:func:`tl_core.training.estimate.record_run`). Never fails a run."""

    def __init__(self, config: "RunConfig"):
        self.config = config
        self.info: dict = {}
        self.epoch_seconds: list[float] = []

    def on_fit_start(self, info):
        self.info, self.epoch_seconds = info, []

    def on_epoch_end(self, epoch, logs):
        self.epoch_seconds.append(float(logs["epoch_seconds"]))

    def on_fit_end(self, logs):
        if logs.get("status") == "failed" or not self.epoch_seconds or not self.info:
            return
        from tl_core.training import estimate

        try:
            state = self.trainer.state if self.trainer is not None else None
            read = estimate.sample_read_seconds(state.train_paths) if state is not None else None
            estimate.record_run(self.config, self.info["mode"], self.info["train_images"], self.info["val_images"],
                                self.info.get("prepare_seconds"), self.epoch_seconds, read,
                                self.info.get("feature_cache_hit"))
        except Exception:  # noqa: BLE001 - remembering a timing is never worth failing a finished run
            pass


def default_callbacks(config: "RunConfig", run: RunFolder | None, user: Iterable[Callback] = (),
                      timings: bool = True) -> list[Callback]:
    """Every callback of a fit, in the order they act: the NaN guard first (before any other
    per-step hook); the best weights are on disk before the epoch is recorded; the recorder sees
    each event before the caller's callbacks (the run folder is what survives a crash); the
    diagnosis and early-stop warnings come after every callback has seen the epoch; the run's
    timings are remembered last (not for a run of several processes: their times say nothing about
    one process on this computer)."""
    patience = config.train.early_stopping_patience
    from tl_core.training.calibration import NoveltyCalibration  # here, not at the top: it imports this module
    return [NanGuard(),
            *([SaveBestWeights(run), RunRecorder(run)] if run is not None else []),
            *user,
            DiagnosisWarnings(),
            *([EarlyStopping(patience)] if patience is not None else []),
            *([RecordTimings(config)] if timings else []),
            *([NoveltyCalibration(run)] if run is not None else [])]  # "none of these", for the best weights
