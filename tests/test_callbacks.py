"""The loop's policies as callbacks: units, and through real (tiny) fits on Fashion-MNIST folders."""
from __future__ import annotations

import json

import pytest
import torch

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.runs import RunFolder
from tl_core.training import Callback, Trainer, train_run


def make_config(root, tmp_path, preset="head", epochs=3, size=64, **train):
    # a cache folder of the test's own: whether the features are computed or loaded must not
    # depend on which tests ran before
    return RunConfig(data=DataConfig(root=str(root), val_fraction=0.25),
                     model=ModelConfig("tf_efficientnet_lite0", weights="offline", image_size=size),
                     freeze=FreezeConfig(preset),
                     train=TrainConfig(epochs=epochs, batch_size=16, cache_dir=str(tmp_path / "cache"), **train))


def _weights_epoch(run: RunFolder) -> str | None:
    if not run.has_weights():
        return None
    from safetensors import safe_open

    with safe_open(str(run.weights_path), "pt") as fh:
        return fh.metadata().get("epoch")


# -- the event order of metrics.jsonl (written against the loop before the refactor) --------------

# (val_loss, val_accuracy) of epochs 1..5: epoch 2 improves, then three bad epochs with a rising
# validation loss (overfitting after epoch 4) and patience 3 stops at epoch 5 of 6
SCRIPTED_VAL = [(1.0, 0.25), (0.9, 0.5), (1.0, 0.0), (1.1, 0.0), (1.2, 0.0)]

EXPECTED_ORDER = [
    ("on_prepare", "check"),
    ("on_prepare", "features"),   # one streamed pass over train and val: reading + frozen layers (issue 11)
    ("on_fit_start",),
    ("on_batch_end", 2),
    ("on_epoch_end", 1, True, "1"),
    ("on_batch_end", 4),
    ("on_epoch_end", 2, True, "2"),
    ("on_batch_end", 5),   # log_every_steps=5
    ("on_batch_end", 6),
    ("on_epoch_end", 3, False, "2"),
    ("on_batch_end", 8),
    ("on_epoch_end", 4, False, "2"),
    ("on_warning", "overfitting"),
    ("on_batch_end", 10),
    ("on_epoch_end", 5, False, "2"),
    ("on_warning", "early_stop"),
    ("on_fit_end",),
]

PREPARE_KEYS = ["stage", "stage_done", "stage_total"]
EPOCH_KEYS = ["best_val_accuracy", "epoch", "epochs", "eta_seconds", "stage"]
# the preparation stages are worded by tl_core.runs.events.stage_label (the words the CLI and the
# app show; before the refactor, the loop had its own table: "Computing features: 44/44")
EXPECTED_STATUSES = [
    ("queued", "Waiting to start.", []),
    ("running", "Preparing the data and the model.", ["epoch", "epochs"]),
    ("running", "Checking images: 60/60", PREPARE_KEYS),
    ("running", "Computing features once from your pictures: 60/60", PREPARE_KEYS),
    ("running", "Training started.", ["epoch", "epochs"]),
    *[("running", f"Epoch {e} of 6 done.", EPOCH_KEYS) for e in range(1, 6)],
    ("finished", "Training finished.", ["best_val_accuracy", "epoch"]),
]

PAYLOAD_KEYS = {
    "on_fit_start": {"info"}, "on_prepare": {"stage", "done", "total"}, "on_batch_end": {"step", "logs"},
    "on_epoch_end": {"epoch", "logs"}, "on_warning": {"kind", "message"}, "on_fit_end": {"logs"},
}
EPOCH_LOG_KEYS = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds",
                  "images_per_sec", "eta_seconds", "best_val_accuracy", "best_epoch", "improved"}
BATCH_LOG_KEYS = {"epoch", "loss", "lr", "images_per_sec", "progress"}
# the FitResult without its history (runs/events.py); unchecked_classes (issue 12, item 6) names the
# categories that had no validation picture, which per_class_accuracy therefore leaves out
FIT_END_KEYS = {"status", "message", "run_dir", "best_epoch", "best_val_accuracy", "val_accuracy", "train_seconds",
                "epochs_done", "mode", "per_class_accuracy", "unchecked_classes"}


def test_metrics_event_order_is_unchanged(fmnist_small, tmp_path, monkeypatch):
    real_evaluate = Trainer._evaluate
    script = list(SCRIPTED_VAL)

    def scripted_evaluate(self):
        loss, acc, pred = real_evaluate(self)
        if script:  # the epochs' validations; the final per-class report is the real one
            loss, acc = script.pop(0)
        return loss, acc, pred

    monkeypatch.setattr(Trainer, "_evaluate", scripted_evaluate)
    weights_at_event = []   # the saved weights' epoch at the moment each event is written
    real_append = RunFolder.append_event

    def append_event(self, event):
        weights_at_event.append(_weights_epoch(self))
        real_append(self, event)

    monkeypatch.setattr(RunFolder, "append_event", append_event)
    statuses = []
    real_write_status = RunFolder.write_status

    def write_status(self, state, message="", **extra):
        if extra.get("stage_done", 0) == extra.get("stage_total", 0):  # progress in between: see below
            statuses.append((state, message, sorted(extra)))
        real_write_status(self, state, message, **extra)

    monkeypatch.setattr(RunFolder, "write_status", write_status)
    config = make_config(fmnist_small, tmp_path, epochs=6, early_stopping_patience=3)
    result = train_run(config, runs_dir=tmp_path / "runs")
    assert result.status == "finished" and result.message == "Training finished."
    assert result.epochs_done == 5 and result.best_epoch == 2 and result.best_val_accuracy == 0.5

    run = RunFolder(result.run_dir)
    events = run.events()
    assert len(weights_at_event) == len(events)
    order = []
    for ev, weights_epoch in zip(events, weights_at_event):
        name = ev["event"]
        assert set(ev) - {"event", "time"} == PAYLOAD_KEYS[name], name
        if name == "on_prepare":
            if ev["done"] == ev["total"]:  # progress in between is written at most twice a second
                order.append((name, ev["stage"]))
        elif name == "on_batch_end":
            assert set(ev["logs"]) == BATCH_LOG_KEYS
            order.append((name, ev["step"]))
        elif name == "on_epoch_end":
            assert set(ev["logs"]) == EPOCH_LOG_KEYS
            order.append((name, ev["epoch"], ev["logs"]["improved"], weights_epoch))
        elif name == "on_warning":
            order.append((name, ev["kind"]))
        else:
            order.append((name,))
    assert order == EXPECTED_ORDER
    assert statuses == EXPECTED_STATUSES
    assert set(events[-1]["logs"]) == FIT_END_KEYS
    stop = next(ev for ev in events if ev.get("kind") == "early_stop")
    assert stop["message"] == ("Validation accuracy has not improved for 3 epochs, so training stopped early at "
                               "epoch 5; the best epoch (2) is kept.")
    status = run.status()
    assert status["state"] == "finished" and status["message"] == "Training finished."
    assert status["epoch"] == 5 and status["best_val_accuracy"] == 0.5
    summary = run.summary()
    assert summary["status"] == "finished" and summary["epochs_done"] == 5 and summary["best_epoch"] == 2
    assert _weights_epoch(run) == "2"
    json.dumps(events)


# -- the policies as units ------------------------------------------------------------------------

class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, info): self.calls.append(("fit_start", self.trainer))
    def on_epoch_end(self, epoch, logs): self.calls.append(("epoch", epoch))
    def on_warning(self, kind, message): self.calls.append(("warning", kind, message))
    def on_fit_end(self, logs): self.calls.append(("fit_end", logs["status"]))

    def warnings(self):
        return [c[1] for c in self.calls if c[0] == "warning"]


def fake_trainer(**extra):
    from types import SimpleNamespace

    from tl_core.training.callbacks import CallbackList

    rec = Recorder()
    return SimpleNamespace(stop_training=False, callbacks=CallbackList([rec]), **extra), rec


def epoch_logs(improved, best_epoch, **logs):
    return dict({"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5},
                improved=improved, best_epoch=best_epoch, **logs)


def test_early_stopping_sets_the_flag_after_patience_bad_epochs():
    from tl_core.training.callbacks import EarlyStopping

    trainer, rec = fake_trainer()
    es = EarlyStopping(patience=2)
    es.set_trainer(trainer)
    es.on_fit_start({"epochs": 10})
    es.on_epoch_end(1, epoch_logs(True, 1))
    es.on_epoch_end(2, epoch_logs(False, 1))
    es.on_epoch_end(3, epoch_logs(True, 3))   # an improvement starts the count again
    es.on_epoch_end(4, epoch_logs(False, 3))
    assert not trainer.stop_training and rec.calls == []
    es.on_epoch_end(5, epoch_logs(False, 3))
    assert trainer.stop_training
    assert rec.calls == [("warning", "early_stop", "Validation accuracy has not improved for 2 epochs, so training "
                                                   "stopped early at epoch 5; the best epoch (3) is kept.")]
    # nothing to stop after the last epoch
    trainer, rec = fake_trainer()
    es = EarlyStopping(patience=1)
    es.set_trainer(trainer)
    es.on_fit_start({"epochs": 2})
    es.on_epoch_end(1, epoch_logs(True, 1))
    es.on_epoch_end(2, epoch_logs(False, 1))
    assert not trainer.stop_training and rec.calls == []


def test_nan_guard_raises_on_a_non_finite_loss_only():
    from tl_core.errors import TransferLabError
    from tl_core.training.callbacks import NAN_MESSAGE, NanGuard

    guard = NanGuard()
    guard.after_loss(1, torch.tensor(2.5))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TransferLabError) as err:
            guard.after_loss(7, torch.tensor(bad))
        assert str(err.value) == NAN_MESSAGE and "NaN" in NAN_MESSAGE and "learning rate" in NAN_MESSAGE


def test_save_best_weights_writes_only_on_improvement():
    from tl_core.training.callbacks import BestEpoch, SaveBestWeights

    class FakeRun:
        saved = []

        def save_weights(self, state, metadata):
            self.saved.append((state, metadata))

    best = BestEpoch()
    model = torch.nn.Linear(2, 2)
    trainer, _ = fake_trainer(best=best)
    run = FakeRun()
    cb = SaveBestWeights(run)
    cb.set_trainer(trainer)
    assert best.update(1, val_loss=0.7, val_accuracy=0.5, model=model)
    cb.on_epoch_end(1, epoch_logs(True, 1))
    assert not best.update(2, val_loss=0.9, val_accuracy=0.5, model=model)
    cb.on_epoch_end(2, epoch_logs(False, 1))
    assert [m for _, m in run.saved] == [{"epoch": "1", "val_accuracy": "0.500000"}]
    assert set(run.saved[0][0]) == {"weight", "bias"}


def test_best_epoch_prefers_accuracy_then_loss():
    from tl_core.training.callbacks import BestEpoch

    model = torch.nn.Linear(2, 2)
    best = BestEpoch()
    assert best.update(1, val_loss=1.0, val_accuracy=0.5, model=model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(best.state["weight"], model.weight), "the snapshot is a copy"
    assert not best.update(2, val_loss=1.1, val_accuracy=0.5, model=model)
    assert best.update(3, val_loss=0.9, val_accuracy=0.5, model=model)
    assert best.update(4, val_loss=2.0, val_accuracy=0.6, model=model)
    assert not best.update(5, val_loss=0.1, val_accuracy=0.55, model=model)
    assert (best.epoch, best.val_accuracy, best.val_loss) == (4, 0.6, 2.0)


def test_diagnosis_warns_once_per_kind():
    from tl_core.training.callbacks import DiagnosisWarnings

    trainer, rec = fake_trainer()
    diag = DiagnosisWarnings()
    diag.set_trainer(trainer)
    diag.on_fit_start({"epochs": 8})
    for epoch in range(1, 7):  # a flat training loss, and from epoch 4 a rising validation loss
        diag.on_epoch_end(epoch, {"train_loss": 1.0, "train_accuracy": 0.9, "val_accuracy": 0.5,
                                  "val_loss": 1.0 + 0.1 * max(0, epoch - 3)})
    assert rec.warnings() == ["loss_not_falling", "overfitting"]


def test_callback_list_passes_the_trainer_and_calls_after_loss_only_where_defined():
    from tl_core.training.callbacks import CallbackList

    seen = []

    class LossHook(Callback):
        def after_loss(self, step, loss):
            seen.append((step, float(loss)))

    plain, hook = Recorder(), LossHook()
    cbs = CallbackList([plain, hook])
    assert cbs._loss_hooks == [hook]
    cbs.set_trainer("the trainer")
    assert plain.trainer == hook.trainer == "the trainer"
    cbs.after_loss(3, torch.tensor(0.5))
    assert seen == [(3, 0.5)]


# -- the policies through fit ---------------------------------------------------------------------

def scripted_validation(monkeypatch, results):
    """The epochs' validation (loss, accuracy) as given; the final per-class report is real."""
    real_evaluate = Trainer._evaluate
    script = list(results)

    def evaluate(self):
        loss, acc, pred = real_evaluate(self)
        if script:
            loss, acc = script.pop(0)
        return loss, acc, pred

    monkeypatch.setattr(Trainer, "_evaluate", evaluate)


def test_early_stopping_ends_the_run_as_finished(fmnist_small, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [(1.0, 0.5), (1.0, 0.5), (1.0, 0.5)])
    rec = Recorder()
    result = train_run(make_config(fmnist_small, tmp_path, epochs=5, early_stopping_patience=2),
                       runs_dir=tmp_path / "runs", callbacks=[rec])
    assert result.status == "finished" and result.message == "Training finished."
    assert result.epochs_done == 3 and result.best_epoch == 1
    trainer = rec.calls[0][1]
    assert isinstance(trainer, Trainer) and trainer.stop_training
    assert [c[:2] for c in rec.calls[1:]] == [("epoch", 1), ("epoch", 2), ("epoch", 3), ("warning", "early_stop"),
                                              ("fit_end", "finished")]
    assert "stopped early at epoch 3; the best epoch (1) is kept" in rec.calls[4][2]
    run = RunFolder(result.run_dir)
    assert run.status()["state"] == "finished" and run.status()["epoch"] == 3
    assert _weights_epoch(run) == "1"


def test_a_callback_can_stop_the_run_cleanly_with_the_flag(fmnist_small, tmp_path):
    class StopAfterTwo(Recorder):
        def on_epoch_end(self, epoch, logs):
            super().on_epoch_end(epoch, logs)
            if epoch == 2:
                self.trainer.stop_training = True

    rec = StopAfterTwo()
    result = train_run(make_config(fmnist_small, tmp_path, epochs=5, early_stopping_patience=None),
                       runs_dir=tmp_path / "runs", callbacks=[rec])
    assert isinstance(rec.calls[0][1], Trainer), "the trainer is set before on_fit_start"
    assert result.status == "finished" and result.message == "Training finished."
    assert result.epochs_done == 2 and len(result.history) == 2
    assert [c for c in rec.calls[1:] if c[0] != "warning"] == [("epoch", 1), ("epoch", 2), ("fit_end", "finished")]
    assert "early_stop" not in rec.warnings()
    run = RunFolder(result.run_dir)
    assert run.status()["state"] == "finished" and run.status()["epoch"] == 2
    assert [e["epoch"] for e in run.epoch_logs()] == [1, 2]
    assert run.has_weights() and run.summary()["epochs_done"] == 2


def test_nan_loss_fails_the_run_before_the_optimizer_steps(fmnist_small, tmp_path, monkeypatch):
    import torch.nn.functional as F

    from tl_core.training.callbacks import NAN_MESSAGE

    real_loss = F.cross_entropy
    train_losses = []

    def loss_nan_at_third_step(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        if "reduction" in kwargs:  # validation
            return loss
        train_losses.append(loss)
        return loss * float("nan") if len(train_losses) == 3 else loss

    steps = []
    real_step = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", loss_nan_at_third_step)
    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    rec = Recorder()
    result = train_run(make_config(fmnist_small, tmp_path, epochs=3), runs_dir=tmp_path / "runs", callbacks=[rec])
    assert result.status == "failed" and result.message == NAN_MESSAGE
    assert len(train_losses) == 3 and len(steps) == 2, "2 steps per epoch: the NaN of step 3 is never stepped on"
    assert result.epochs_done == 1 and result.best_epoch == 1
    run = RunFolder(result.run_dir)
    assert run.status()["state"] == "failed" and run.status()["message"] == NAN_MESSAGE
    assert _weights_epoch(run) == "1", "the best weights so far are kept"
    assert not (run.path / "error.log").exists()
    assert rec.calls[-1] == ("fit_end", "failed")
