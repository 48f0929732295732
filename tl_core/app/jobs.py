"""Background training jobs owned by the process (the Streamlit server, or a test), in a fair line.

Training never runs inside a Streamlit script run: a script run is restarted on every click and
killed with its tab. A job is a plain thread owned by this module (imported once per process,
so it survives reruns, refreshes, closed tabs and second tabs); it writes every event to the run
folder, which pages poll.

**One training at a time per machine** (on a laptop two would each run at half speed; on a
classroom GPU thirty would run out of memory). A training asked for while another trains, or while
a Lab experiment runs, waits in line: first come, first served. Its run folder exists from the
start with status "queued" (so a refresh, another tab or a restarted server shows it), and it starts
by itself when its turn comes. Each owner (a classroom student's session token; ``None`` for the one
user of a laptop) has at most one job in line, waiting or training: a second is refused in plain
words. A waiting job can be cancelled (its empty run folder goes); :func:`queue_place` says its
place and when it should start, from the estimates of the jobs before it
(:func:`tl_core.training.estimate.estimate`, recorded when each job was asked for) and the live time
left of the one training.

When the process ends (the server is stopped with Ctrl-C) a job still training is stopped and
waited for (:func:`stop_all`, registered with ``atexit``): a daemon thread still inside PyTorch
while Python finalises aborts the process ("terminate called..."), and the run would stay
"running" on disk. A stopped run keeps its best weights, as with the Stop button. Waiting jobs are
marked as never started.
"""
from __future__ import annotations

import atexit
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tl_core.config import RunConfig
from tl_core.training import Callback, FitResult, fit
from tl_core.training.loop import create_run
from tl_core.errors import TransferLabError
from tl_core.runs import RunFolder

# When a waiting job's own estimate is unknown (a model never timed here), the line counts this long.
UNKNOWN_JOB_SECONDS = 120.0
# How often the line looks whether the machine became free (a Lab experiment that ended).
POLL_SECONDS = 0.5
_OWNER_NOW = object()   # start()'s default: the session of the page asking (tl_core.app.workspace)


@dataclass
class Job:
    run: RunFolder
    thread: threading.Thread
    stop_event: threading.Event
    config: RunConfig | None = None
    owner: str | None = None
    estimated_seconds: float | None = None
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    result: FitResult | None = None
    cancelled: bool = False

    @property
    def alive(self) -> bool:
        """Training now (its thread runs)."""
        return self.thread.is_alive()

    @property
    def waiting(self) -> bool:
        """In line, not started yet."""
        return self.started_at is None and not self.cancelled

    @property
    def in_line(self) -> bool:
        return self.waiting or self.alive

    @property
    def run_dir(self) -> str:
        return str(self.run.path)


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting job stands: ``place`` 1 is next; ``start_in_seconds`` from now (None: at once)."""

    place: int
    waiting: int            # jobs waiting in all
    start_in_seconds: float
    behind_lab: bool        # a Lab experiment runs first
    job: Job
    guessed: bool = False   # a job before it has no time estimate (its model was never timed here)


def _lab_busy() -> bool:
    lab = sys.modules.get("tl_core.app.lab_jobs")
    return bool(lab is not None and lab.running_experiment() is not None)


def _estimate_seconds(config: RunConfig) -> float | None:
    """The same estimate the pages show, from this computer's measurements (never measures now)."""
    try:
        from tl_core.training.estimate import estimate

        est = estimate(config, measure_now=False)
        return float(est.total_seconds(config.train.epochs)) if est is not None else None
    except Exception:  # noqa: BLE001 - a place in line without a time is still a place in line
        return None


class JobRegistry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._line: list[Job] = []          # waiting, first come first
        self._current: Job | None = None    # the one training (or just finished)
        self._scheduler: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------
    def active(self) -> Job | None:
        """The job training now, whoever asked for it (the machine is busy)."""
        with self._lock:
            if self._current is not None and self._current.alive:
                return self._current
            return next((j for j in self._jobs.values() if j.alive), None)

    def get(self, run_dir: str | Path) -> Job | None:
        with self._lock:
            return self._jobs.get(str(Path(run_dir)))

    def waiting(self) -> list[Job]:
        with self._lock:
            return [j for j in self._line if j.waiting]

    def of_owner(self, owner: str | None) -> Job | None:
        """This owner's job in line (training or waiting), else None."""
        with self._lock:
            active = self.active()
            if active is not None and active.owner == owner:
                return active
            return next((j for j in self._line if j.waiting and j.owner == owner), None)

    def place(self, run_dir: str | Path) -> QueuePlace | None:
        """Where a waiting job stands in line; None when it is not waiting."""
        with self._lock:
            job = self.get(run_dir)
            line = self.waiting()
            if job is None or job not in line:
                return None
            ahead = line[:line.index(job)]
            current = self.active()
        seconds = self._time_left(current) if current is not None else 0.0
        seconds += sum(j.estimated_seconds or UNKNOWN_JOB_SECONDS for j in ahead)
        guessed = any(j.estimated_seconds is None for j in ahead + ([current] if current is not None else []))
        return QueuePlace(place=len(ahead) + 1, waiting=len(line), start_in_seconds=seconds,
                          behind_lab=_lab_busy(), job=job, guessed=guessed)

    @staticmethod
    def _time_left(job: Job) -> float:
        """The training job's time left: its live estimate, else its estimate less the time it has run."""
        try:
            from tl_core.app.live import live_view

            eta = live_view(job.run_dir).eta_seconds
            if eta is not None:
                return max(0.0, float(eta))
        except Exception:  # noqa: BLE001 - fall back to the estimate
            pass
        total = job.estimated_seconds or UNKNOWN_JOB_SECONDS
        return max(0.0, total - (time.time() - (job.started_at or time.time())))

    # -- asking, starting, stopping ---------------------------------------------------------
    def start(self, config: RunConfig, runs_dir: str | Path | None = None,
              callbacks: list[Callback] | None = None, owner: object = _OWNER_NOW) -> Job:
        """Train ``config`` now when the machine is free, else put it in line. Refused (plain words)
        when this owner already has a job in line or the settings break a classroom limit."""
        from tl_core.app.classroom import check_config
        from tl_core.app.workspace import current_session

        if owner is _OWNER_NOW:
            owner = current_session()
        check_config(config)
        estimated = _estimate_seconds(config)
        with self._lock:
            mine = self.of_owner(owner)  # type: ignore[arg-type]
            if mine is not None and mine.alive:
                raise TransferLabError(f"Your model is already training ({mine.run.run_id}). Stop it or wait for it to "
                                       "finish before starting another.")
            if mine is not None:
                place = self.waiting().index(mine) + 1
                raise TransferLabError(f"You already have a training waiting in line (number {place}). Wait for it, "
                                       "or cancel it, before starting another: one training per person at a time "
                                       "keeps the line fair.")
            run = create_run(config, runs_dir)
            job = Job(run, threading.Thread(), threading.Event(), config=config, owner=owner,  # type: ignore[arg-type]
                      estimated_seconds=estimated)

            def target() -> None:
                try:
                    job.result = fit(config, run, callbacks or [], job.stop_event)
                finally:
                    with self._changed:
                        self._changed.notify_all()

            job.thread = threading.Thread(target=target, name=f"train-{run.run_id}", daemon=True)
            self._jobs[str(run.path)] = job
            if self.active() is None and not self.waiting() and not _lab_busy():
                self._launch(job)
            else:
                run.write_status("queued", "Waiting in line: another training runs first.")
                self._line.append(job)
                self._ensure_scheduler()
            return job

    def _launch(self, job: Job) -> None:
        job.started_at = time.time()
        self._current = job
        job.thread.start()

    def _ensure_scheduler(self) -> None:
        if self._scheduler is None or not self._scheduler.is_alive():
            self._scheduler = threading.Thread(target=self._schedule, name="train-line", daemon=True)
            self._scheduler.start()

    def _schedule(self) -> None:
        """Start the next waiting job each time the machine is free, until nobody waits."""
        with self._changed:
            while True:
                self._line = [j for j in self._line if j.waiting]
                if not self._line:
                    self._scheduler = None
                    return
                if self.active() is None and not _lab_busy():
                    self._launch(self._line.pop(0))
                    continue
                self._changed.wait(POLL_SECONDS)

    def cancel(self, run_dir: str | Path) -> bool:
        """Take a waiting job out of line; its run folder (nothing in it yet) goes. False when it is
        not waiting here."""
        with self._lock:
            job = self.get(run_dir)
            if job is None or not job.waiting:
                return False
            job.cancelled = True
            self._line = [j for j in self._line if j is not job]
            self._jobs.pop(str(Path(run_dir)), None)
            self._changed.notify_all()
        if not job.run.has_weights():
            shutil.rmtree(job.run.path, ignore_errors=True)
        else:  # never: a waiting run has no weights; keep whatever is there
            job.run.write_status("stopped", "Cancelled while it waited in line.")
        return True

    def stop(self, run_dir: str | Path) -> bool:
        """Ask a run to stop (it stops within one batch), or take it out of line when it waits.
        False when it is neither training nor waiting here."""
        job = self.get(run_dir)
        if job is None:
            return False
        if job.waiting:
            return self.cancel(run_dir)
        if not job.alive:
            return False
        job.stop_event.set()
        return True

    def stop_all(self, timeout: float) -> None:
        """Stop every job still training and wait up to ``timeout`` seconds in all for them; jobs still
        waiting are marked as never started."""
        with self._lock:
            waiting = [j for j in self._line if j.waiting]
            for job in waiting:
                job.cancelled = True
            self._line = []
            alive = [j for j in self._jobs.values() if j.alive]
            self._changed.notify_all()
        for job in waiting:
            try:
                job.run.write_status("stopped", "Not started: the app was stopped while this run waited in line. "
                                                "Start it again on the Train page.")
            except OSError:
                pass
        for job in alive:
            job.stop_event.set()
        end = time.monotonic() + timeout
        for job in alive:
            job.thread.join(timeout=max(0.0, end - time.monotonic()))


REGISTRY = JobRegistry()

# How long the process waits at exit for a training job to stop (it stops within one batch).
EXIT_JOIN_SECONDS = 60.0


@atexit.register
def stop_all(timeout: float = EXIT_JOIN_SECONDS) -> None:
    """Stop and wait for every training job of this process (at exit; tests call it too)."""
    REGISTRY.stop_all(timeout)


def start_training(config: RunConfig, runs_dir: str | Path | None = None, owner: object = _OWNER_NOW) -> Job:
    """Train now, or wait in line when the machine is busy (see the module's words)."""
    return REGISTRY.start(config, runs_dir, owner=owner)


def stop_training(run_dir: str | Path) -> bool:
    return REGISTRY.stop(run_dir)


def cancel_waiting(run_dir: str | Path) -> bool:
    return REGISTRY.cancel(run_dir)


def active_job() -> Job | None:
    """The job training now, whoever asked for it."""
    return REGISTRY.active()


def own_job(owner: object = _OWNER_NOW) -> Job | None:
    """The job in line (training or waiting) of ``owner``: by default the session of the page asking
    (on a laptop: the one user, so the job training or waiting)."""
    if owner is _OWNER_NOW:
        from tl_core.app.workspace import current_session

        owner = current_session()
    return REGISTRY.of_owner(owner)  # type: ignore[arg-type]


def waiting_jobs() -> list[Job]:
    return REGISTRY.waiting()


def queue_place(run_dir: str | Path) -> QueuePlace | None:
    return REGISTRY.place(run_dir)


def is_running(run_dir: str | Path) -> bool:
    job = REGISTRY.get(run_dir)
    return bool(job and job.alive)


def is_waiting(run_dir: str | Path) -> bool:
    job = REGISTRY.get(run_dir)
    return bool(job and job.waiting)
