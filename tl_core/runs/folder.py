"""The run folder: everything about one training run, on disk.

A run folder alone is enough to redraw the curves, evaluate, predict and export, so nothing is
lost when a tab closes or the server restarts. Layout::

    runs/<run-id>/config.json        RunConfig
                  status.json        state (queued|running|finished|stopped|failed) + message
                  metrics.jsonl      one event per line, flushed as it happens
                  model.safetensors  best weights so far
                  labels.json        class names in output order
                  preprocessing.json input size, mean, std, interpolation, crop
                  summary.json       data, freeze plan and final metrics (for the model card)

Writes of whole files are atomic (temp file + ``os.replace``) so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tl_core.config import RunConfig
from tl_core.errors import RunError
from tl_core.files import atomic_path, write_json_atomic
from tl_core.runs.events import EPOCH_END

STATES = ("queued", "running", "finished", "stopped", "failed")
ACTIVE_STATES = ("queued", "running")
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"
PREPROCESSING_FILE = "preprocessing.json"
SUMMARY_FILE = "summary.json"


def default_runs_dir() -> Path:
    """``$TL_RUNS_DIR`` or ``./runs``: where the app and the CLI keep runs by default."""
    return Path(os.environ.get("TL_RUNS_DIR", "runs")).expanduser()


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path.name} in {path.parent} is damaged ({err}).") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run_id(model_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name)[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


@dataclass
class RunFolder:
    """Reads and writes one run folder; cheap to create, holds no open files."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, config: RunConfig, runs_dir: str | Path | None = None, run_id: str | None = None) -> "RunFolder":
        runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        run_id = run_id or new_run_id(config.model.name)
        path = runs_dir / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise RunError(f"A run called {run_id} already exists in {runs_dir}.") from None
        except OSError as err:
            raise RunError(f"Cannot create the run folder {path}: {err.strerror}.") from None
        run = cls(path)
        config.save(path / CONFIG_FILE)
        run.write_status("queued", "Waiting to start.")
        (path / METRICS_FILE).touch()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        p = Path(path)
        if not (p / CONFIG_FILE).is_file():
            raise RunError(f"{p} is not a Transfer Lab run folder (no {CONFIG_FILE}).")
        return cls(p)

    @property
    def run_id(self) -> str:
        return self.path.name

    # -- config / labels / preprocessing ----------------------------------------------------
    def config(self) -> RunConfig:
        return RunConfig.load(self.path / CONFIG_FILE)

    def save_labels(self, classes: list[str]) -> None:
        write_json_atomic(self.path / LABELS_FILE, list(classes))

    def labels(self) -> list[str]:
        labels = read_json(self.path / LABELS_FILE)
        if not labels:
            raise RunError(f"Run {self.run_id} has no labels yet: it never got as far as reading the data.")
        return labels

    def save_preprocessing(self, prep: dict) -> None:
        write_json_atomic(self.path / PREPROCESSING_FILE, prep)

    def preprocessing(self) -> dict:
        prep = read_json(self.path / PREPROCESSING_FILE)
        if not prep:
            raise RunError(f"Run {self.run_id} has no preprocessing.json.")
        return prep

    def save_summary(self, summary: dict) -> None:
        merged = {**(read_json(self.path / SUMMARY_FILE, {}) or {}), **summary}
        write_json_atomic(self.path / SUMMARY_FILE, merged)

    def summary(self) -> dict:
        return read_json(self.path / SUMMARY_FILE, {}) or {}

    # -- status -----------------------------------------------------------------------------
    def write_status(self, state: str, message: str = "", **extra: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        now = time.time()
        previous = read_json(self.path / STATUS_FILE, {}) or {}
        status = {**previous, **extra, "state": state, "message": message, "updated_at": now,
                  "pid": os.getpid(), "host": socket.gethostname()}
        status.setdefault("created_at", now)
        if state == "running":
            status.setdefault("started_at", now)
        if state in ("finished", "stopped", "failed"):
            status["finished_at"] = now
        write_json_atomic(self.path / STATUS_FILE, status)

    def status(self) -> dict:
        """The status as written, except that a run whose training process is gone while it
        says "running" is reported as failed (interrupted): its best weights are still there."""
        status = read_json(self.path / STATUS_FILE, {}) or {"state": "failed", "message": "No status file."}
        if status.get("state") in ACTIVE_STATES and status.get("host") == socket.gethostname():
            pid = status.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                status = {**status, "state": "failed", "interrupted": True,
                          "message": "Interrupted: the app or the training process stopped while this run was "
                                     "training. The best weights saved so far are kept."
                                     if self.has_weights() else
                                     "Interrupted before any weights were saved."}
        return status

    @property
    def state(self) -> str:
        return self.status().get("state", "failed")

    # -- events -----------------------------------------------------------------------------
    def append_event(self, event: dict) -> None:
        line = json.dumps(event, default=float, allow_nan=True)
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    def events(self, kinds: tuple[str, ...] | None = None) -> list[dict]:
        return list(self.iter_events(kinds))

    def iter_events(self, kinds: tuple[str, ...] | None = None) -> Iterator[dict]:
        """Events written so far; a half-written last line (a run still writing) is skipped."""
        try:
            fh = open(self.path / METRICS_FILE, encoding="utf-8")
        except FileNotFoundError:
            return
        with fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if kinds is None or ev.get("event") in kinds:
                    yield ev

    def epoch_logs(self) -> list[dict]:
        return [dict(ev["logs"], epoch=ev["epoch"]) for ev in self.iter_events((EPOCH_END,))]

    # -- weights ----------------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    def save_weights(self, state_dict: dict, metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        with atomic_path(self.weights_path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata or {})

    def load_state_dict(self) -> dict:
        from safetensors.torch import load_file

        if not self.has_weights():
            raise RunError(f"Run {self.run_id} has no saved weights (it stopped before the first epoch ended).")
        return load_file(str(self.weights_path))

    def describe(self) -> dict:
        """A plain-data summary for run lists."""
        status = self.status()
        try:
            cfg = self.config()
            model, preset, data = cfg.model.name, cfg.freeze.preset, cfg.data.root
        except Exception:  # a damaged config must not hide the other runs
            model = preset = data = "?"
        summ = self.summary()
        return {"run_id": self.run_id, "path": str(self.path), "state": status.get("state"),
                "message": status.get("message", ""), "model": model, "preset": preset, "data": data,
                "created_at": status.get("created_at"), "best_val_accuracy": summ.get("best_val_accuracy",
                                                                                      status.get("best_val_accuracy")),
                "epochs_done": status.get("epoch"), "has_weights": self.has_weights()}


def list_runs(runs_dir: str | Path | None = None) -> list[dict]:
    """Every run folder under ``runs_dir``, newest first."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if (child / CONFIG_FILE).is_file():
            try:
                out.append(RunFolder(child).describe())
            except RunError as err:
                out.append({"run_id": child.name, "path": str(child), "state": "failed", "message": str(err)})
    out.sort(key=lambda d: (d.get("created_at") or 0, d["run_id"]), reverse=True)
    return out
