"""The end of a fit calibrates "none of these" and "unsure" for the best weights, while the pictures'
inputs are still in memory: for a ``head`` run the training and validation pictures' features are
already there (no picture is read again), otherwise at most
:data:`~tl_core.results.novelty.MAX_REFERENCES` training pictures and the validation pictures run
through the network once. The rule and the files: :mod:`tl_core.results.novelty`.

It never fails a run: a calibration that cannot be made now is prepared from the pictures the
first time the run is used for a prediction or an export.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from tl_core.results.novelty import (MAX_CALIBRATION, MAX_REFERENCES, CalibrationData, calibrate, features_and_logits,
                                     frozen_space, pick_references, save_novelty, weights_fingerprint)
from tl_core.runs import RunFolder
from tl_core.training.callbacks import Callback

log = logging.getLogger(__name__)

BATCH = 64


class NoveltyCalibration(Callback):
    """On ``on_fit_end`` with saved best weights: the calibration for them into the run folder."""

    def __init__(self, run: RunFolder):
        self.run = run

    def on_fit_end(self, logs: dict) -> None:
        state = getattr(self.trainer, "state", None)
        if logs.get("status") == "failed" or state is None or getattr(self.trainer.best, "state", None) is None:
            return
        try:
            with torch.no_grad():
                # several processes that each held a share of the pictures gathered theirs (Trainer._finish)
                data = getattr(state, "calibration", None) or calibration_data(state)
                novelty = calibrate(data)
            save_novelty(self.run.path, novelty, weights_fingerprint(state.model.state_dict()))
        except Exception as err:  # noqa: BLE001 - prepared later from the pictures; the run itself is fine
            log.info("'none of these' not calibrated at the end of training (%s: %s); it will be prepared "
                     "on first use", type(err).__name__, err)


def calibration_data(state) -> CalibrationData:
    """Features of a subset of the training inputs and of the validation inputs, from a prepared fit
    (:class:`tl_core.training.prepare.Prepared`) whose model holds the best weights."""
    state.model.eval()
    train_idx = pick_references(state.train_y, MAX_REFERENCES).to(state.train_x.device)
    val_idx = pick_references(state.val_y, MAX_CALIBRATION).to(state.val_x.device)
    train_f, _ = _features(state, state.train_x, train_idx)
    val_f, val_logits = _features(state, state.val_x, val_idx)
    return CalibrationData(train_f, state.train_y[train_idx].cpu(), val_f, val_logits, state.val_y[val_idx].cpu(),
                           frozen_space(state.plan.to_dict(), None))


def gathered_calibration_data(state, dist) -> CalibrationData:
    """:func:`calibration_data` over every process's share of the pictures, in every process. Under
    data-parallel full fine-tuning each process decoded only its share of the training and validation
    pictures, so rank 0 alone would calibrate "none of these" on 1/N of them. Every process must call
    this (it gathers); the references are picked again from the gathered candidates."""
    mine = calibration_data(state)
    train_f, train_y = dist.gather_rows(mine.train_features), dist.gather_rows(mine.train_labels)
    keep = pick_references(train_y, MAX_REFERENCES)
    val_f, val_logits = dist.gather_rows(mine.val_features), dist.gather_rows(mine.val_logits)
    val_y = dist.gather_rows(mine.val_labels)
    keep_val = pick_references(val_y, MAX_CALIBRATION)
    return CalibrationData(train_f[keep], train_y[keep], val_f[keep_val], val_logits[keep_val], val_y[keep_val],
                           mine.frozen_space)


def _features(state, inputs: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and logits of the fit's inputs ``inputs[index]``, whatever kind they are: the
    pooled features themselves (``head``), the activations at a frozen boundary, or decoded pictures
    (gathered a batch at a time: a thousand decoded pictures at once would be 150 MB more)."""
    feats, logits = [], []
    batch = BATCH
    if not (state.mode == "features" and state.split is not None and state.split.boundary == "pre_logits"):
        from tl_core.training.prepare import feature_batch   # network layers run: bounded activations

        batch = min(BATCH, feature_batch(state.dev.device))
    for i in range(0, len(index), batch):
        x = inputs[index[i:i + batch]]
        pages = getattr(state, "pages", None)   # memory-mapped pictures: their pages are handed back as read
        if pages is not None:
            pages.touched(x.numel() * x.element_size())
        f, lg = _one_batch(state, x.to(state.dev.device))
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    return torch.cat(feats), torch.cat(logits)


def _one_batch(state, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model: nn.Module = state.model
    if state.mode == "features" and state.split is not None and state.split.boundary == "pre_logits":
        features = x.float()
        return features, model.get_classifier()(features)
    if state.mode == "features" and state.split is not None:
        return _captured(model, lambda: state.split.suffix(x.float()))
    return features_and_logits(model, state.normalize(x.float()))


def _captured(model: nn.Module, forward) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``forward`` and catch what enters the classifier: the pooled features, for a run whose
    inputs are activations in the middle of the network."""
    seen: list[torch.Tensor] = []
    hook = model.get_classifier().register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        logits = forward()
    finally:
        hook.remove()
    return seen[-1], logits
