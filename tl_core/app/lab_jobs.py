"""Background Lab experiments owned by the process, like :mod:`tl_core.app.jobs` for one run.

An experiment trains several models one after another, which takes minutes: it never runs inside a
Streamlit script run. It runs in a thread owned by this module (imported once per process, so it
survives reruns, refreshes and second tabs) and writes everything to its experiment folder, which
the Lab page polls. One experiment runs at a time, and none starts while a model trains or waits in
line on the Train page (two trainings would each run at half speed); a training asked for while an
experiment runs waits in line until it ends (:mod:`tl_core.app.jobs`). On a classroom server each
student's experiments are in their own workspace, and a student sees and stops only their own. The experiment's settings and pictures are
checked in the caller's thread, before its folder exists, so a mistake is shown at once.

When the process ends an experiment still running is stopped and waited for (:func:`stop_all`,
registered with ``atexit``), as :mod:`tl_core.app.jobs` does for a training run: its finished runs
are kept and summarized.
"""
from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tl_core.errors import TransferLabError

EXIT_JOIN_SECONDS = 60.0


_OWNER_NOW = object()   # the session of the page asking (tl_core.app.workspace.current_session)


def experiments_dir() -> Path:
    """``$TL_EXPERIMENTS_DIR``, else ``experiments/`` in the app's workspace; on a classroom server
    always ``experiments/`` in the student's own workspace."""
    from tl_core.app.workspace import classroom_mode, user_workspace, workspace_dir

    if classroom_mode():
        return user_workspace() / "experiments"
    configured = os.environ.get("TL_EXPERIMENTS_DIR")
    return Path(configured).expanduser() if configured else workspace_dir() / "experiments"


def _owner(owner: object) -> str | None:
    if owner is _OWNER_NOW:
        from tl_core.app.workspace import current_session

        return current_session()
    return owner  # type: ignore[return-value]


@dataclass
class LabJob:
    path: Path
    kind: str
    thread: threading.Thread
    stop_event: threading.Event
    started_at: float = field(default_factory=time.time)
    result: dict | None = None
    owner: str | None = None

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


class LabRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, LabJob] = {}

    def active(self) -> LabJob | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.alive), None)

    def get(self, path: str | Path) -> LabJob | None:
        with self._lock:
            return self._jobs.get(str(Path(path)))

    def start(self, experiment, root: str | Path | None = None, owner: object = _OWNER_NOW) -> LabJob:
        import tl_core
        from tl_core.app import jobs

        owner = _owner(owner)
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.alive), None)
            if busy is not None:
                raise TransferLabError("An experiment is already running. Stop it or wait for it to finish before "
                                       "starting another." if busy.owner == owner else
                                       "Someone else's experiment is running on this server. Try again when it "
                                       "has finished: two at once would each run at half speed.")
            if jobs.active_job() is not None or jobs.waiting_jobs():
                raise TransferLabError("A model is training (or waiting in line) on the Train page. Wait for it to "
                                       "finish before starting an experiment: both would run at half speed.")
            created = tl_core.create_experiment(experiment, root if root is not None else experiments_dir())
            stop = threading.Event()
            job = LabJob(created.path, experiment.kind, threading.Thread(), stop, owner=owner)

            def target() -> None:
                job.result = created.run(stop)

            job.thread = threading.Thread(target=target, name=f"lab-{created.path.name}", daemon=True)
            self._jobs[str(created.path)] = job
            job.thread.start()
            return job

    def stop(self, path: str | Path) -> bool:
        job = self.get(path)
        if job is None or not job.alive:
            return False
        job.stop_event.set()
        return True

    def stop_all(self, timeout: float) -> None:
        with self._lock:
            alive = [j for j in self._jobs.values() if j.alive]
        for job in alive:
            job.stop_event.set()
        end = time.monotonic() + timeout
        for job in alive:
            job.thread.join(timeout=max(0.0, end - time.monotonic()))


REGISTRY = LabRegistry()


@atexit.register
def stop_all(timeout: float = EXIT_JOIN_SECONDS) -> None:
    """Stop and wait for every experiment of this process (at exit; tests call it too)."""
    REGISTRY.stop_all(timeout)


def start_experiment(experiment, root: str | Path | None = None, owner: object = _OWNER_NOW) -> LabJob:
    return REGISTRY.start(experiment, root, owner=owner)


def stop_experiment(path: str | Path, owner: object = _OWNER_NOW) -> bool:
    """Stop an experiment; on a classroom server only the student who started it can."""
    job = REGISTRY.get(path)
    if job is None or job.owner != _owner(owner):
        return False
    return REGISTRY.stop(path)


def active_experiment(owner: object = _OWNER_NOW) -> LabJob | None:
    """The experiment running now when it is ``owner``'s (by default the session of the page asking;
    on a laptop, the one user: any running experiment)."""
    job = REGISTRY.active()
    return job if job is not None and job.owner == _owner(owner) else None


def running_experiment() -> LabJob | None:
    """The experiment running now, whoever started it (the machine is busy)."""
    return REGISTRY.active()


def is_running(path: str | Path) -> bool:
    job = REGISTRY.get(path)
    return bool(job and job.alive)
