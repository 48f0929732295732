"""The Lab: one-click experiments that show what transfer learning does, on the user's own pictures.

Four experiments, each a few ordinary training runs that differ in one thing:

* ``scratch`` (:class:`ScratchExperiment`): the same training from ImageNet weights and from random
  weights;
* ``data-size`` (:class:`DataSizeExperiment`): growing shares of the pictures, several picks each,
  checked on the same held-out pictures (one feature pass for all of its runs);
* ``layers`` (:class:`LayersExperiment`): one run per freeze preset, with the overfitting gap;
* ``models`` (:class:`ModelsExperiment`): one run per backbone (default: the offline-ready ones).

An experiment is a folder (:mod:`~tl_core.lab.folder`) holding its settings, status, results and
every run it made; :mod:`~tl_core.lab.runner` runs the parts with one progress bar and a Stop that
keeps finished runs. The public entry points are ``tl_core.create_experiment``,
``tl_core.run_experiment`` and ``tl_core.list_experiments``::

    from tl_core.lab import DataSizeExperiment
    result = tl_core.run_experiment(DataSizeExperiment("photos/", weights="offline"))
    print(result["conclusion"])
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tl_core.errors import ConfigError
from tl_core.lab.folder import ExperimentFolder, default_experiments_dir, list_experiments

# kind -> (module, class); the modules import PyTorch, so they load when an experiment is made
_CLASSES = {"scratch": ("scratch", "ScratchExperiment"), "data-size": ("data_size", "DataSizeExperiment"),
            "layers": ("layers", "LayersExperiment"), "models": ("models", "ModelsExperiment")}
KINDS = tuple(_CLASSES)
TITLES = {"scratch": "Pretrained vs from scratch", "data-size": "How many pictures do I need?",
          "layers": "Which layers should learn?", "models": "Which model suits my pictures?"}


def experiment_class(kind: str):
    """The experiment called ``kind`` ('scratch', 'data-size', 'layers', 'models')."""
    import importlib

    try:
        module, name = _CLASSES[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown experiment {kind!r}. Choose one of: {', '.join(KINDS)}.") from None
    return getattr(importlib.import_module(f"tl_core.lab.{module}"), name)


def __getattr__(name: str):  # PEP 562: ScratchExperiment & co. without importing PyTorch up front
    for kind, (_module, cls) in _CLASSES.items():
        if name == cls:
            return experiment_class(kind)
    raise AttributeError(f"module 'tl_core.lab' has no attribute {name!r}")


def make_experiment(kind: str, data_dir: str, **settings):
    """``make_experiment("layers", "photos/", presets="head,none")``: the settings checked as typed."""
    return experiment_class(kind)(data_dir, **settings)


@dataclass
class CreatedExperiment:
    """An experiment whose settings and pictures were checked and whose folder exists; :meth:`run` it."""

    experiment: object
    folder: ExperimentFolder

    @property
    def path(self) -> Path:
        return self.folder.path

    def run(self, stop_event: threading.Event | None = None,
            progress: Callable | None = None) -> dict:
        from tl_core.lab.runner import run

        return run(self.experiment, self.folder, stop_event, progress)


def create_experiment(experiment, experiments_dir: str | Path | None = None) -> CreatedExperiment:
    """Check everything that can be checked (settings, models, the pictures' folder), then create the
    experiment folder. A plain :class:`~tl_core.errors.TransferLabError` before any folder exists."""
    experiment.validate()
    folder = ExperimentFolder.create(experiment.kind, experiment.settings(), experiments_dir)
    return CreatedExperiment(experiment, folder)


__all__ = ["KINDS", "TITLES", "ScratchExperiment", "DataSizeExperiment", "LayersExperiment", "ModelsExperiment",
           "ExperimentFolder", "CreatedExperiment", "create_experiment", "make_experiment", "experiment_class",
           "list_experiments", "default_experiments_dir"]
