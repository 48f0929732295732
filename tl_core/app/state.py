"""The user's choices, remembered on disk so a refresh or a server restart finds them again, and
which run a page should show."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from tl_core.app.workspace import runs_dir
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, TrainConfig
from tl_core.files import write_json_atomic
from tl_core.models import RECOMMENDED_MODEL
from tl_core.runs import ACTIVE_STATES, RunFolder, list_runs, read_json

UI_STATE_FILE = "ui_state.json"


@dataclasses.dataclass
class UIState:
    """The user's choices, shared by the pages and saved per browser session (:mod:`tl_core.app.sessions`)."""

    data_root: str | None = None
    data_source: str | None = None          # "sample", "upload", "zip", "path" or "run"
    val_fraction: float = 0.2
    model_name: str | None = None
    freeze: dict = dataclasses.field(default_factory=lambda: dataclasses.asdict(FreezeConfig()))
    train: dict = dataclasses.field(default_factory=dict)   # only the settings the user changed
    run_dir: str | None = None

    def data_config(self) -> DataConfig | None:
        if not self.data_root:
            return None
        return DataConfig(root=self.data_root, val_fraction=self.val_fraction)

    def model_config(self) -> ModelConfig:
        return ModelConfig(name=self.model_name or RECOMMENDED_MODEL)

    def freeze_config(self) -> FreezeConfig:
        allowed = {f.name for f in dataclasses.fields(FreezeConfig)}
        return FreezeConfig(**{k: v for k, v in (self.freeze or {}).items() if k in allowed})

    def train_config(self, **overrides: Any) -> TrainConfig:
        allowed = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in {**(self.train or {}), **overrides}.items() if k in allowed}
        return TrainConfig(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict | None) -> "UIState":
        raw = raw if isinstance(raw, dict) else {}
        allowed = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in raw.items() if k in allowed})
        try:  # drop remembered settings that no longer validate
            state.freeze_config()
        except Exception:
            state.freeze = dataclasses.asdict(FreezeConfig())
        try:
            state.train_config()
        except Exception:
            state.train = {}
        try:
            state.val_fraction = float(state.val_fraction)
            DataConfig(root="x", val_fraction=state.val_fraction)
        except Exception:
            state.val_fraction = 0.2
        return state


def write_ui_state(path: Path, state: UIState) -> None:
    try:
        write_json_atomic(path, state.to_dict())
    except OSError:  # a read-only workspace must not break the app; choices just are not remembered
        pass


def read_ui_state(path: Path) -> UIState | None:
    """Choices saved at ``path``, with what no longer exists (a deleted folder or run) dropped;
    None when nothing readable is there."""
    try:
        raw = read_json(path)
    except Exception:  # noqa: BLE001 - a damaged state file is a clean start, not an error
        return None
    if not isinstance(raw, dict) or not raw:
        return None
    state = UIState.from_dict(raw)
    if state.data_root and not Path(state.data_root).is_dir():
        state.data_root, state.data_source = None, None
    if state.run_dir and not (Path(state.run_dir) / "config.json").is_file():
        state.run_dir = None
    return state


def state_from_runs(runs: list[dict] | None = None) -> UIState:
    """Choices recovered from the newest run folder (after the workspace was lost)."""
    runs = list_runs(runs_dir()) if runs is None else runs
    state = UIState()
    for desc in runs:
        try:
            cfg = RunFolder.open(desc["path"]).config()
        except Exception:
            continue
        state.run_dir = desc["path"]
        if Path(cfg.data.root).is_dir():
            state.data_root, state.data_source = cfg.data.root, "run"
        state.val_fraction = cfg.data.val_fraction
        state.model_name = cfg.model.name
        state.freeze = dataclasses.asdict(cfg.freeze)
        defaults = dataclasses.asdict(TrainConfig())
        state.train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if defaults.get(k) != v}
        break
    return state


def pick_run_to_show(session_run: str | None, active_run: str | None, runs: list[dict]) -> str | None:
    """A running job wins (a refresh or a second tab must see it), then the session's own run,
    then the newest run that is running, then the newest run."""
    if active_run:
        return str(active_run)
    if session_run and (Path(session_run) / "config.json").is_file():
        return str(session_run)
    for desc in runs:
        if desc.get("state") in ACTIVE_STATES:
            return desc["path"]
    return runs[0]["path"] if runs else None


def freeze_from_toggles(group_names: list[str], frozen: Iterable[str], classifier: str = "classifier",
                        layer_lr_decay: float = 1.0) -> dict:
    """The FreezeConfig (as a dict) for a set of ticked groups: a preset when the ticks match one
    ('head', 'last:N', 'none'), else the explicit list with the nearest preset kept for defaults
    such as the learning rate."""
    body = [g for g in group_names if g != classifier]
    frozen_set = {g for g in frozen if g != classifier}
    flags = [g in frozen_set for g in body]
    n_trainable = flags.count(False)
    is_prefix = all(flags[:len(body) - n_trainable]) and not any(flags[len(body) - n_trainable:])
    if n_trainable == 0:
        preset = "head"
    elif n_trainable == len(body):
        preset = "none"
    else:
        preset = f"last:{n_trainable}"
    return {"preset": preset, "frozen_groups": None if is_prefix else [g for g in body if g in frozen_set],
            "layer_lr_decay": layer_lr_decay}
