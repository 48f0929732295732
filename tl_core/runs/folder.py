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
                  user.json          what the user wrote: a title and a note (optional)

A run the user deletes goes to ``runs/.trash/<when>__<run-id>/`` first (:func:`trash_run`), from
where :func:`restore_run` brings it back; only :func:`empty_trash` removes folders for good.

Writes of whole files are atomic (temp file + ``os.replace``) so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import socket
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tl_core.config import RunConfig
from tl_core.errors import ConfigError, RunError
from tl_core.files import atomic_path, write_json_atomic
from tl_core.runs.contents import (ADVICE, bundle_notes_problem, check_labels, check_model_name, check_preprocessing,
                                   damaged, status_problem, weights_header_problem)
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
USER_FILE = "user.json"
TRASH_DIR = ".trash"
TITLE_MAX_CHARS = 80
NOTE_MAX_CHARS = 2000
_TRASH_STAMP = "%Y%m%d-%H%M%S"


def default_runs_dir() -> Path:
    """``$TL_RUNS_DIR`` or ``./runs``: where the app and the CLI keep runs by default."""
    return Path(os.environ.get("TL_RUNS_DIR", "runs")).expanduser()


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, ``default`` when there is no such file, and a plain :class:`RunError`
    naming the file when it cannot be read or is not JSON (never a stack trace)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path.name} in {path.parent} is damaged ({err}).") from None
    except OSError as err:  # a folder in its place, no permission...
        raise RunError(f"{path.name} in {path.parent} cannot be read ({err.strerror or err}).") from None


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
        """The run's settings; a damaged config.json is a :class:`RunError` that names it."""
        path = self.path / CONFIG_FILE
        try:
            return RunConfig.load(path)
        except ConfigError as err:
            raise damaged(path, f"is not a valid run configuration ({err})") from None
        except (UnicodeDecodeError, TypeError, ValueError) as err:  # a setting of the wrong kind
            raise damaged(path, f"is not a valid run configuration ({type(err).__name__}: {str(err)[:120]})") from None
        except OSError as err:
            raise RunError(f"{path.name} in {self.path} cannot be read ({err.strerror or err}).") from None

    def save_labels(self, classes: list[str]) -> None:
        write_json_atomic(self.path / LABELS_FILE, list(classes))

    def labels(self) -> list[str]:
        """The category names in output order, checked (:func:`~tl_core.runs.contents.check_labels`)."""
        labels = read_json(self.path / LABELS_FILE)
        if labels is None:
            raise RunError(f"Run {self.run_id} has no labels yet: it never got as far as reading the data.")
        return check_labels(labels, self.path / LABELS_FILE)

    def save_preprocessing(self, prep: dict) -> None:
        write_json_atomic(self.path / PREPROCESSING_FILE, prep)

    def preprocessing(self) -> dict:
        """How pictures become the model's input, checked
        (:func:`~tl_core.runs.contents.check_preprocessing`): bounded like training, no division by zero."""
        prep = read_json(self.path / PREPROCESSING_FILE)
        if prep is None:
            raise RunError(f"Run {self.run_id} has no preprocessing.json.")
        return check_preprocessing(prep, self.path / PREPROCESSING_FILE)

    def save_summary(self, summary: dict) -> None:
        try:
            previous = self.summary()
        except RunError:  # a damaged summary is replaced, not a reason to lose the new facts
            previous = {}
        write_json_atomic(self.path / SUMMARY_FILE, {**previous, **summary})

    def summary(self) -> dict:
        """What the run recorded for the model card and the screens ({} before it has any);
        a summary.json that is not a JSON object is a :class:`RunError` naming it."""
        path = self.path / SUMMARY_FILE
        summary = read_json(path, {})
        if summary is None:
            return {}
        if not isinstance(summary, dict):
            raise damaged(path, "should hold the run's facts, but holds something else")
        return summary

    # -- status -----------------------------------------------------------------------------
    def write_status(self, state: str, message: str = "", **extra: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        now = time.time()
        try:
            previous = read_json(self.path / STATUS_FILE, {})
        except RunError:  # a damaged status is replaced by the new one
            previous = {}
        previous = previous if isinstance(previous, dict) else {}
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
        says "running" is reported as failed (interrupted): its best weights are still there.
        A damaged status.json never raises: the run is reported as failed, ``damaged`` True, with
        a message that names the file (run lists and live views go on for the other runs)."""
        status = self._status_as_written()
        if status.get("state") in ACTIVE_STATES and status.get("host") == socket.gethostname():
            pid = status.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                status = {**status, "state": "failed", "interrupted": True,
                          "message": "Interrupted: the app or the training process stopped while this run was "
                                     "training. The best weights saved so far are kept."
                                     if self.has_weights() else
                                     "Interrupted before any weights were saved."}
        return status

    def _status_as_written(self) -> dict:
        path = self.path / STATUS_FILE
        try:
            status = read_json(path)
        except RunError as err:
            return {"state": "failed", "damaged": True, "message": f"{err} {ADVICE}"}
        if status is None:
            return {"state": "failed", "message": "No status file."}
        problem = status_problem(status, STATES)
        if problem is not None:
            return {"state": "failed", "damaged": True, "message": str(damaged(path, problem))}
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
        """Events written so far. A half-written last line (a run still writing) is left for later,
        and a line that is not a well-formed event (damaged bytes, not JSON, not an object, an
        epoch without its numbers) is skipped, so a damaged line costs that line, not the run."""
        try:
            fh = open(self.path / METRICS_FILE, "rb")
        except FileNotFoundError:
            return
        except OSError:  # a folder in its place, no permission: no events to show
            return
        with fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break
                ev = _parse_event(raw)
                if ev is not None and (kinds is None or ev.get("event") in kinds):
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
        """The saved weights as they are in the file (:func:`tl_core.runs.validate.check_run` also
        checks them against the model); a damaged file is a :class:`RunError` that names it."""
        from safetensors.torch import load_file

        if not self.has_weights():
            raise RunError(f"Run {self.run_id} has no saved weights (it stopped before the first epoch ended).")
        problem = weights_header_problem(self.weights_path)
        if problem is not None:
            raise damaged(self.weights_path, problem)
        try:
            return load_file(str(self.weights_path))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error kinds
            raise damaged(self.weights_path, f"cannot be read as weights ({type(err).__name__})") from None

    def problem(self) -> str | None:
        """Why this run cannot be loaded, from its small files and the header of its weights; None
        when nothing is wrong (or it has not got that far yet). Quick (no PyTorch, a few kilobytes
        read), so run lists show a damaged run as damaged; loading checks everything
        (:func:`tl_core.runs.validate.check_run`)."""
        try:
            name = check_model_name(self.config().model.name, self.path / CONFIG_FILE)
            classes = self.labels() if (self.path / LABELS_FILE).exists() else None
            prep = self.preprocessing() if (self.path / PREPROCESSING_FILE).exists() else None
        except RunError as err:
            return str(err)
        notes = bundle_notes_problem(prep, name, len(classes)) if prep is not None and classes is not None else None
        if notes is not None:
            return str(damaged(self.path / PREPROCESSING_FILE, notes))
        if self.has_weights():
            weights = weights_header_problem(self.weights_path)
            if weights is not None:
                return str(damaged(self.weights_path, weights))
        return None

    # -- what the user wrote: title and note -------------------------------------------------
    def user(self) -> dict:
        """``{"title": str | None, "note": str | None}`` from ``user.json`` (both None when absent)."""
        raw = read_json(self.path / USER_FILE, {}) or {}
        raw = raw if isinstance(raw, dict) else {}
        return {k: (raw.get(k) if isinstance(raw.get(k), str) and raw.get(k) else None) for k in ("title", "note")}

    def rename(self, title: str | None) -> str | None:
        """Give the run a title (one line, at most ``TITLE_MAX_CHARS``); empty or None removes it.
        Returns the title as stored (trimmed)."""
        title = _clean_text(title, "title", TITLE_MAX_CHARS, one_line=True)
        self._save_user(title=title)
        return title

    def set_note(self, text: str | None) -> str | None:
        """Keep a note with the run (plain text, several lines, at most ``NOTE_MAX_CHARS``); empty or
        None removes it. Returns the note as stored (trimmed)."""
        text = _clean_text(text, "note", NOTE_MAX_CHARS, one_line=False)
        self._save_user(note=text)
        return text

    def _save_user(self, **values: str | None) -> None:
        if not (self.path / CONFIG_FILE).is_file():
            raise RunError(f"{self.path} is not a Transfer Lab run folder (any more?): nothing was saved.")
        try:
            current = self.user()
        except RunError:  # a damaged user.json is replaced, not a reason to refuse
            current = {}
        merged = {k: v for k, v in {**current, **values}.items() if v}
        write_json_atomic(self.path / USER_FILE, merged)

    # -- a summary for run lists -------------------------------------------------------------
    def describe(self) -> dict:
        """A plain-data summary for run lists: what it trained on, with what, how it went, how
        long it took and what the user called it. Never fails on a damaged config, summary or
        user.json: the field is then unknown (None or "?"). ``damaged`` says why the run cannot be
        loaded (:meth:`problem`), None for a sound one."""
        status = self.status()
        cfg = None
        try:
            cfg = self.config()
            model, preset, data = cfg.model.name, cfg.freeze.preset, cfg.data.root
        except Exception:  # a damaged config must not hide the other runs
            model = preset = data = "?"
        try:
            summ = self.summary()
        except RunError:
            summ = {}
        try:
            user = self.user()
        except RunError:
            user = {"title": None, "note": None}
        state = status.get("state")
        created = _number(status.get("created_at"))
        if created is None:
            created = _mtime(self.path / CONFIG_FILE)
        best = _number(summ.get("best_val_accuracy", status.get("best_val_accuracy")), 0.0, 1.0)
        epochs_done = _whole(status.get("epoch"))
        if epochs_done is None:
            epochs_done = _whole(summ.get("epochs_done"))
        epochs_planned = _whole(status.get("epochs"))
        if epochs_planned is None and cfg is not None:
            epochs_planned = cfg.train.epochs
        damage = self.problem() or (status["message"] if status.get("damaged") else None)
        return {"run_id": self.run_id, "path": str(self.path), "state": state,
                "message": status.get("message", ""), "model": model, "preset": preset, "data": data,
                "created_at": created, "best_val_accuracy": best,
                "epochs_done": epochs_done, "has_weights": self.has_weights(),
                # for tables and labels
                "data_name": (Path(data).name or data) if data != "?" else "?",
                "split": _split_kind(cfg, summ), "val_fraction": cfg.data.val_fraction if cfg else None,
                "custom_layers": bool(cfg is not None and cfg.freeze.frozen_groups is not None),
                "seconds": _seconds_taken(status, summ), "epochs_planned": epochs_planned,
                "active": state in ACTIVE_STATES, "title": user["title"], "note": user["note"],
                "val_images": _val_images(summ), "damaged": damage}


def _number(value: Any, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    """``value`` when it is a finite number within ``lo..hi``, else None: a run list shows an
    unknown instead of failing on a hand-edited file (``"best_val_accuracy": "high"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value if lo <= value <= hi else None


def _whole(value: Any) -> int | None:
    """``value`` when it is a whole number of 0 or more (an epoch count), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _parse_event(raw: bytes) -> dict | None:
    """One ``metrics.jsonl`` line as an event, or None when it is not a well-formed one: what the
    readers (epoch logs, the live view) index into must be there with the right kind."""
    try:
        ev = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
        return None
    for key in ("logs", "info"):
        if key in ev and not isinstance(ev[key], dict):
            return None
    if ev["event"] == EPOCH_END and (not isinstance(ev.get("logs"), dict) or not isinstance(ev.get("epoch"), int)):
        return None
    return ev


def _val_images(summary: dict) -> int | None:
    """How many pictures the run was checked on (its accuracy's sample size), if recorded."""
    counts = summary.get("val_counts")
    if not isinstance(counts, dict):
        return None
    total = sum(int(v) for v in counts.values()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
    return total or None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _seconds_taken(status: dict, summary: dict) -> float | None:
    """Wall time from the start of training to its end (so far, while it runs), else the
    training time the summary recorded."""
    started, ended = status.get("started_at"), status.get("finished_at")
    if status.get("state") in ACTIVE_STATES:
        ended = time.time() if started else None
    if isinstance(started, (int, float)) and isinstance(ended, (int, float)) and ended >= started:
        return float(ended - started)
    took = summary.get("train_seconds")
    return float(took) if isinstance(took, (int, float)) and took >= 0 else None


def _split_kind(cfg: RunConfig | None, summary: dict) -> str | None:
    """How the pictures to check with were chosen: "folder" (the data folder's own val/) or "random"
    (a share held out at random); None when not known (the run never got as far as its data).
    From summary.json's ``split`` record, else (older runs) from where its validation pictures lie."""
    record = summary.get("split")
    if isinstance(record, dict) and record.get("kind") in ("folder", "random"):
        return record["kind"]
    records = summary.get("val_records")
    if cfg is None or not isinstance(records, list) or not records:
        return None
    try:
        first = Path(records[0]["path"]).relative_to(cfg.data.root).parts[0].lower()
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return "folder" if first in ("val", "valid", "validation") else "random"


def _clean_text(text: str | None, what: str, limit: int, one_line: bool) -> str | None:
    """``text`` trimmed, or None when empty; a plain :class:`RunError` when it is not plain text."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise RunError(f"A {what} must be text, not {type(text).__name__}.")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if one_line:
        text = text.replace("\t", " ")
    text = text.strip()
    if not text:
        return None
    if one_line and "\n" in text:
        raise RunError(f"A {what} must be one line: remove the line breaks.")
    allowed = {"\n", "\t"} if not one_line else set()
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in allowed for ch in text):
        raise RunError(f"The {what} contains invisible control characters; type it as plain text.")
    if len(text) > limit:
        raise RunError(f"A {what} can be at most {limit} characters long; this one has {len(text)}. "
                       "Make it shorter.")
    return text


def list_runs(runs_dir: str | Path | None = None) -> list[dict]:
    """Every run folder under ``runs_dir``, newest first (the trash and other hidden folders are
    left out)."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.name.startswith("."):
            continue
        if (child / CONFIG_FILE).is_file():
            try:
                out.append(RunFolder(child).describe())
            except RunError as err:
                out.append({"run_id": child.name, "path": str(child), "state": "failed", "message": str(err)})
    out.sort(key=lambda d: (d.get("created_at") or 0, d["run_id"]), reverse=True)
    return out


# -- the trash -------------------------------------------------------------------------------------

def trash_dir(runs_dir: str | Path | None = None) -> Path:
    """``<runs_dir>/.trash``: where deleted runs wait until the trash is emptied."""
    return (Path(runs_dir) if runs_dir is not None else default_runs_dir()) / TRASH_DIR


def trash_run(run_dir: str | Path) -> Path:
    """Move a run folder into ``<runs_dir>/.trash/<when>__<run-id>`` and return that path.

    Nothing is deleted: :func:`restore_run` puts it back. Refused (:class:`RunError`) for a folder
    that is not a run, a run inside the trash, and a run that is queued or training."""
    run = RunFolder.open(run_dir)
    path = run.path
    if path.parent.name == TRASH_DIR:
        raise RunError(f"Run {run.run_id} is already in the trash.")
    state = run.status().get("state")
    if state in ACTIVE_STATES:
        raise RunError(f"Run {run.run_id} is {'training' if state == 'running' else 'waiting to start'}; "
                       "stop it first, then move it to the trash.")
    trash = path.parent / TRASH_DIR
    stamp = time.strftime(_TRASH_STAMP)
    target = trash / f"{stamp}__{run.run_id}"
    n = 1
    while target.exists():
        n += 1
        target = trash / f"{stamp}-{n}__{run.run_id}"
    try:
        trash.mkdir(exist_ok=True)
        os.rename(path, target)
    except OSError as err:
        raise RunError(f"Cannot move run {run.run_id} to the trash: {err.strerror or err}.") from None
    return target


def _trash_parts(trash_path: Path) -> tuple[str, float | None]:
    """(run id, when it was trashed) from a trash folder name ``<when>__<run-id>``."""
    stamp, sep, run_id = trash_path.name.partition("__")
    if not sep or not run_id:
        return "", None
    try:
        when = time.mktime(time.strptime(stamp.split("-")[0] + "-" + stamp.split("-")[1], _TRASH_STAMP))
    except (ValueError, IndexError, OverflowError):
        when = None
    return run_id, when


def restore_run(trash_path: str | Path) -> Path:
    """Move a trashed run back to its runs folder under its old name; return the run folder.
    Refused when a run of that name is there again or the path is not a trashed run."""
    trash_path = Path(trash_path)
    run_id, _ = _trash_parts(trash_path)
    if trash_path.parent.name != TRASH_DIR or not run_id or not (trash_path / CONFIG_FILE).is_file():
        raise RunError(f"{trash_path} is not a run in the trash (it may have been restored or emptied already).")
    target = trash_path.parent.parent / run_id
    if target.exists():
        raise RunError(f"Cannot restore run {run_id}: a run with that name is already in {target.parent}. "
                       "Move or rename that folder first.")
    try:
        os.rename(trash_path, target)
    except OSError as err:
        raise RunError(f"Cannot restore run {run_id}: {err.strerror or err}.") from None
    return target


def list_trash(runs_dir: str | Path | None = None) -> list[dict]:
    """The runs in the trash, most recently trashed first: each run's :meth:`RunFolder.describe`
    (``run_id`` is the original name, ``path`` where it is now) plus ``trash_path`` and
    ``trashed_at``."""
    trash = trash_dir(runs_dir)
    if not trash.is_dir():
        return []
    out = []
    for child in trash.iterdir():
        run_id, when = _trash_parts(child)
        if not run_id or not (child / CONFIG_FILE).is_file():
            continue
        try:
            desc = RunFolder(child).describe()
        except RunError as err:
            desc = {"path": str(child), "state": "failed", "message": str(err)}
        desc.update(run_id=run_id, trash_path=str(child), trashed_at=when if when is not None else _mtime(child))
        out.append(desc)
    out.sort(key=lambda d: (d.get("trashed_at") or 0, d["trash_path"]), reverse=True)
    return out


def empty_trash(runs_dir: str | Path | None = None, older_than_days: float = 0) -> list[str]:
    """Delete for good the trashed runs put there at least ``older_than_days`` days ago (0: all).
    The only function here that deletes a run; returns the run ids it deleted."""
    if not isinstance(older_than_days, (int, float)) or isinstance(older_than_days, bool) or older_than_days < 0:
        raise RunError(f"older_than_days must be a number of days, 0 or more (got {older_than_days!r}).")
    cutoff = time.time() - float(older_than_days) * 86400
    removed = []
    for desc in list_trash(runs_dir):
        if (desc.get("trashed_at") or 0) <= cutoff:
            shutil.rmtree(desc["trash_path"], ignore_errors=True)
            removed.append(desc["run_id"])
    return removed
