"""The training loop.

It speaks only through callbacks (:mod:`tl_core.training.callbacks`) with plain-data payloads, in
the style of Keras and fastai: the CLI prints the events, the job runner writes them to the run
folder for the app to draw, and the tests read them; nothing here knows about Streamlit. The
policies (best-weights checkpoints, early stopping, the NaN guard, diagnosis warnings, recording)
are callbacks too, wired in :func:`~tl_core.training.callbacks.default_callbacks`; the loop
itself decides none of them. Preparation is in :mod:`~tl_core.training.prepare`, the optimizer
and its schedule in :mod:`~tl_core.training.schedules`.

Speed comes from three things (see bench/RESULTS.md): images are decoded once (into a memory-mapped
cache file, whose pages the loop hands back as it reads them: ``Prepared.pages``),
a frozen prefix of the network is run once per image and cached (on disk too), and on a GPU the
batches are augmented on the device under mixed precision in channels_last.

Under torchrun the same loop runs in every process; its few collective steps (sums of the metrics,
the shared stop, DistributedDataParallel) come from :mod:`~tl_core.training.distributed` and are the
identity in a single process.
"""
from __future__ import annotations

import shutil
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F

from tl_core.config import RunConfig
from tl_core.errors import RunError, TransferLabError
from tl_core.files import disk_full, short_path
from tl_core.models.freezing import set_train_mode
from tl_core.runs import RunFolder, default_runs_dir, new_run_id
from tl_core.runtime.allocator import training_allocator
from tl_core.training import distributed
from tl_core.training.calibration import gathered_calibration_data
from tl_core.training.callbacks import BestEpoch, Callback, CallbackList, default_callbacks
from tl_core.training.prepare import (Batches, Prepared, feature_batch, fit_start_info, load_inputs, make_batches,
                                     prepare_model, run_summary)
from tl_core.training.schedules import Optimization, make_optimization


@dataclass
class FitResult:
    status: str                       # finished | stopped | failed
    message: str
    run_dir: str | None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    val_accuracy: float | None = None
    train_seconds: float = 0.0
    epochs_done: int = 0
    mode: str | None = None           # "features" (cached frozen prefix) or "full"
    per_class_accuracy: dict[str, float] | None = None   # validation, best epoch
    history: list[dict] = field(default_factory=list)
    unchecked_classes: list[str] = field(default_factory=list)   # no validation picture: not in the accuracy

    def to_dict(self) -> dict:
        return asdict(self)


class _Stop(Exception):
    pass


class _StopAware(Callback):
    """The callbacks as preparation sees them: each progress report first looks at the stop
    event, so Stop (or the app's server shutting down) does not wait until every picture has
    been read and run through the frozen layers."""

    def __init__(self, trainer: "Trainer"):
        self.owner = trainer

    def on_prepare(self, stage, done, total):
        self.owner._check_stop()
        self.owner.callbacks.on_prepare(stage, done, total)

    def on_warning(self, kind, message):
        self.owner.callbacks.on_warning(kind, message)


class Trainer:
    """One fit: prepares data and model, trains, keeps the best weights. Use :func:`fit`."""

    def __init__(self, config: RunConfig, run: RunFolder | None, callbacks: Iterable[Callback],
                 stop_event: threading.Event | None):
        self.config = config
        self.run = run
        self.callbacks = CallbackList(callbacks)
        self.stop_event = stop_event or threading.Event()
        self.stop_training = False    # a callback sets it to end the run after this epoch
        self.history: list[dict] = []
        self.best = BestEpoch()
        self.state: Prepared | None = None          # data, model and inputs, once prepared
        self.opt: Optimization | None = None
        self.batches: Batches | None = None
        self.step = 0
        self.epoch_times: list[float] = []
        self.dist = distributed.current()    # one process unless torchrun started several
        self.callbacks.set_trainer(self)

    def fit(self) -> FitResult:
        t_start = time.perf_counter()
        self._prepare()
        info = self._setup_training(t_start)
        self.callbacks.on_fit_start(info)
        if self.run is not None:
            self.run.save_summary(run_summary(self.state, self.config, info))
        for epoch in range(1, self.config.train.epochs + 1):
            t0 = time.perf_counter()
            train = self._train_epoch(epoch, t0)
            val_loss, val_acc, _ = self._evaluate()
            logs = self._end_epoch(epoch, t0, train, val_loss, val_acc)
            self.callbacks.on_epoch_end(epoch, logs)
            if self.dist.any(self.stop_training):   # every process stops after the same epoch
                break
        return self._finish("finished", "Training finished.", time.perf_counter() - t_start)

    # ---- setup ----
    def _prepare(self) -> None:
        if self.run is not None:
            self.run.write_status("running", "Preparing the data and the model.", epoch=0,
                                  epochs=self.config.train.epochs)
        events = _StopAware(self)
        self.state = prepare_model(self.config, self.run, events, self.dist)
        load_inputs(self.state, self.config, events, self.dist)
        self._check_stop()

    def _setup_training(self, t_start: float) -> dict:
        """Batches, class balance, optimizer and schedule; returns the ``on_fit_start`` info."""
        s = self.state
        self.batches = make_batches(s, self.config, self.dist)
        s.ddp = self.dist.wrap(s.model, s.split.suffix if s.mode == "features" else s.net)
        self.opt = make_optimization(self.state.model, self.state.plan, self.config, self.state.dev,
                                     self.batches.steps_per_epoch)
        return fit_start_info(self.state, self.config, self.batches, self.opt.lr, time.perf_counter() - t_start)

    # ---- one epoch ----
    def _train_epoch(self, epoch: int, t0: float) -> dict:
        """One pass over the training set; returns its loss, accuracy, image count and seconds."""
        s, b = self.state, self.batches
        set_train_mode(s.model)
        order = b.epoch_order(epoch).to(s.train_y.device)
        run_loss, run_correct, seen = 0.0, 0, 0
        recent: list[float] = []
        for i in range(b.steps_per_epoch):
            self._check_stop(together=True)
            idx = order[i * b.size:(i + 1) * b.size]
            xb, yb = s.train_x[idx].to(s.dev.device, non_blocking=True), s.train_y[idx].to(s.dev.device)
            s.pages.touched(xb.numel() * xb.element_size())
            loss, logits = self._train_step(xb, yb)
            lv = loss.item()
            run_loss += lv * len(yb)
            run_correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            recent.append(lv)
            if self.step % self.config.train.log_every_steps == 0 or i == b.steps_per_epoch - 1:
                self.callbacks.on_batch_end(self.step, {
                    "epoch": epoch, "loss": self.dist.mean(sum(recent) / len(recent)), "lr": self._lr(),
                    "images_per_sec": seen * self.dist.world_size / max(time.perf_counter() - t0, 1e-9),
                    "progress": self.step / b.total_steps})
                recent = []
        run_loss, run_correct, seen = self.dist.sum([run_loss, run_correct, seen])   # all processes' pictures
        return {"loss": run_loss / max(seen, 1), "accuracy": run_correct / max(seen, 1), "seen": seen,
                "seconds": time.perf_counter() - t0}

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dev, opt = self.state.dev, self.opt
        with torch.autocast(dev.device.type, dtype=dev.amp_dtype, enabled=dev.amp_dtype is not None):
            logits = self._forward(xb, train=True)
        loss = F.cross_entropy(logits.float(), yb, weight=self.batches.balance.weight,
                               label_smoothing=self.config.train.label_smoothing)
        self.callbacks.after_loss(self.step + 1, loss)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.scheduler.step()
        self.step += 1
        return loss, logits

    def _end_epoch(self, epoch: int, t0: float, train: dict, val_loss: float, val_acc: float) -> dict:
        """Updates the best epoch and the history; returns the ``on_epoch_end`` logs."""
        epoch_seconds = time.perf_counter() - t0
        self.epoch_times.append(epoch_seconds)
        improved = self.best.update(epoch, val_loss, val_acc, self.state.model)
        remaining = self.config.train.epochs - epoch
        logs = {"train_loss": train["loss"], "train_accuracy": train["accuracy"], "val_loss": val_loss,
                "val_accuracy": val_acc, "lr": self._lr(), "epoch_seconds": epoch_seconds,
                "images_per_sec": train["seen"] / max(train["seconds"], 1e-9),
                "eta_seconds": remaining * (sum(self.epoch_times) / len(self.epoch_times)),
                "best_val_accuracy": self.best.val_accuracy, "best_epoch": self.best.epoch, "improved": improved}
        self.history.append(dict(logs, epoch=epoch))
        return logs

    # ---- steps ----
    def _lr(self) -> float:
        return self.opt.optimizer.param_groups[-1]["lr"]

    def _forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        s = self.state
        # several processes: training steps go through DDP (it averages the gradients), checks do not
        ddp = s.ddp if train and s.ddp is not None else None
        if s.mode == "features":
            return (ddp if ddp is not None else s.split.suffix)(x.float())
        xf = x.float()
        if train and self.batches.augment.enabled:
            xf = self.batches.augment(xf)
        xf = s.normalize(xf)
        if s.dev.channels_last:
            xf = xf.contiguous(memory_format=torch.channels_last)
        return (ddp if ddp is not None else s.net)(xf)

    def _val_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation inputs this process checks (all of them in a single process)."""
        s = self.state
        if s.val_index is None:
            return s.val_x, s.val_y
        return s.val_x[s.val_index.to(s.val_x.device)], s.val_y[s.val_index.to(s.val_y.device)]

    def _evaluate(self) -> tuple[float, float, torch.Tensor]:
        s = self.state
        s.model.eval()
        val_x, val_y = self._val_inputs()
        n = len(val_y)
        total_loss, correct = 0.0, 0
        preds = []
        bs = self.config.train.batch_size * 2
        if s.mode == "full":   # the whole network runs: on a CPU its activations are the memory (see prepare)
            bs = min(bs, feature_batch(s.dev.device))
        with torch.inference_mode():
            for i in range(0, n, bs):
                xb, yb = val_x[i:i + bs], val_y[i:i + bs]
                s.pages.touched(xb.numel() * xb.element_size())
                with torch.autocast(s.dev.device.type, dtype=s.dev.amp_dtype, enabled=s.dev.amp_dtype is not None):
                    logits = self._forward(xb, train=False)
                logits = logits.float()
                total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
                p = logits.argmax(1)
                correct += (p == yb).sum().item()
                preds.append(p.cpu())
        pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        total_loss, correct, n = self.dist.sum([total_loss, correct, n])
        return total_loss / max(n, 1), correct / max(n, 1), pred

    def _check_stop(self, together: bool = False) -> None:
        """Stop was asked for (``together``: in any process, so that all stop at the same step)."""
        stop = self.stop_event.is_set()
        if (self.dist.any(stop) if together else stop):
            raise _Stop()

    # ---- the end ----
    def _per_class_accuracy(self) -> dict[str, float] | None:
        """Validation accuracy of each class for the best weights: an overall 90% can hide a
        class the model never gets right, which matters most on imbalanced data."""
        s = self.state
        if s is None or s.val_y is None or (len(s.val_y) == 0 and not self.dist.active):
            return None
        _, _, pred = self._evaluate()
        truth = self._val_inputs()[1].cpu()
        k = len(s.classes)
        hits = self.dist.sum_tensor(torch.bincount(truth[pred == truth], minlength=k))
        counts = self.dist.sum_tensor(torch.bincount(truth, minlength=k))
        if int(counts.sum()) == 0:
            return None
        return {name: float(hits[i].float() / counts[i].float()) for i, name in enumerate(s.classes) if counts[i] > 0}

    def _finish(self, status: str, message: str, total_seconds: float) -> FitResult:
        per_class = None
        # a process that fails alone takes no collective step: the others are not waiting for one
        together = not (self.dist.active and status == "failed")
        if self.best.state is not None:
            self.state.model.load_state_dict(self.best.state)
            if together and status == "finished":
                self.dist.check_in_step(self.state.model)
            try:
                per_class = self._per_class_accuracy() if together else None
            except Exception:  # reporting must never turn a finished run into a failed one
                per_class = None
            if together and self.dist.active and self.state.sharded:
                # each process holds only its share of the decoded pictures: "none of these" is calibrated
                # on all of them (frozen-layer features are held whole by every process already)
                try:
                    self.state.calibration = gathered_calibration_data(self.state, self.dist)
                except Exception:  # noqa: BLE001 - rank 0 then calibrates on its own share
                    self.state.calibration = None
        last = self.history[-1] if self.history else {}
        result = FitResult(status=status, message=message, run_dir=str(self.run.path) if self.run else None,
                           best_epoch=self.best.epoch,
                           best_val_accuracy=self.best.val_accuracy if self.best.epoch else None,
                           val_accuracy=last.get("val_accuracy"), train_seconds=total_seconds,
                           epochs_done=len(self.history), mode=self.state.mode if self.state else None,
                           history=self.history,
                           per_class_accuracy=per_class,
                           unchecked_classes=list(self.state.data.unchecked) if self.state else [])
        logs = {k: v for k, v in result.to_dict().items() if k != "history"}
        self.callbacks.on_fit_end(logs)
        if self.run is not None:
            self.run.save_summary({"best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
                                   "train_seconds": total_seconds, "epochs_done": result.epochs_done,
                                   "status": status, "per_class_accuracy": per_class,
                                   "world_size": self.dist.world_size})
            self.run.write_status(status, message, epoch=result.epochs_done,
                                  best_val_accuracy=result.best_val_accuracy)
        return result


def fit(config: RunConfig, run: RunFolder | None = None, callbacks: Iterable[Callback] = (),
        stop_event: threading.Event | None = None) -> FitResult:
    """Train one model. Never raises for a training failure: the result (and the run folder's
    status) says failed with a plain message, and the best weights so far stay on disk.

    Started by torchrun, every process calls this; only rank 0 keeps ``run`` and hears the caller's
    callbacks (:mod:`~tl_core.training.distributed`)."""
    with distributed.session(config.train.device) as dist:
        run = run if dist.is_main else None
        trainer = Trainer(config, run, default_callbacks(config, run, distributed.rank_callbacks(callbacks, dist),
                                                         timings=not dist.active), stop_event)
        with training_allocator():
            return _fit_guarded(trainer, run)


def _fit_guarded(trainer: Trainer, run: RunFolder | None) -> FitResult:
    t0 = time.perf_counter()
    try:
        return _fit_or_fail(trainer, run, t0)
    except distributed.PeerStopped as err:
        # torchrun's SIGTERM landed while an earlier failure was being recorded (a collective step fails as
        # the other process exits, and the launcher ends this one a moment later). It is raised only once,
        # so recording the failure again cannot be interrupted.
        return _unexpected(trainer, run, err, t0)


def _fit_or_fail(trainer: Trainer, run: RunFolder | None, t0: float) -> FitResult:
    try:
        return trainer.fit()
    except _Stop:
        msg = ("Stopped by you. The best weights so far are kept." if trainer.best.epoch
               else "Stopped by you before the first epoch finished, so no model was saved.")
        return trainer._finish("stopped", msg, time.perf_counter() - t0)
    except TransferLabError as err:
        return _fail(trainer, str(err), t0)
    except MemoryError:
        return _fail(trainer, "The computer ran out of memory. Use fewer or smaller images, a smaller "
                              "batch size, or a smaller model.", t0)
    except Exception as err:  # an unexpected bug: keep the details in the run folder for a report
        return _unexpected(trainer, run, err, t0)


def _unexpected(trainer: Trainer, run: RunFolder | None, err: Exception, t0: float) -> FitResult:
    detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    peer = trainer.dist.peer_failure() if trainer.dist.active else None
    if peer is not None:   # another process failed first: its words (and its details) are the run's
        if run is not None and peer.get("detail"):
            (run.path / "error.log").write_text(peer["detail"], encoding="utf-8")
        return _fail(trainer, trainer.dist.failure_words(peer), t0, reported=True)
    if trainer.dist.active and isinstance(err, (distributed.PeerStopped, torch.distributed.DistError)):
        return _fail(trainer, trainer.dist.lost_words(err), t0)
    if run is not None:
        (run.path / "error.log").write_text(detail, encoding="utf-8")
    where = "in the run folder" if run is not None or not trainer.dist.active else "in rank 0's run folder"
    return _fail(trainer, f"Training failed unexpectedly ({type(err).__name__}: {err}). "
                          f"Details are in error.log {where}.", t0, detail=detail)


def _fail(trainer: Trainer, message: str, t0: float, reported: bool = False, detail: str | None = None) -> FitResult:
    if trainer.dist.active and not reported:   # rank 0 records the run with these words
        trainer.dist.report_failure(message, detail)
    try:
        return trainer._finish("failed", message, time.perf_counter() - t0)
    except Exception:  # failing while failing: at least leave the status right
        if trainer.run is not None:
            trainer.run.write_status("failed", message)
        return FitResult("failed", message, str(trainer.run.path) if trainer.run else None)


def train_run(config: RunConfig, runs_dir=None, callbacks: Iterable[Callback] = (),
              stop_event: threading.Event | None = None, run_id: str | None = None) -> FitResult:
    """Create a run folder and train into it: the one entry point the CLI, jobs and tests share.
    Under torchrun only rank 0 creates the folder; every process trains."""
    with distributed.session(config.train.device) as dist:
        run = create_run(config, runs_dir, run_id) if dist.is_main else None
        return fit(config, run, callbacks, stop_event)


def create_run(config: RunConfig, runs_dir=None, run_id: str | None = None) -> RunFolder:
    """A new run folder for ``config``, or a plain :class:`RunError` (a full disk, a folder that
    cannot be written) with nothing half-made left behind: a run folder without its config would
    show up nowhere and never be cleaned up."""
    runs_root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    run_id = run_id or new_run_id(config.model.name)
    target = runs_root / run_id
    existed = target.exists()
    try:
        return RunFolder.create(config, runs_root, run_id)
    except OSError as err:
        if not existed:
            shutil.rmtree(target, ignore_errors=True)
        raise RunError(_run_folder_words(runs_root, err)) from None


def _run_folder_words(runs_root: Path, err: OSError) -> str:
    where = short_path(runs_root)
    if disk_full(err):
        return (f"The disk that holds the runs folder ({where}) is full, so no run could be started. Free some "
                "space there, or choose a runs folder on another disk.")
    return (f"Could not create a run folder in {where} ({err.strerror or err}). Choose a runs folder you can "
            "write to.")
