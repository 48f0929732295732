"""Plain-Python helpers for the Streamlit pages (no Streamlit import here).

The pages stay thin: they read widgets, build config dataclasses, call one tl_core function and
draw. What is left over -- where the workspace is, remembering the user's choices on disk so a
refresh or a server restart finds them again, finding the run to show, turning run events into
progress text -- lives here, where it can be tested without a browser.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, TrainConfig
from tl_core.runs import ACTIVE_STATES, RunFolder, default_runs_dir, list_runs, read_json, write_json_atomic

UI_STATE_FILE = "ui_state.json"
UPLOAD_LIMIT_MB_DEFAULT = 500


# -- places on disk -----------------------------------------------------------------------------

def workspace_dir() -> Path:
    """``$TL_WORKSPACE`` or ``./workspace``: uploads and the remembered choices live here."""
    root = Path(os.environ.get("TL_WORKSPACE") or "workspace").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_dir() -> Path:
    return default_runs_dir()


def new_upload_dir(kind: str = "upload") -> Path:
    """A fresh (not yet created) folder for one upload: ``workspace/uploads/<time>-<kind>-<token>``."""
    parent = workspace_dir() / "uploads"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"


def upload_limit_mb(config_path: str | Path | None = None) -> int:
    """``server.maxUploadSize`` from ``.streamlit/config.toml`` (500 MB when not set)."""
    candidates = [Path(config_path)] if config_path else [Path(".streamlit/config.toml"),
                                                          Path(__file__).resolve().parents[2] / ".streamlit"
                                                          / "config.toml"]
    for path in candidates:
        try:
            import tomllib

            with open(path, "rb") as fh:
                value = tomllib.load(fh).get("server", {}).get("maxUploadSize")
            if value:
                return int(value)
        except (OSError, ValueError, ImportError):
            continue
    return UPLOAD_LIMIT_MB_DEFAULT


def folder_fingerprint(root: str | Path) -> tuple[int, int, float]:
    """(files, total bytes, newest mtime) of a folder tree: changes when its content changes."""
    n = size = 0
    newest = 0.0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            n += 1
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return n, size, newest


# -- remembered choices ---------------------------------------------------------------------------

@dataclasses.dataclass
class UIState:
    """The user's choices, shared by the pages and saved to ``workspace/ui_state.json``."""

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
        from tl_core.models import RECOMMENDED_MODEL

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


def ui_state_path() -> Path:
    return workspace_dir() / UI_STATE_FILE


def save_ui_state(state: UIState) -> None:
    try:
        write_json_atomic(ui_state_path(), state.to_dict())
    except OSError:  # a read-only workspace must not break the app; choices just are not remembered
        pass


def load_ui_state() -> UIState:
    """The remembered choices; when there are none, rebuilt from the newest run folder."""
    try:
        raw = read_json(ui_state_path())
    except Exception:
        raw = None
    if raw:
        state = UIState.from_dict(raw)
        if state.data_root and not Path(state.data_root).is_dir():
            state.data_root, state.data_source = None, None
        if state.run_dir and not (Path(state.run_dir) / "config.json").is_file():
            state.run_dir = None
        return state
    return state_from_runs()


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


# -- which run to show ----------------------------------------------------------------------------

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


def run_label(desc: dict) -> str:
    """One line for a run picker: when, which model, state, best accuracy."""
    when = desc.get("created_at")
    stamp = time.strftime("%d %b %H:%M", time.localtime(when)) if when else desc.get("run_id", "?")
    acc = desc.get("best_val_accuracy")
    acc_txt = f", best {acc:.0%}" if isinstance(acc, (int, float)) and acc >= 0 else ""
    return f"{stamp} · {desc.get('model', '?')} · {desc.get('state', '?')}{acc_txt}"


# -- progress from events -------------------------------------------------------------------------

STAGE_LABELS = {"check": "Checking images", "decode": "Reading images", "features": "Computing features once",
                "weights": "Loading pretrained weights"}

WARNING_TITLES = {"overfitting": "Memorising instead of learning", "loss_not_falling": "Not learning yet",
                  "nan": "Training broke down", "early_stop": "Stopped early", "unreadable": "Skipped a picture",
                  "no_feature_cache": "Slower training"}


@dataclasses.dataclass
class LiveView:
    """Everything the Train page draws about a run, read from its folder in one go."""

    run_dir: str
    state: str
    message: str
    epoch: int
    epochs: int
    fraction: float                  # 0..1 of the whole run
    eta_seconds: float | None
    images_per_sec: float | None
    prepare: dict | None              # latest on_prepare: stage, done, total (while preparing)
    epoch_logs: list[dict]
    batch_events: list[dict]
    warnings: list[dict]
    info: dict | None                 # on_fit_start payload
    result: dict | None               # on_fit_end payload
    elapsed_seconds: float | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def bar_fraction(self) -> float:
        """What a progress bar should show: the preparation stage while preparing, else the run."""
        if self.prepare is not None and self.active and self.info is None:
            total = max(int(self.prepare.get("total") or 0), 1)
            return min(max(int(self.prepare.get("done") or 0) / total, 0.0), 1.0)
        return self.fraction

    def progress_text(self) -> str:
        if self.state == "queued":
            return "Waiting to start…"
        if self.prepare is not None and not self.epoch_logs and self.info is None:
            label = STAGE_LABELS.get(self.prepare.get("stage"), self.prepare.get("stage", "Preparing"))
            return f"Preparing: {label} ({self.prepare.get('done', 0)} of {self.prepare.get('total', 0)})"
        parts = [f"Epoch {min(self.epoch + (1 if self.active else 0), max(self.epochs, 1))} of {self.epochs}"
                 if self.active else f"{self.epoch} of {self.epochs} epochs done"]
        if self.images_per_sec:
            parts.append(f"{self.images_per_sec:,.0f} images/s")
        if self.active and self.eta_seconds is not None:
            parts.append("almost done" if self.eta_seconds < 1 else f"about {format_seconds(self.eta_seconds)} left")
        return " · ".join(parts)


def live_view(run_dir: str | Path) -> LiveView:
    run = RunFolder(Path(run_dir))
    status = run.status()
    events = run.events()
    info = next((e.get("info") for e in events if e.get("event") == "on_fit_start"), None)
    result = next((e.get("logs") for e in reversed(events) if e.get("event") == "on_fit_end"), None)
    epoch_logs = [dict(e["logs"], epoch=e["epoch"]) for e in events if e.get("event") == "on_epoch_end"]
    batches = [e for e in events if e.get("event") == "on_batch_end"]
    warnings = [e for e in events if e.get("event") == "on_warning"]
    prepares = [e for e in events if e.get("event") == "on_prepare"]
    prepare = prepares[-1] if prepares and info is None else None
    state = status.get("state", "failed")
    epochs = int(status.get("epochs") or (info or {}).get("epochs") or (run_epochs(run) or 0))
    epoch = len(epoch_logs)
    fraction = 0.0
    ips = None
    if batches:
        last = batches[-1].get("logs", {})
        fraction = float(last.get("progress") or 0.0)
        ips = last.get("images_per_sec")
    if epochs:
        fraction = max(fraction, epoch / epochs)
    if epoch_logs:
        ips = ips or epoch_logs[-1].get("images_per_sec")
    eta = None
    if state in ACTIVE_STATES:
        if epoch_logs and epoch_logs[-1].get("eta_seconds") is not None:
            eta = float(epoch_logs[-1]["eta_seconds"])
            # subtract the time spent in the current epoch so far
            last_t = next((e.get("time") for e in reversed(events) if e.get("event") == "on_epoch_end"), None)
            if last_t:
                per_epoch = epoch_logs[-1].get("epoch_seconds") or 0
                eta = max(0.0, eta - min(per_epoch, time.time() - last_t))
        elif batches and info is not None and fraction > 0:
            start = next((e.get("time") for e in events if e.get("event") == "on_fit_start"), None)
            if start:
                spent = time.time() - start
                eta = spent * (1 - fraction) / fraction
    else:
        fraction = 1.0 if state == "finished" else fraction
    started = status.get("started_at") or status.get("created_at")
    ended = status.get("finished_at") if state not in ACTIVE_STATES else time.time()
    elapsed = (ended - started) if started and ended else None
    return LiveView(run_dir=str(run.path), state=state, message=status.get("message", ""), epoch=epoch,
                    epochs=epochs, fraction=min(max(fraction, 0.0), 1.0), eta_seconds=eta, images_per_sec=ips,
                    prepare=prepare, epoch_logs=epoch_logs, batch_events=batches, warnings=warnings, info=info,
                    result=result, elapsed_seconds=elapsed)


def run_epochs(run: RunFolder) -> int | None:
    try:
        return run.config().train.epochs
    except Exception:
        return None


# -- formatting -----------------------------------------------------------------------------------

def format_seconds(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "?"
    s = max(0.0, float(seconds))
    if s < 1:
        return "under a second"
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def format_params(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k"
    return f"{n:.0f}"


def preset_label(preset: str) -> str:
    kind, n = _parse(preset)
    return {"head": "Train only the new classifier (fast, best for small data)",
            "last": f"Also fine-tune the last {n} layer group{'s' if n != 1 else ''}",
            "none": "Fine-tune everything (slow, needs more images)",
            "scratch": "From scratch: no pretrained knowledge (for comparison)"}[kind]


def _parse(preset: str) -> tuple[str, int]:
    from tl_core.config import parse_preset

    return parse_preset(preset)


# -- examples and checks ----------------------------------------------------------------------------

def examples_per_class(records: Iterable[Any], k: int = 4) -> dict[str, list[Any]]:
    """The first ``k`` records of each class, in class order of first appearance."""
    out: dict[str, list[Any]] = {}
    for r in records:
        bucket = out.setdefault(r.label, [])
        if len(bucket) < k:
            bucket.append(r)
    return out


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_CHECKS = _LRU(8)


def checked_dataset(root: str | Path, progress: Callable[[int, int], None] | None = None):
    """:func:`tl_core.data.checks.check_dataset`, remembered per folder content for this process
    (the Data page redraws on every click; opening every picture each time would be slow)."""
    from tl_core.data.checks import check_dataset

    key = (str(Path(root).resolve()), folder_fingerprint(root))
    hit = _CHECKS.get(key)
    if hit is not None:
        return hit
    report = check_dataset(root, progress=progress)
    _CHECKS.put(key, report)
    return report


def cached_check(root: str | Path):
    """The remembered check of ``root`` when there is one, else None (never opens pictures)."""
    return _CHECKS.get((str(Path(root).resolve()), folder_fingerprint(root)))


def split_counts(counts: dict[str, int], val_fraction: float) -> dict[str, tuple[int, int]]:
    """(train, validation) pictures per class for a validation share (a preview of the split)."""
    out = {}
    for label, n in counts.items():
        n_val = int(round(n * val_fraction)) if n >= 2 else 0
        n_val = min(max(n_val, 1 if n >= 2 else 0), max(n - 1, 0))
        out[label] = (n - n_val, n_val)
    return out


def uploaded_signature(files: Iterable[Any]) -> str:
    """A stable id for what is in a file uploader, so a rerun does not save it again."""
    parts = sorted(f"{getattr(f, 'file_id', '')}:{getattr(f, 'name', '')}:{getattr(f, 'size', '')}"
                   for f in files)
    return str(hash(tuple(parts)))


def json_dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def quick_counts(root: str | Path) -> dict[str, int]:
    """Pictures per class: from the remembered check when there is one, else from a name-only scan
    (instant; unreadable files are still counted until the Data page checks them)."""
    report = cached_check(root)
    if report is not None:
        return dict(report.counts)
    from tl_core.data.scan import scan_folder

    return scan_folder(root).counts()


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
