"""Running an experiment: its runs one after another, one progress bar, Stop, everything on disk.

The runner knows nothing about what an experiment compares. An experiment gives it a list of
:class:`Part` (a run config, plain-words label, what it varies, its expected work), optionally some
shared work before them (the data-size experiment's one feature pass), and a ``summarize`` that
turns the finished runs into numbers and a conclusion. The runner trains each part with
``tl_core.train`` into the experiment folder, records every ended part in ``parts.jsonl``, rewrites
``results.json`` after each, and keeps ``status.json`` up to date with one fraction for the whole
experiment and the time left.

The time left comes from the work each part is expected to cost (in "picture forward passes", see
:func:`expected_work`) and the speed measured so far in this experiment: the first seconds are a
rough guess that sharpens as runs finish. Stop ends the run in training within one batch; the runs
that finished before are kept and summarized, the stopped one is recorded but not counted.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from tl_core.config import RunConfig
from tl_core.errors import TransferLabError
from tl_core.lab.features import Stopped
from tl_core.lab.folder import ExperimentFolder
from tl_core.training import Callback

# Work, in forward passes of one picture through the whole model (the unit :func:`expected_work` uses).
RUN_OVERHEAD = 40.0        # building the model, loading its weights, checking the pictures, saving
STATUS_EVERY = 0.5         # seconds between two status.json writes while a run trains
CHECK_SHARE = 0.15         # of a run's preparation, when a feature or decoding pass follows the check


@dataclass
class Part:
    """One run of an experiment."""

    key: str                  # unique in the experiment ("share-0.25-pick-2", "last:1", "resnet18")
    label: str                # plain words for the progress line ("25% of the pictures, pick 2")
    config: RunConfig
    meta: dict = field(default_factory=dict)   # what this run varies, for the summary (fraction, preset...)
    prepare_work: float = RUN_OVERHEAD
    train_work: float = 1.0
    heavy_prepare: bool = True   # a feature or decoding pass follows the picture check

    @property
    def work(self) -> float:
        return self.prepare_work + self.train_work


def model_factor(model_name: str, image_size: int | None = None) -> float:
    """How much one picture costs in this model compared with EfficientNet-Lite0 at 224 px (from its
    input size and parameter count; a rough scale, corrected by the measured speed as runs finish)."""
    from tl_core.models.catalogue import get_model_info

    info = get_model_info(model_name)
    size = image_size or info.input_size
    return (size / 224) ** 2 * (max(info.params_m, 0.5) / 4.65) ** 1.5


def expected_work(kind: str, n_train: int, n_val: int, epochs: int, *, features_ready: bool = False,
                  factor: float = 1.0) -> tuple[float, float]:
    """``(preparation, training)`` work of one run with freeze ``kind`` ('head', 'last', 'none',
    'scratch'), in picture forward passes of Lite0."""
    n = n_train + n_val
    if kind == "head":
        prepare = 0.0 if features_ready else n * factor
        return RUN_OVERHEAD * factor + prepare, epochs * n * 0.02
    if kind == "last":
        return RUN_OVERHEAD * factor + n * factor, epochs * (1.5 * n_train + 0.3 * n_val) * factor
    # none / scratch: every picture decoded once, then forward and backward through everything
    return RUN_OVERHEAD * factor + 0.1 * n, epochs * (3.0 * n_train + n_val) * factor


@dataclass
class Progress:
    """Where an experiment is: what ``status.json`` holds while it runs, and what callers are told."""

    fraction: float
    eta_seconds: float | None
    elapsed_seconds: float
    parts_done: int
    parts_total: int
    current: str
    stage: str

    def to_dict(self) -> dict:
        return {"fraction": round(self.fraction, 4), "eta_seconds": self.eta_seconds,
                "elapsed_seconds": round(self.elapsed_seconds, 2), "parts_done": self.parts_done,
                "parts_total": self.parts_total, "current": self.current, "stage": self.stage}


class Experiment(Protocol):
    """What the runner needs from an experiment (see scratch.py, data_size.py, layers.py, models.py)."""

    kind: str

    def settings(self) -> dict: ...

    def parts(self, folder: ExperimentFolder) -> list[Part]: ...

    def shared_work(self) -> float: ...

    def prepare(self, folder: ExperimentFolder, progress: Callable[[int, int], None],
                stop: threading.Event) -> None: ...

    def summarize(self, records: list[dict], parts_total: int) -> dict: ...


def time_left(elapsed: float, done: float, total: float) -> float | None:
    """Seconds left at the speed of this experiment so far (``done`` of ``total`` work in ``elapsed``
    seconds); None until there is enough of it to go by (2% of the work and a second)."""
    if total <= 0 or done <= 0.02 * total or elapsed <= 1.0:
        return None
    return elapsed * max(total - done, 0.0) / done


class _Clock:
    """Turns work done into a fraction and a time left, and writes them out (throttled)."""

    def __init__(self, folder: ExperimentFolder, total_work: float, parts_total: int,
                 on_progress: Callable[[Progress], None] | None):
        self.folder, self.total, self.parts_total, self.on_progress = folder, max(total_work, 1e-9), parts_total, on_progress
        self.t0 = time.perf_counter()
        self.done_work = 0.0       # work of the parts (and shared work) that ended
        self.parts_done = 0
        self.last_write = 0.0

    def report(self, current_work: float, current: str, stage: str, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last_write < STATUS_EVERY:
            return
        self.last_write = now
        elapsed = now - self.t0
        done = min(self.done_work + current_work, self.total)
        fraction = done / self.total
        eta = time_left(elapsed, done, self.total)
        progress = Progress(fraction, None if eta is None else round(eta, 1), elapsed, self.parts_done,
                            self.parts_total, current, stage)
        try:
            self.folder.write_status("running", current, **progress.to_dict())
        except OSError:  # a full disk must not fail the run in training: the next write tries again
            pass
        if self.on_progress is not None:
            self.on_progress(progress)


class _Watcher(Callback):
    """Follows one run: its share of the experiment's progress, and what it said as it started."""

    def __init__(self, clock: _Clock, part: Part, index: int):
        self.clock, self.part, self.index = clock, part, index
        self.prepare_fraction = 0.0
        self.train_fraction = 0.0
        self.info: dict = {}
        self.stage = "Preparing"

    def _work(self) -> float:
        return self.part.prepare_work * self.prepare_fraction + self.part.train_work * self.train_fraction

    def _say(self, force: bool = False) -> None:
        label = f"Run {self.index} of {self.clock.parts_total}: {self.part.label}"
        self.clock.report(self._work(), label, self.stage, force)

    def on_prepare(self, stage, done, total):
        from tl_core.runs.events import stage_label

        share = done / max(total, 1)
        if stage == "check":
            self.prepare_fraction = share * (CHECK_SHARE if self.part.heavy_prepare else 0.9)
        else:
            self.prepare_fraction = CHECK_SHARE + (1 - CHECK_SHARE) * share
        self.stage = stage_label(stage)
        self._say()

    def on_fit_start(self, info):
        self.info = dict(info)
        self.prepare_fraction = 1.0
        self.stage = "Training"
        self._say(force=True)

    def on_batch_end(self, step, logs):
        self.train_fraction = float(logs.get("progress") or 0.0)
        self._say()


def _record(part: Part, result: Any, watcher: _Watcher) -> dict:
    """What the experiment keeps of one run (a line of parts.jsonl)."""
    from tl_core.runs import RunFolder

    history = list(result.history or [])
    info = watcher.info
    best = result.best_epoch
    best_logs = history[best - 1] if best and 0 < best <= len(history) else {}
    val_counts = None
    if result.run_dir:
        try:
            val_counts = RunFolder(result.run_dir).summary().get("val_counts")
        except (TransferLabError, OSError, AttributeError):
            val_counts = None
    elapsed = float(info.get("prepare_seconds") or 0.0)
    curve = []
    for logs in history:
        elapsed += float(logs.get("epoch_seconds") or 0.0)
        curve.append({"epoch": logs.get("epoch"), "train_accuracy": logs.get("train_accuracy"),
                      "val_accuracy": logs.get("val_accuracy"), "train_loss": logs.get("train_loss"),
                      "val_loss": logs.get("val_loss"), "elapsed_seconds": round(elapsed, 3)})
    return {"key": part.key, "label": part.label, "meta": part.meta, "status": result.status,
            "message": result.message, "run_dir": result.run_dir, "accuracy": result.best_val_accuracy,
            "val_pictures": info.get("val_images"), "train_pictures": info.get("train_images"),
            "val_counts": val_counts, "per_class": result.per_class_accuracy, "seconds": round(result.train_seconds, 3),
            "epochs_done": result.epochs_done, "best_epoch": best,
            "train_accuracy": best_logs.get("train_accuracy"), "mode": result.mode,
            "feature_cache_hit": info.get("feature_cache_hit"), "trainable_params": info.get("trainable_params"),
            "total_params": info.get("total_params"), "curve": curve}


def run(experiment: Experiment, folder: ExperimentFolder, stop_event: threading.Event | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_part: Callable[[dict], None] | None = None) -> dict:
    """Run every part of ``experiment`` into ``folder``; return the results (also in results.json).

    Never raises for a failure once the folder exists: the status and the results say failed, with
    a plain message, and what finished before is kept."""
    import tl_core

    stop = stop_event or threading.Event()
    t0 = time.perf_counter()
    state, message = "finished", "Finished."
    parts: list[Part] = []
    clock = _Clock(folder, 1.0, 0, on_progress)
    try:
        parts = experiment.parts(folder)
        shared = experiment.shared_work()
        clock = _Clock(folder, shared + sum(p.work for p in parts), len(parts), on_progress)
        clock.report(0.0, "Starting.", "Preparing", force=True)
        if shared > 0:
            def shared_progress(done: int, total: int) -> None:
                if stop.is_set():
                    raise Stopped()
                clock.report(shared * done / max(total, 1), "Computing what the kept layers see in every picture, "
                             "once for the whole experiment", "Computing features once", force=done >= total)

            experiment.prepare(folder, shared_progress, stop)
            clock.done_work += shared
        for index, part in enumerate(parts, start=1):
            if stop.is_set():
                raise Stopped()
            watcher = _Watcher(clock, part, index)
            watcher._say(force=True)
            result = tl_core.train(part.config, runs_dir=folder.runs_dir, callbacks=[watcher], stop_event=stop)
            record = _record(part, result, watcher)
            folder.add_part(record)
            if on_part is not None:
                on_part(record)
            if result.status == "stopped":
                raise Stopped()
            clock.done_work += part.work
            clock.parts_done += 1
            folder.save_results(_results(experiment, folder, parts, "running", "Running.", t0))
    except Stopped:
        state = "stopped"
        message = (f"Stopped by you after {clock.parts_done} of {len(parts)} runs. The finished runs are kept "
                   "and summarized below.")
    except TransferLabError as err:
        state, message = "failed", str(err)
    except Exception as err:  # a bug: keep the details in the experiment folder for a report
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        try:
            (folder.path / "error.log").write_text(detail, encoding="utf-8")
        except OSError:
            pass
        state, message = "failed", (f"The experiment failed unexpectedly ({type(err).__name__}: {err}). Details are "
                                    "in error.log in the experiment folder.")
    records = folder.parts()
    finished = [r for r in records if r.get("status") == "finished"]
    if state == "finished":
        failed = [r for r in records if r.get("status") == "failed"]
        if not finished:
            state = "failed"
            message = "No run finished: " + (failed[0].get("message", "") if failed else "nothing ran.")
        elif failed:
            message = (f"Finished, but {len(failed)} of {len(parts)} runs failed "
                       f"({failed[0].get('label')}: {failed[0].get('message')}).")
    results = _results(experiment, folder, parts, state, message, t0)
    folder.save_results(results)
    folder.write_status(state, message, fraction=1.0 if state == "finished" else clock.done_work / clock.total,
                        parts_done=len(finished), parts_total=len(parts),
                        elapsed_seconds=round(time.perf_counter() - t0, 2))
    return results


def _results(experiment: Experiment, folder: ExperimentFolder, parts: list[Part], state: str, message: str,
             t0: float) -> dict:
    """The common envelope around an experiment's own numbers and conclusion."""
    records = folder.parts()
    finished = [r for r in records if r.get("status") == "finished"]
    try:
        own = experiment.summarize(finished, len(parts))
    except Exception as err:  # noqa: BLE001 - a summary must never lose the runs themselves
        own = {"conclusion": f"The numbers could not be summarized ({type(err).__name__}: {err})."}
    val = next((r.get("val_pictures") for r in finished if r.get("val_pictures")), None)
    return {"experiment": experiment.kind, "experiment_dir": str(folder.path), "status": state, "message": message,
            "settings": experiment.settings(), "val_pictures": val, "runs_done": len(finished),
            "runs_total": len(parts), "seconds": round(time.perf_counter() - t0, 2),
            "runs": [{"key": r.get("key"), "label": r.get("label"), "status": r.get("status"),
                      "run_dir": r.get("run_dir"), "message": r.get("message")} for r in records],
            **own}


__all__ = ["Part", "Progress", "Experiment", "run", "expected_work", "model_factor", "time_left", "RUN_OVERHEAD"]
