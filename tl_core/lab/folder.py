"""An experiment is a folder, like a run (docs/ARCHITECTURE.md, rule 4).

``experiments/<id>/`` holds everything about one Lab experiment as it happens, so a refresh, a
restart or a crash loses only the run that was training::

    experiment.json   what was asked: the kind and its settings (written once, before any work)
    status.json       running / finished / stopped / failed, the progress and the time left
    parts.jsonl       one line per run that ended (finished, stopped or failed), with its numbers
    results.json      the numbers and the conclusion, rewritten after every finished run
    runs/<run id>/    every run the experiment made: ordinary run folders
    data/             the picture folders the data-size experiment trained on (linked, not copied)

Whole files are written atomically (:func:`tl_core.files.write_json_atomic`); parts.jsonl only
grows, one line at a time, and a damaged last line (a crash mid-write) is skipped when read.
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
from typing import Any

from tl_core.errors import RunError
from tl_core.files import write_json_atomic

EXPERIMENT_FILE = "experiment.json"
STATUS_FILE = "status.json"
PARTS_FILE = "parts.jsonl"
RESULTS_FILE = "results.json"
RUNS_DIR = "runs"
DATA_DIR = "data"
STATES = ("running", "finished", "stopped", "failed")
FORMAT_VERSION = 1


def default_experiments_dir() -> Path:
    """``$TL_EXPERIMENTS_DIR`` or ``./experiments``: where ``tl lab`` keeps experiments by default."""
    return Path(os.environ.get("TL_EXPERIMENTS_DIR", "experiments")).expanduser()


def new_experiment_id(kind: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", kind)[:20]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def _read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``; ``default`` when it is missing or damaged (lists never fail on one folder)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@dataclass
class ExperimentFolder:
    """Reads and writes one experiment folder; holds no open files."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @classmethod
    def create(cls, kind: str, config: dict, root: str | Path | None = None) -> "ExperimentFolder":
        root = Path(root) if root is not None else default_experiments_dir()
        path = root / new_experiment_id(kind)
        try:
            (path / RUNS_DIR).mkdir(parents=True, exist_ok=False)
        except OSError as err:
            raise RunError(f"Cannot create the experiment folder {path}: {err.strerror or err}. Choose a folder you "
                           "can write to.") from None
        folder = cls(path)
        write_json_atomic(path / EXPERIMENT_FILE, {"kind": kind, "config": config, "created_at": time.time(),
                                                   "format": FORMAT_VERSION})
        folder.write_status("running", "Starting.", fraction=0.0)
        return folder

    @classmethod
    def open(cls, path: str | Path) -> "ExperimentFolder":
        p = Path(path)
        if not (p / EXPERIMENT_FILE).is_file():
            raise RunError(f"{p} is not a Transfer Lab experiment folder (no {EXPERIMENT_FILE}).")
        return cls(p)

    # -- what was asked ---------------------------------------------------------------------
    @property
    def experiment_id(self) -> str:
        return self.path.name

    def definition(self) -> dict:
        return _read_json(self.path / EXPERIMENT_FILE, {}) or {}

    @property
    def kind(self) -> str:
        return str(self.definition().get("kind", "?"))

    @property
    def runs_dir(self) -> Path:
        return self.path / RUNS_DIR

    @property
    def data_dir(self) -> Path:
        return self.path / DATA_DIR

    # -- status -----------------------------------------------------------------------------
    def write_status(self, state: str, message: str = "", **extra: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown experiment state {state!r}")
        previous = _read_json(self.path / STATUS_FILE, {})
        previous = previous if isinstance(previous, dict) else {}
        now = time.time()
        status = {**previous, **extra, "state": state, "message": message, "updated_at": now, "pid": os.getpid(),
                  "host": socket.gethostname()}
        status.setdefault("started_at", now)
        if state != "running":
            status["finished_at"] = now
            status["eta_seconds"] = 0.0
        write_json_atomic(self.path / STATUS_FILE, status)

    def status(self) -> dict:
        """The status as written, except that an experiment whose process is gone while it says
        "running" is reported as stopped (interrupted): its finished runs are kept."""
        status = _read_json(self.path / STATUS_FILE, None)
        if not isinstance(status, dict) or status.get("state") not in STATES:
            return {"state": "failed", "message": f"{STATUS_FILE} in {self.path} is missing or damaged."}
        if status["state"] == "running" and status.get("host") == socket.gethostname():
            pid = status.get("pid")
            if isinstance(pid, int) and not _alive(pid):
                status = {**status, "state": "stopped", "interrupted": True, "eta_seconds": 0.0,
                          "message": "Interrupted: the program running this experiment stopped. The runs that "
                                     "finished before are kept."}
        return status

    # -- results ----------------------------------------------------------------------------
    def add_part(self, record: dict) -> None:
        line = json.dumps(record, default=str, allow_nan=False) + "\n"
        with open(self.path / PARTS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    def parts(self) -> list[dict]:
        try:
            lines = (self.path / PARTS_FILE).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(record, dict):
                out.append(record)
        return out

    def save_results(self, results: dict) -> None:
        write_json_atomic(self.path / RESULTS_FILE, results)

    def results(self) -> dict | None:
        found = _read_json(self.path / RESULTS_FILE, None)
        return found if isinstance(found, dict) else None

    def describe(self) -> dict:
        """One row for a list of experiments: plain data, never raises for a damaged folder."""
        definition = self.definition()
        status = self.status()
        results = self.results() or {}
        config = definition.get("config") if isinstance(definition.get("config"), dict) else {}
        return {"experiment_id": self.experiment_id, "path": str(self.path), "kind": definition.get("kind", "?"),
                "created_at": definition.get("created_at"), "data_dir": config.get("data_dir"),
                "state": status.get("state"), "message": status.get("message", ""),
                "fraction": status.get("fraction"), "parts_done": status.get("parts_done"),
                "parts_total": status.get("parts_total"), "conclusion": results.get("conclusion", "")}


def list_experiments(root: str | Path | None = None) -> list[dict]:
    """Every experiment folder under ``root`` (default :func:`default_experiments_dir`), newest first."""
    root = Path(root) if root is not None else default_experiments_dir()
    try:
        entries = [p for p in root.iterdir() if (p / EXPERIMENT_FILE).is_file()]
    except OSError:
        return []
    rows = [ExperimentFolder(p).describe() for p in entries]
    return sorted(rows, key=lambda r: (r.get("created_at") or 0, r["experiment_id"]), reverse=True)


__all__ = ["ExperimentFolder", "list_experiments", "default_experiments_dir", "EXPERIMENT_FILE", "STATUS_FILE",
           "PARTS_FILE", "RESULTS_FILE", "RUNS_DIR", "DATA_DIR", "STATES"]
