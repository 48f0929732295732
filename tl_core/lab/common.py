"""What every Lab experiment shares: the settings, their checks, and the runs they are made of.

An experiment is a few ordinary training runs (``tl_core.train``) that differ in one thing only
(the start, the amount of pictures, the layers that learn, the model). Everything else is held
fixed here: the same pictures kept aside for checking (the same split seed), the same number of
passes for every run (no early stopping: a run that stops early would have had a smaller budget),
the same training seed. Every setting is checked before an experiment folder exists, so a typo
costs nothing and leaves nothing behind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError, DataError
from tl_core.models.catalogue import RECOMMENDED_MODEL


@dataclass
class LabSettings:
    """The pictures, the model and the training budget of one experiment."""

    data_dir: str
    model: str = RECOMMENDED_MODEL
    epochs: int = 10
    seed: int = 0
    weights: str = "auto"
    image_size: int | None = None
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        self.data_dir = os.path.abspath(os.path.expanduser(str(self.data_dir)))   # results name it from anywhere
        if self.weights == "none":
            raise ConfigError("The Lab's runs start from pretrained weights: choose weights 'auto', 'offline' or a "
                              "weights file (the scratch experiment adds the random start itself).")
        self.train_config()            # epochs and seed, in the words tl train uses
        self.data_config(self.data_dir)
        self.model_config()

    def train_config(self, seed: int | None = None) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, seed=self.seed if seed is None else seed, early_stopping_patience=None)

    def data_config(self, root: str | None = None) -> DataConfig:
        """The same split for every run: the split seed is the experiment's seed, not the run's."""
        return DataConfig(root=root or self.data_dir, val_fraction=self.val_fraction, split_seed=self.seed)

    def model_config(self, name: str | None = None, weights: str | None = None) -> ModelConfig:
        return ModelConfig(name=name or self.model, weights=weights or self.weights, image_size=self.image_size)

    def run_config(self, *, preset: str = "head", model: str | None = None, root: str | None = None,
                   seed: int | None = None, name: str | None = None) -> RunConfig:
        """One run of the experiment: 'scratch' starts from random weights, everything else from the
        experiment's pretrained weights."""
        weights = "none" if FreezeConfig(preset=preset).kind == "scratch" else None
        return RunConfig(data=self.data_config(root), model=self.model_config(model, weights),
                         freeze=FreezeConfig(preset=preset), train=self.train_config(seed), name=name)


@dataclass
class ExperimentBase(LabSettings):
    """The parts every experiment has in common (see :class:`tl_core.lab.runner.Experiment`)."""

    kind: ClassVar[str] = "?"

    def settings(self) -> dict:
        """The settings as given (experiment.json and the results' ``settings``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def validate(self) -> None:
        """Everything that can be checked before an experiment folder exists (plain errors)."""
        check_model(self.model, self.weights)
        check_categories(self.data_dir)

    def shared_work(self) -> float:
        return 0.0

    def prepare(self, folder, progress, stop) -> None:  # noqa: ARG002 - only data-size shares work
        return None

    def split_sizes(self) -> tuple[int, int]:
        """(pictures to learn from, pictures to check with) of the experiment's split, from names only."""
        from tl_core.training.estimate import planned_split

        n_train, n_val, _ = planned_split(self.data_dir, self.val_fraction)
        return n_train, n_val


def check_model(name: str, weights: str) -> None:
    """A catalogue model whose weights can be had with ``weights`` ('offline': only the offline-ready)."""
    from tl_core.models.catalogue import catalogue, get_model_info

    info = get_model_info(name)
    if weights == "offline" and not info.offline_weights:
        ready = ", ".join(m.name for m in catalogue() if m.offline_weights)
        raise ConfigError(f"{info.name} has no weights ready offline. Choose one of: {ready}, or use weights 'auto'.")


def check_categories(data_dir: str) -> list[str]:
    """The categories of ``data_dir`` (names only, no picture opened); a plain :class:`DataError` for a
    missing folder or one with fewer than two categories."""
    from tl_core.data.scan import scan_folder

    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"The folder '{data_dir}' does not exist. Check the path for typos.")
    return list(scan_folder(str(root)).classes)


def check_preset(preset: str, model: str) -> None:
    """A freeze preset this model can do ('last:9' on a model with 8 layer groups cannot)."""
    from tl_core.config import parse_preset
    from tl_core.models.builder import build_network
    from tl_core.models.catalogue import get_model_info
    from tl_core.models.freezing import frozen_groups_for, layer_groups

    parse_preset(preset)
    if preset.startswith("last:"):   # counted on the meta device: shapes only, no weights, no memory
        groups = layer_groups(build_network(get_model_info(model).pretrained_tag, 2, on_meta_device=True))
        frozen_groups_for(FreezeConfig(preset=preset), groups)


def run_words(preset: str) -> str:
    """What learns in a run with ``preset``, in the Layers page's words."""
    from tl_core.config import parse_preset

    kind, n = parse_preset(preset)
    if kind == "head":
        return "only the new classifier"
    if kind == "last":
        return "the last layer group and the classifier" if n == 1 else f"the last {n} layer groups and the classifier"
    if kind == "none":
        return "every layer"
    return "every layer, from random weights"


def parse_list(text: str | list | tuple, what: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (duplicates dropped, order kept); an empty list is an error."""
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in out:
            out.append(item)
    if not out:
        raise ConfigError(f"Name at least one {what}.")
    return out


__all__ = ["LabSettings", "ExperimentBase", "check_model", "check_categories", "check_preset", "run_words", "parse_list"]
