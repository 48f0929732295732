"""Configuration dataclasses for one training run.

A run is fully described by a :class:`RunConfig` (data, model, freeze plan, training
settings). The app builds one from widgets, the CLI from flags, the tests by hand; all three
save it as ``config.json`` in the run folder so that a run can be redone or explained later.
Validation happens on creation so a bad value is reported where it was typed, in words a
beginner understands, rather than as a shape error deep inside PyTorch.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_core.errors import ConfigError

PRESET_PATTERN = re.compile(r"^(head|none|scratch|last:(\d+))$")
SCHEDULES = ("cosine", "onecycle", "constant")
AUGMENTS = ("none", "light", "strong")
BALANCE_MODES = ("auto", "none", "weights", "sampler")
DEVICES = ("auto", "cpu", "cuda", "mps")

# Learning rates that worked well per preset on small data sets (see bench/RESULTS.md):
# a lone linear head tolerates a large step, a full fine-tune needs a small one so the
# pretrained features are not destroyed in the first epoch.
DEFAULT_LR = {"head": 3e-3, "last": 1e-3, "none": 5e-4, "scratch": 2e-3}


def parse_preset(preset: str) -> tuple[str, int]:
    """Split ``'last:2'`` into ``('last', 2)``; other presets give ``(preset, 0)``."""
    match = PRESET_PATTERN.match(preset or "")
    if not match:
        raise ConfigError(
            f"Unknown freeze preset {preset!r}. Choose 'head' (train only the new classifier), "
            "'last:N' (also fine-tune the last N layer groups, e.g. last:2), 'none' (fine-tune "
            "everything) or 'scratch' (no pretrained weights)."
        )
    if match.group(2) is not None:
        n = int(match.group(2))
        if n < 1:
            raise ConfigError("With 'last:N', N must be at least 1 (for example last:1).")
        return "last", n
    return preset, 0


def _check_range(name: str, value: float, lo: float, hi: float, hint: str = "") -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}.{(' ' + hint) if hint else ''}")


# Seeds go to Python, NumPy (32 bits) and PyTorch (64 bits): one range that all three take as is.
MAX_SEED = 2**32 - 1
# More threads than any computer has cores is a typo; torch crashes outright on very large counts.
MAX_THREADS = 1024


def _check_whole(name: str, value: Any, lo: int, hi: int, hint: str = "") -> int:
    """``value`` as an int when it is a whole number from ``lo`` to ``hi``, else a ConfigError
    (checked here, where it was typed, instead of crashing deep inside NumPy or PyTorch)."""
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float)
                                                                         and value.is_integer())
    if not whole or not (lo <= value <= hi):
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}."
                          + (f" {hint}" if hint else ""))
    return int(value)


@dataclass
class DataConfig:
    """Where the images are and how to hold some back for validation."""

    root: str
    val_fraction: float = 0.2
    split_seed: int = 0
    test_root: str | None = None

    def __post_init__(self) -> None:
        if not str(self.root).strip():
            raise ConfigError("Choose a data folder: the path is empty.")
        self.root = str(self.root)
        _check_range("The validation share", self.val_fraction, 0.05, 0.5,
                     "Keep between 5% and 50% of the images aside to check the model.")
        self.split_seed = _check_whole("The split seed", self.split_seed, 0, MAX_SEED)


@dataclass
class ModelConfig:
    """Which pretrained backbone, and where its weights come from.

    ``weights``: ``auto`` (local cache, then the hub, then the bundled offline copy),
    ``offline`` (never touch the network), ``none`` (random start, only with the
    ``scratch`` preset), or a path to a ``.safetensors``/``.pth`` file.
    """

    name: str = "tf_efficientnet_lite0"
    weights: str = "auto"
    image_size: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("Choose a model from the catalogue.")
        if not self.weights:
            raise ConfigError("weights must be 'auto', 'offline', 'none' or a path to a weights file.")
        if self.image_size is not None:
            _check_range("The image size", self.image_size, 32, 1024)


@dataclass
class FreezeConfig:
    """Which layer groups stay as they were pretrained.

    ``frozen_groups``, when given, is the exact list of frozen group names and overrides the
    preset (the app's per-group toggles write it). ``layer_lr_decay`` < 1 gives earlier
    unfrozen groups a smaller learning rate (each group's rate is the next one's times this).
    """

    preset: str = "head"
    frozen_groups: list[str] | None = None
    layer_lr_decay: float = 1.0

    def __post_init__(self) -> None:
        parse_preset(self.preset)
        _check_range("The layer learning-rate decay", self.layer_lr_decay, 0.1, 1.0)
        if self.frozen_groups is not None:
            self.frozen_groups = [str(g) for g in self.frozen_groups]

    @property
    def kind(self) -> str:
        return parse_preset(self.preset)[0]


@dataclass
class TrainConfig:
    """How long and how to train. Defaults give a good model without tuning."""

    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    early_stopping_patience: int | None = 5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    augment: str = "light"
    feature_cache: bool = True
    cache_dir: str | None = None
    balance: str = "auto"
    num_threads: int | None = None
    log_every_steps: int = 5

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or not (1 <= self.epochs <= 1000):
            raise ConfigError(f"Epochs must be a whole number from 1 to 1000, got {self.epochs}.")
        if int(self.batch_size) != self.batch_size or not (1 <= self.batch_size <= 4096):
            raise ConfigError(f"Batch size must be a whole number from 1 to 4096, got {self.batch_size}.")
        if self.lr is not None:
            _check_range("The learning rate", self.lr, 1e-7, 1.0, "Typical values are 0.0001 to 0.01.")
        _check_range("Weight decay", self.weight_decay, 0.0, 1.0)
        _check_range("Warm-up epochs", self.warmup_epochs, 0.0, float(self.epochs))
        _check_range("Label smoothing", self.label_smoothing, 0.0, 0.5)
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError("Early-stopping patience must be at least 1 epoch, or empty to turn it off.")
        for name, value, allowed in (("schedule", self.schedule, SCHEDULES), ("augment", self.augment, AUGMENTS),
                                     ("balance", self.balance, BALANCE_MODES), ("device", self.device, DEVICES)):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
        self.seed = _check_whole("The random seed", self.seed, 0, MAX_SEED)
        if self.num_threads is not None:
            self.num_threads = _check_whole("The number of CPU threads", self.num_threads, 1, MAX_THREADS,
                                            "Leave it empty to use every core of this computer.")
        if self.log_every_steps < 1:
            raise ConfigError("log_every_steps must be at least 1.")
        self.epochs = int(self.epochs)
        self.batch_size = int(self.batch_size)

    def resolved_lr(self, preset: str) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[parse_preset(preset)[0]]


@dataclass
class RunConfig:
    """Everything that defines a run; saved as the run folder's ``config.json``."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None

    def __post_init__(self) -> None:
        kind = self.freeze.kind
        if kind == "scratch" and self.model.weights not in ("none", "auto"):
            raise ConfigError("'From scratch' starts from random weights: leave weights on 'none'.")
        if self.model.weights == "none" and kind != "scratch":
            raise ConfigError(
                "Without pretrained weights there is nothing to freeze. Pick the 'scratch' preset "
                "to train from random weights on purpose, or choose weights 'auto'/'offline'."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        if not isinstance(raw, dict) or "data" not in raw:
            raise ConfigError("This configuration has no 'data' section.")
        parts = {"data": DataConfig, "model": ModelConfig, "freeze": FreezeConfig, "train": TrainConfig}
        unknown = set(raw) - set(parts) - {"name"}
        if unknown:
            raise ConfigError(f"Unknown configuration section(s): {', '.join(sorted(unknown))}.")
        built: dict[str, Any] = {"name": raw.get("name")}
        for key, klass in parts.items():
            section = raw.get(key) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"The '{key}' section must be a mapping.")
            allowed = {f.name for f in dataclasses.fields(klass)}
            extra = set(section) - allowed
            if extra:
                raise ConfigError(f"Unknown setting(s) in '{key}': {', '.join(sorted(extra))}.")
            try:
                built[key] = klass(**section)
            except TypeError as err:  # a required field is missing
                raise ConfigError(f"The '{key}' section is incomplete: {err}.") from None
        return cls(**built)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"The configuration file is not valid JSON ({err.msg} at line {err.lineno}).") from None
        return cls.from_dict(raw)

    def save(self, path: str | Path) -> None:
        from tl_core.files import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"No configuration file at {p}.")
        return cls.from_json(p.read_text(encoding="utf-8"))
