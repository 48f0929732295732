"""The training loop.

It speaks only through events with plain-data payloads, in the style of Keras and fastai
callbacks: ``on_fit_start(info)``, ``on_prepare(stage, done, total)``, ``on_batch_end(step,
logs)``, ``on_epoch_end(epoch, logs)``, ``on_warning(kind, message)``, ``on_fit_end(logs)``.
The CLI prints them, the job runner writes them to the run folder for the app to draw, and the
tests read them; nothing here knows about Streamlit.

Speed comes from three things (see bench/RESULTS.md): images are decoded once into memory,
a frozen prefix of the network is run once per image and cached (on disk too), and on a GPU the
batches are augmented on the device under mixed precision in channels_last.
"""
from __future__ import annotations

import math
import random
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl_core.runtime.allocator import covers_this_thread, training_allocator
from tl_core.training.augment import BatchAugment
from tl_core.config import RunConfig
from tl_core.training.decoded import decode_records
from tl_core.runtime.device import DeviceInfo, configure_threads, pick_device
from tl_core.errors import TransferLabError
from tl_core.training.features import (compute_features, feature_cache_key, find_prefix_split, load_cached_features,
                       save_cached_features, weights_fingerprint)
from tl_core.models.freezing import (FreezePlan, apply_freeze_plan, make_freeze_plan, optimizer_param_groups,
                       set_train_mode)
from tl_core.paths import cache_dir
from tl_core.models.preprocess import Preprocessing
from tl_core.runs import RunFolder

FEATURE_MEMORY_BUDGET = 1.5 * 2**30   # beyond this the boundary activations are not cached


class Callback:
    """Override any of these; payloads are plain Python data (JSON-serialisable)."""

    def on_fit_start(self, info: dict) -> None: ...
    def on_prepare(self, stage: str, done: int, total: int) -> None: ...
    def on_batch_end(self, step: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_warning(self, kind: str, message: str) -> None: ...
    def on_fit_end(self, logs: dict) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: Iterable[Callback]):
        self.callbacks = list(callbacks)

    def _call(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(*args)

    def on_fit_start(self, info): self._call("on_fit_start", info)
    def on_prepare(self, stage, done, total): self._call("on_prepare", stage, done, total)
    def on_batch_end(self, step, logs): self._call("on_batch_end", step, logs)
    def on_epoch_end(self, epoch, logs): self._call("on_epoch_end", epoch, logs)
    def on_warning(self, kind, message): self._call("on_warning", kind, message)
    def on_fit_end(self, logs): self._call("on_fit_end", logs)


class RunRecorder(Callback):
    """Writes every event to the run folder's metrics.jsonl and keeps status.json current."""

    def __init__(self, run: RunFolder):
        self.run = run
        self.epochs = 0
        self._last_prepare = 0.0

    def _event(self, name: str, **payload: Any) -> None:
        self.run.append_event({"event": name, "time": time.time(), **payload})

    def on_fit_start(self, info):
        self.epochs = info.get("epochs", 0)
        self._event("on_fit_start", info=info)
        self.run.write_status("running", "Training started.", epoch=0, epochs=self.epochs)

    def on_prepare(self, stage, done, total):
        now = time.time()
        if done == total or now - self._last_prepare > 0.5:
            self._last_prepare = now
            self._event("on_prepare", stage=stage, done=done, total=total)
            self.run.write_status("running", f"{PREPARE_LABELS.get(stage, stage)}: {done}/{total}",
                                  stage=stage, stage_done=done, stage_total=total)

    def on_batch_end(self, step, logs):
        self._event("on_batch_end", step=step, logs=logs)

    def on_epoch_end(self, epoch, logs):
        self._event("on_epoch_end", epoch=epoch, logs=logs)
        self.run.write_status("running", f"Epoch {epoch} of {self.epochs} done.", epoch=epoch, epochs=self.epochs,
                              best_val_accuracy=logs.get("best_val_accuracy"), eta_seconds=logs.get("eta_seconds"),
                              stage="train")

    def on_warning(self, kind, message):
        self._event("on_warning", kind=kind, message=message)

    def on_fit_end(self, logs):
        self._event("on_fit_end", logs=logs)


PREPARE_LABELS = {"check": "Checking images", "decode": "Reading images", "features": "Computing features",
                  "weights": "Loading weights"}


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

    def to_json(self) -> dict:
        return asdict(self)


# -- helpers ------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of the base LR at each optimizer step: linear warm-up, then cosine to 1%."""
    def fn(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        floor = 0.01
        if schedule == "onecycle":  # linear anneal after the warm-up peak
            return max(floor, 1.0 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


def reset_classifier_init(model: nn.Module) -> None:
    """Start the new classifier near zero. Some timm families initialise it with a range of
    1/sqrt(num_classes), which for 4 classes gives logits of +-5 on pretrained features: the head
    then spends its first dozens of steps unlearning noise, which small data sets cannot afford."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    for m in classifier.modules() if isinstance(classifier, nn.Module) else ():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
    w = counts.sum() / (num_classes * counts)
    return w / w.mean()


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


# -- the loop -----------------------------------------------------------------------------------

class _Stop(Exception):
    pass


class Trainer:
    """One fit: prepares data and model, trains, keeps the best weights. Use :func:`fit`."""

    def __init__(self, config: RunConfig, run: RunFolder | None, callbacks: Iterable[Callback],
                 stop_event: threading.Event | None):
        self.config = config
        self.run = run
        self.cb = CallbackList(callbacks)
        self.stop_event = stop_event or threading.Event()
        self.history: list[dict] = []
        self.best: dict[str, Any] = {"epoch": None, "val_accuracy": -1.0, "val_loss": math.inf, "state": None}
        self.warned: set[str] = set()
        self.mode: str | None = None

    # ---- preparation ----
    def _prepare(self):
        cfg = self.config
        tcfg = cfg.train
        seed_everything(tcfg.seed)
        configure_threads(tcfg.num_threads)
        self.dev: DeviceInfo = pick_device(tcfg.device, tcfg.amp, tcfg.channels_last)
        device = self.dev.device

        from tl_core.models.catalogue import get_model_info
        get_model_info(cfg.model.name)  # a typo in the model name is answered before reading pictures
        from tl_core.data.dataset import prepare_dataset
        self.data = prepare_dataset(cfg.data, progress=lambda d, t: self.cb.on_prepare("check", d, t))
        classes = self.data.classes
        self.classes = classes

        from tl_core.models.weights import create_model
        kind = cfg.freeze.kind
        weights = "none" if kind == "scratch" else cfg.model.weights
        self.model, self.weights_source = create_model(cfg.model.name, len(classes), weights)
        reset_classifier_init(self.model)
        self.plan: FreezePlan = make_freeze_plan(self.model, cfg.freeze)
        apply_freeze_plan(self.model, self.plan)
        self.model.to(device)
        if self.dev.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net = self.model
        if tcfg.compile and device.type == "cuda":  # pays off for long GPU runs only
            self.net = torch.compile(self.model)
        self.prep = Preprocessing.for_model(self.model, cfg.model.image_size)
        self.normalize = self.prep.normalizer(device)

        label_of = {c: i for i, c in enumerate(classes)}
        self.train_paths = [r.path for r in self.data.train]
        self.train_labels = [label_of[r.label] for r in self.data.train]
        self.val_paths = [r.path for r in self.data.val]
        self.val_labels = [label_of[r.label] for r in self.data.val]

        if self.run is not None:
            self.run.save_labels(classes)
            self.run.save_preprocessing(self.prep.to_dict())

        split = find_prefix_split(self.model) if tcfg.feature_cache else None
        self.split = split
        self.model.eval()
        if split is not None and self._load_or_compute_features(split):
            self.mode = "features"
        else:
            self.mode = "full"
            self.split = None
            self.train_x, self.train_y = self._decode(self.train_paths, self.train_labels, "decode")
            self.val_x, self.val_y = self._decode(self.val_paths, self.val_labels, "decode")

    def _decode(self, paths, labels, stage):
        # val images are decoded after train ones: report progress over both as one stage
        dec = decode_records(paths, labels, self.prep, progress=lambda d, t: self.cb.on_prepare(stage, d, t))
        for path, reason in dec.failed:
            self.cb.on_warning("unreadable", f"Skipped {path}: {reason}.")
        images = dec.images
        if self.dev.device.type == "cuda" and images.nbytes < 0.5 * torch.cuda.mem_get_info()[0]:
            images = images.to(self.dev.device)   # keep the whole data set on the GPU when it fits
        return images, dec.labels.to(images.device)

    def _load_or_compute_features(self, split) -> bool:
        cfg = self.config
        cache_root = Path(cfg.train.cache_dir).expanduser() if cfg.train.cache_dir else cache_dir()
        wid = weights_fingerprint(self.weights_source.path)
        keys = {name: feature_cache_key(paths, labels, cfg.model.name, wid, split.boundary, self.prep.to_dict())
                for name, paths, labels in (("train", self.train_paths, self.train_labels),
                                            ("val", self.val_paths, self.val_labels))}
        feats: dict[str, torch.Tensor] = {}
        self.feature_cache_hit = True
        for name in ("train", "val"):
            cached = load_cached_features(cache_root, keys[name])
            if cached is None:
                self.feature_cache_hit = False
                break
            feats[name + "_x"], feats[name + "_y"] = cached["x"], cached["y"]
        if not self.feature_cache_hit:
            feats = {}
            for name, paths, labels in (("train", self.train_paths, self.train_labels),
                                        ("val", self.val_paths, self.val_labels)):
                images, y = self._decode(paths, labels, "decode")
                # estimate the size from one batch before committing to caching everything
                probe = compute_features(split.prefix, images[:2], self.normalize, self.dev.device,
                                         amp_dtype=self.dev.amp_dtype, channels_last=self.dev.channels_last)
                per_image = probe[0].numel() * 4
                if per_image * len(images) > FEATURE_MEMORY_BUDGET:
                    self.cb.on_warning("no_feature_cache", "The frozen layers' output is too large to keep in "
                                       "memory for this many images; training runs the whole model each step.")
                    return False
                x = compute_features(split.prefix, images, self.normalize, self.dev.device,
                                     amp_dtype=self.dev.amp_dtype, channels_last=self.dev.channels_last,
                                     progress=lambda d, t: self.cb.on_prepare("features", d, t))
                feats[name + "_x"], feats[name + "_y"] = x, y.cpu()
                save_cached_features(cache_root, keys[name], {"x": x, "y": y.cpu()})
                del images
        dev = self.dev.device
        self.train_x, self.train_y = feats["train_x"].to(dev), feats["train_y"].to(dev)
        self.val_x, self.val_y = feats["val_x"].to(dev), feats["val_y"].to(dev)
        return True

    # ---- steps ----
    def _forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if self.mode == "features":
            return self.split.suffix(x.float())
        xf = x.float()
        if train and self.augment.enabled:
            xf = self.augment(xf)
        xf = self.normalize(xf)
        if self.dev.channels_last:
            xf = xf.contiguous(memory_format=torch.channels_last)
        return self.net(xf)

    def _evaluate(self) -> tuple[float, float, torch.Tensor]:
        self.model.eval()
        n = len(self.val_y)
        total_loss, correct = 0.0, 0
        preds = []
        bs = self.config.train.batch_size * 2
        with torch.inference_mode():
            for i in range(0, n, bs):
                xb, yb = self.val_x[i:i + bs], self.val_y[i:i + bs]
                with torch.autocast(self.dev.device.type, dtype=self.dev.amp_dtype,
                                    enabled=self.dev.amp_dtype is not None):
                    logits = self._forward(xb, train=False)
                logits = logits.float()
                total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
                p = logits.argmax(1)
                correct += (p == yb).sum().item()
                preds.append(p.cpu())
        pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        return total_loss / max(n, 1), correct / max(n, 1), pred

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise _Stop()

    def fit(self) -> FitResult:
        cfg, tcfg = self.config, self.config.train
        t_start = time.perf_counter()
        if self.run is not None:
            self.run.write_status("running", "Preparing the data and the model.", epoch=0, epochs=tcfg.epochs)
        self._prepare()
        self._check_stop()
        device = self.dev.device
        num_classes = len(self.classes)
        n_train = len(self.train_y)
        bs = min(tcfg.batch_size, n_train)
        steps_per_epoch = max(1, n_train // bs) if n_train >= bs else 1
        total_steps = steps_per_epoch * tcfg.epochs
        lr = tcfg.resolved_lr(cfg.freeze.preset)

        groups = optimizer_param_groups(self.model, self.plan, lr, tcfg.weight_decay, cfg.freeze.layer_lr_decay)
        optimizer = torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(tcfg.schedule, total_steps, int(tcfg.warmup_epochs * steps_per_epoch)))
        scaler = torch.amp.GradScaler("cuda", enabled=self.dev.amp_dtype == torch.float16)

        train_counts = torch.bincount(self.train_y.cpu(), minlength=num_classes)
        imbalance = float(train_counts.max() / train_counts.clamp(min=1).min())
        balance = tcfg.balance
        if balance == "auto":
            from tl_core.data.checks import IMBALANCE_WARN_RATIO
            balance = "weights" if imbalance >= IMBALANCE_WARN_RATIO else "none"
        weight = class_weights(self.train_y.cpu(), num_classes).to(device) if balance == "weights" else None
        sample_p = None
        if balance == "sampler":
            sample_p = (1.0 / train_counts.float().clamp(min=1))[self.train_y.cpu()]
        gen = torch.Generator().manual_seed(tcfg.seed)
        self.augment = BatchAugment(tcfg.augment if self.mode == "full" else "none", generator=gen)

        info = {"model": cfg.model.name, "weights": self.weights_source.description, "device": self.dev.to_dict(),
                "mode": self.mode, "boundary": self.split.boundary if self.split else None,
                "feature_cache_hit": getattr(self, "feature_cache_hit", None) if self.mode == "features" else None,
                "epochs": tcfg.epochs, "steps_per_epoch": steps_per_epoch, "batch_size": bs, "lr": lr,
                "train_images": n_train, "val_images": len(self.val_y), "classes": self.classes,
                "trainable_params": self.plan.trainable_params, "total_params": self.plan.total_params,
                "frozen_groups": self.plan.frozen, "balance": balance, "imbalance_ratio": imbalance,
                "allocator_tuned": covers_this_thread(), "prepare_seconds": time.perf_counter() - t_start}
        self.cb.on_fit_start(info)
        if self.run is not None:
            self.run.save_summary(self._summary(info))

        patience = tcfg.early_stopping_patience
        bad_epochs = 0
        step = 0
        epoch_times: list[float] = []
        train_t0 = time.perf_counter()
        for epoch in range(1, tcfg.epochs + 1):
            t0 = time.perf_counter()
            set_train_mode(self.model)
            if sample_p is not None:
                order = torch.multinomial(sample_p, n_train, replacement=True, generator=gen)
            else:
                order = torch.randperm(n_train, generator=gen)
            order = order.to(self.train_y.device)
            run_loss, run_correct, seen = 0.0, 0, 0
            recent: list[float] = []
            for b in range(steps_per_epoch):
                self._check_stop()
                idx = order[b * bs:(b + 1) * bs]
                xb, yb = self.train_x[idx].to(device, non_blocking=True), self.train_y[idx].to(device)
                with torch.autocast(device.type, dtype=self.dev.amp_dtype, enabled=self.dev.amp_dtype is not None):
                    logits = self._forward(xb, train=True)
                loss = F.cross_entropy(logits.float(), yb, weight=weight, label_smoothing=tcfg.label_smoothing)
                if not torch.isfinite(loss):
                    raise TransferLabError(
                        "The training loss became NaN (not a number), so training was stopped. The learning "
                        "rate is probably too high: try one 10 times smaller. The best weights so far are kept.")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                lv = loss.item()
                run_loss += lv * len(yb)
                run_correct += (logits.argmax(1) == yb).sum().item()
                seen += len(yb)
                recent.append(lv)
                if step % tcfg.log_every_steps == 0 or b == steps_per_epoch - 1:
                    elapsed = time.perf_counter() - t0
                    self.cb.on_batch_end(step, {"epoch": epoch, "loss": sum(recent) / len(recent),
                                                "lr": optimizer.param_groups[-1]["lr"],
                                                "images_per_sec": seen / max(elapsed, 1e-9),
                                                "progress": step / total_steps})
                    recent = []
            train_seconds = time.perf_counter() - t0
            val_loss, val_acc, _ = self._evaluate()
            epoch_seconds = time.perf_counter() - t0
            epoch_times.append(epoch_seconds)
            improved = val_acc > self.best["val_accuracy"] or (
                val_acc == self.best["val_accuracy"] and val_loss < self.best["val_loss"])
            if improved:
                self.best.update(epoch=epoch, val_accuracy=val_acc, val_loss=val_loss, state=self._snapshot())
                if self.run is not None:
                    self.run.save_weights(self.best["state"], {"epoch": str(epoch), "val_accuracy": f"{val_acc:.6f}"})
                bad_epochs = 0
            else:
                bad_epochs += 1
            logs = {"train_loss": run_loss / max(seen, 1), "train_accuracy": run_correct / max(seen, 1),
                    "val_loss": val_loss, "val_accuracy": val_acc, "lr": optimizer.param_groups[-1]["lr"],
                    "epoch_seconds": epoch_seconds, "images_per_sec": seen / max(train_seconds, 1e-9),
                    "eta_seconds": (tcfg.epochs - epoch) * (sum(epoch_times) / len(epoch_times)),
                    "best_val_accuracy": self.best["val_accuracy"], "best_epoch": self.best["epoch"],
                    "improved": improved}
            self.history.append(dict(logs, epoch=epoch))
            self.cb.on_epoch_end(epoch, logs)
            for kind, message in diagnose(self.history):
                if kind not in self.warned:
                    self.warned.add(kind)
                    self.cb.on_warning(kind, message)
            if patience is not None and bad_epochs >= patience and epoch < tcfg.epochs:
                self.cb.on_warning("early_stop", f"Validation accuracy has not improved for {patience} epochs, "
                                                 f"so training stopped early at epoch {epoch}; the best epoch "
                                                 f"({self.best['epoch']}) is kept.")
                break
        self.train_seconds = time.perf_counter() - train_t0
        return self._finish("finished", "Training finished.", time.perf_counter() - t_start)

    def _summary(self, info: dict) -> dict:
        counts = {c: 0 for c in self.classes}
        for r in self.data.train:
            counts[r.label] += 1
        val_counts = {c: 0 for c in self.classes}
        for r in self.data.val:
            val_counts[r.label] += 1
        report = self.data.report
        return {"classes": self.classes, "counts": counts, "val_counts": val_counts,
                "freeze": self.plan.to_dict(), "train": asdict(self.config.train), "model": self.config.model.name,
                "weights": self.weights_source.description, "device": self.dev.to_dict(), "mode": self.mode,
                "problems": [p.to_dict() for p in report.problems],
                "imbalance_ratio": getattr(report, "imbalance_ratio", info.get("imbalance_ratio")),
                "val_records": [{"path": r.path, "label": r.label} for r in self.data.val],
                "preprocessing": self.prep.to_dict(), "info": info}

    def _per_class_accuracy(self) -> dict[str, float] | None:
        """Validation accuracy of each class for the best weights: an overall 90% can hide a
        class the model never gets right, which matters most on imbalanced data."""
        if not hasattr(self, "val_y") or len(self.val_y) == 0:
            return None
        _, _, pred = self._evaluate()
        truth = self.val_y.cpu()
        out = {}
        for i, name in enumerate(self.classes):
            mask = truth == i
            if mask.any():
                out[name] = float((pred[mask] == i).float().mean())
        return out

    def _finish(self, status: str, message: str, total_seconds: float) -> FitResult:
        per_class = None
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])
            try:
                per_class = self._per_class_accuracy()
            except Exception:  # reporting must never turn a finished run into a failed one
                per_class = None
        last = self.history[-1] if self.history else {}
        result = FitResult(status=status, message=message, run_dir=str(self.run.path) if self.run else None,
                           best_epoch=self.best["epoch"],
                           best_val_accuracy=self.best["val_accuracy"] if self.best["epoch"] else None,
                           val_accuracy=last.get("val_accuracy"), train_seconds=total_seconds,
                           epochs_done=len(self.history), mode=self.mode, history=self.history,
                           per_class_accuracy=per_class)
        logs = {k: v for k, v in result.to_json().items() if k != "history"}
        self.cb.on_fit_end(logs)
        if self.run is not None:
            self.run.save_summary({"best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
                                   "train_seconds": total_seconds, "epochs_done": result.epochs_done,
                                   "status": status, "per_class_accuracy": per_class})
            self.run.write_status(status, message, epoch=result.epochs_done,
                                  best_val_accuracy=result.best_val_accuracy)
        return result


def fit(config: RunConfig, run: RunFolder | None = None, callbacks: Iterable[Callback] = (),
        stop_event: threading.Event | None = None) -> FitResult:
    """Train one model. Never raises for a training failure: the result (and the run folder's
    status) says failed with a plain message, and the best weights so far stay on disk."""
    callbacks = list(callbacks)
    if run is not None:
        callbacks.insert(0, RunRecorder(run))
    trainer = Trainer(config, run, callbacks, stop_event)
    with training_allocator():
        return _fit_guarded(trainer, run)


def _fit_guarded(trainer: Trainer, run: RunFolder | None) -> FitResult:
    t0 = time.perf_counter()
    try:
        return trainer.fit()
    except _Stop:
        msg = ("Stopped by you. The best weights so far are kept." if trainer.best["epoch"]
               else "Stopped by you before the first epoch finished, so no model was saved.")
        return trainer._finish("stopped", msg, time.perf_counter() - t0)
    except TransferLabError as err:
        return _fail(trainer, str(err), t0)
    except MemoryError:
        return _fail(trainer, "The computer ran out of memory. Use fewer or smaller images, a smaller "
                              "batch size, or a smaller model.", t0)
    except Exception as err:  # an unexpected bug: keep the details in the run folder for a report
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        if run is not None:
            (run.path / "error.log").write_text(detail, encoding="utf-8")
        return _fail(trainer, f"Training failed unexpectedly ({type(err).__name__}: {err}). "
                              "Details are in error.log in the run folder.", t0)


def _fail(trainer: Trainer, message: str, t0: float) -> FitResult:
    try:
        return trainer._finish("failed", message, time.perf_counter() - t0)
    except Exception:  # failing while failing: at least leave the status right
        if trainer.run is not None:
            trainer.run.write_status("failed", message)
        return FitResult("failed", message, str(trainer.run.path) if trainer.run else None)


def train_run(config: RunConfig, runs_dir=None, callbacks: Iterable[Callback] = (),
              stop_event: threading.Event | None = None, run_id: str | None = None) -> FitResult:
    """Create a run folder and train into it: the one entry point the CLI, jobs and tests share."""
    run = RunFolder.create(config, runs_dir, run_id)
    return fit(config, run, callbacks, stop_event)
