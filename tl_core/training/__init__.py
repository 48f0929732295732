"""Training: the loop and what it is made of.

* :mod:`~tl_core.training.loop`: :func:`fit` / :func:`train_run` and the :class:`Trainer` (the loop),
  :class:`FitResult`;
* :mod:`~tl_core.training.callbacks`: the events callbacks receive, and the policies every fit runs
  as callbacks (recording to the run folder, best-weights checkpoints, early stopping, the NaN
  guard, diagnosis warnings);
* :mod:`~tl_core.training.schedules`: the optimizer and its learning-rate schedule;
* :mod:`~tl_core.training.prepare`: the one-time preparation (seed, data, model, inputs, batches);
* :mod:`~tl_core.training.features`: the frozen prefix run once per image, cached on disk;
* :mod:`~tl_core.training.decoded`: images decoded once into memory;
* :mod:`~tl_core.training.augment`: batch augmentation on the device;
* :mod:`~tl_core.training.distributed`: several processes under torchrun (``tl train --nproc N``): shares of
  the data, sums over the processes, DistributedDataParallel; the identity in one process;
* :mod:`~tl_core.training.estimate`: time estimates before training (import it from there).
"""
from tl_core.training.callbacks import (Callback, CallbackList, DiagnosisWarnings, EarlyStopping, NanGuard,
                                        RecordTimings, RunRecorder, SaveBestWeights, default_callbacks)
from tl_core.training.loop import FitResult, Trainer, fit, train_run

__all__ = ["fit", "train_run", "FitResult", "Trainer", "Callback", "CallbackList", "RunRecorder", "SaveBestWeights",
           "EarlyStopping", "NanGuard", "DiagnosisWarnings", "RecordTimings", "default_callbacks"]
