"""Background training jobs owned by the process (the Streamlit server, or a test).

Training never runs inside a Streamlit script run: a script run is restarted on every click and
killed with its tab. A job is a plain thread owned by this module (imported once per process,
so it survives reruns, refreshes and second tabs); it writes every event to the run folder, which
pages poll. One job trains at a time: on a laptop two would each run at half speed.

When the process ends (the server is stopped with Ctrl-C) a job still training is stopped and
waited for (:func:`stop_all`, registered with ``atexit``): a daemon thread still inside PyTorch
while Python finalises aborts the process ("terminate called..."), and the run would stay
"running" on disk. A stopped run keeps its best weights, as with the Stop button.
"""
from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tl_core.config import RunConfig
from tl_core.training import Callback, FitResult, fit
from tl_core.training.loop import create_run
from tl_core.errors import TransferLabError
from tl_core.runs import RunFolder


@dataclass
class Job:
    run: RunFolder
    thread: threading.Thread
    stop_event: threading.Event
    started_at: float = field(default_factory=time.time)
    result: FitResult | None = None

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def run_dir(self) -> str:
        return str(self.run.path)


class JobRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def active(self) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.alive), None)

    def get(self, run_dir: str | Path) -> Job | None:
        with self._lock:
            return self._jobs.get(str(Path(run_dir)))

    def start(self, config: RunConfig, runs_dir: str | Path | None = None,
              callbacks: list[Callback] | None = None) -> Job:
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.alive), None)
            if busy is not None:
                raise TransferLabError(f"A model is already training ({busy.run.run_id}). Stop it or wait for it "
                                       "to finish before starting another.")
            run = create_run(config, runs_dir)
            stop = threading.Event()
            job = Job(run, threading.Thread(), stop)

            def target() -> None:
                job.result = fit(config, run, callbacks or [], stop)

            job.thread = threading.Thread(target=target, name=f"train-{run.run_id}", daemon=True)
            self._jobs[str(run.path)] = job
            job.thread.start()
            return job

    def stop(self, run_dir: str | Path) -> bool:
        """Ask a run to stop; it stops within one batch. False when it is not running here."""
        job = self.get(run_dir)
        if job is None or not job.alive:
            return False
        job.stop_event.set()
        return True

    def stop_all(self, timeout: float) -> None:
        """Stop every job still training and wait up to ``timeout`` seconds in all for them."""
        with self._lock:
            alive = [j for j in self._jobs.values() if j.alive]
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


def start_training(config: RunConfig, runs_dir: str | Path | None = None) -> Job:
    return REGISTRY.start(config, runs_dir)


def stop_training(run_dir: str | Path) -> bool:
    return REGISTRY.stop(run_dir)


def active_job() -> Job | None:
    return REGISTRY.active()


def is_running(run_dir: str | Path) -> bool:
    job = REGISTRY.get(run_dir)
    return bool(job and job.alive)
