"""Time estimates measured in the background, so the Model page can show the catalogue at once and
fill in "about N seconds per epoch here" as each model's forward pass is timed.

The measuring itself is :mod:`tl_core.training.estimate` (plain functions, cached per process);
this module only owns the queue and the one background thread that works through it. It does not
know about training jobs: the caller says when to pause with ``busy`` (the pages pass
``lambda: jobs.active_job() is not None``), because timing while a model trains would slow the
training down and measure the wrong thing.
"""
from __future__ import annotations

import atexit
import threading
import time
from typing import Callable

from tl_core.config import RunConfig
from tl_core.training import estimate

# How often a paused worker asks ``busy()`` again (seconds).
POLL_SECONDS = 1.0

_LOCK = threading.Lock()


def _new_state() -> dict:
    return {"thread": None, "queue": [], "errors": {}, "busy": _never_busy}


def _never_busy() -> bool:
    return False


_STATE: dict = _new_state()

# One thing to time: (model name, preset, frozen groups or None, image size or None).
Job = tuple[str, str, "tuple[str, ...] | None", "int | None"]


def _is_forward(job: Job) -> bool:
    return job[1] == "head" and job[2] is None


def _label(job: Job) -> str:
    return job[0] if _is_forward(job) else f"{job[0]} ({job[1] if job[2] is None else 'custom layers'})"


def _measured(job: Job, device: str) -> bool:
    name, preset, frozen, size = job
    if _is_forward(job):
        return estimate.cached_forward(name, size, device) is not None
    return estimate.cached_measure(name, frozen, preset, 2, size, device) is not None


def measure_in_background(jobs: list[Job], device: str = "auto", *,
                          busy: Callable[[], bool] = _never_busy) -> list[Job]:
    """Queue measurements (:func:`tl_core.training.estimate.measure`) for a background thread, one
    at a time and in order; returns the jobs still waiting (queued or being measured). A job is
    ``(model name, preset, frozen groups or None, image size or None)``. Jobs that fail are
    remembered in :func:`background_errors` and not tried again.

    While ``busy()`` returns True the thread waits before starting its next measurement; the
    latest call's ``busy`` is the one used.
    """
    state = _STATE
    jobs = [(str(n), str(p), tuple(f) if f is not None else None, s) for n, p, f, s in jobs]
    with _LOCK:
        state["busy"] = busy
        errors: dict = state["errors"]
        queue: list = state["queue"]
        waiting = []
        for job in jobs:
            if _label(job) in errors or _measured(job, device):
                continue
            waiting.append(job)
            if job not in queue:
                queue.append(job)
        thread = state["thread"]
        if queue and not (isinstance(thread, threading.Thread) and thread.is_alive()):
            t = threading.Thread(target=_worker, args=(state, device), daemon=True, name="tl-estimate")
            state["thread"] = t
            t.start()
    return waiting


def measure_forward_in_background(model_names: list[str], image_size: int | None = None, device: str = "auto",
                                  *, busy: Callable[[], bool] = _never_busy) -> list[str]:
    """:func:`measure_in_background` for the forward pass of each model (exact for the 'head'
    preset): returns the names still waiting."""
    waiting = measure_in_background([(n, "head", None, image_size) for n in model_names], device, busy=busy)
    return [job[0] for job in waiting]


def _is_busy(state: dict) -> bool:
    try:
        return bool(state["busy"]())
    except Exception:  # noqa: BLE001 - a broken check must not stop the timing for good
        return False


_EXITING = threading.Event()


def stop_background(timeout: float = 60.0) -> None:
    """Drop what is still queued and wait for the measurement under way to end (used at exit, and
    by the tests so that one test's timing never runs during the next)."""
    with _LOCK:
        _STATE["queue"].clear()
        thread = _STATE.get("thread")
    if isinstance(thread, threading.Thread) and thread.is_alive():
        thread.join(timeout=timeout)


@atexit.register
def _finish_before_exit() -> None:
    """Let a measurement that is under way end before the interpreter does: a daemon thread still
    inside PyTorch while Python finalises aborts the process ("terminate called...")."""
    _EXITING.set()
    stop_background()


def _worker(state: dict, device: str) -> None:
    queue: list = state["queue"]
    while True:
        while _is_busy(state) and not _EXITING.is_set():
            time.sleep(POLL_SECONDS)
        with _LOCK:
            if not queue or _EXITING.is_set():
                if _EXITING.is_set():
                    queue.clear()
                state["thread"] = None
                return
            job = queue[0]
        name, preset, frozen, size = job
        try:
            if _is_forward(job):
                estimate.measure_forward(name, size, device)
            else:
                estimate.measure(name, list(frozen) if frozen is not None else None, preset, 2, size, device)
        except Exception as err:  # noqa: BLE001 - an unmeasurable model just shows no time
            with _LOCK:
                state["errors"][_label(job)] = f"{type(err).__name__}: {err}"
        finally:
            with _LOCK:
                if queue and queue[0] == job:
                    queue.pop(0)


_SPLITS: dict[tuple, tuple[int, int, list[str]]] = {}


def planned_split(root: str, val_fraction: float) -> tuple[int, int, list[str]]:
    """:func:`tl_core.training.estimate.planned_split`, remembered per folder content (the pages
    redraw on every click; the split changes only when the pictures or the share do)."""
    from tl_core.app.workspace import folder_fingerprint

    key = (str(root), float(val_fraction), folder_fingerprint(root))
    with _LOCK:
        hit = _SPLITS.get(key)
    if hit is None:
        hit = estimate.planned_split(str(root), float(val_fraction))
        with _LOCK:
            _SPLITS.clear()   # one folder at a time is plenty
            _SPLITS[key] = hit
    return hit


def is_measured(config: RunConfig) -> bool:
    """Whether :func:`estimates_for` can answer ``config`` without waiting."""
    return _measured(estimate.measurement_job(config), config.train.device)


def estimates_for(configs: dict[str, RunConfig], *, busy: Callable[[], bool] = _never_busy,
                  wait_seconds: float = 0.0) -> tuple[dict[str, "estimate.Estimate | None"], list[Job]]:
    """The estimate of each config (:func:`tl_core.training.estimate.estimate`, never measuring in
    the caller's thread): what is not measured yet is queued for the background thread (unless
    ``busy()``), waited for up to ``wait_seconds``, and returned as None with its job in the
    second value, so a page can show "timing…" and look again shortly."""
    if not configs:
        return {}, []
    first = next(iter(configs.values()))
    n_train, n_val, paths = planned_split(first.data.root, first.data.val_fraction)
    jobs = {key: estimate.measurement_job(cfg) for key, cfg in configs.items()}
    waiting = [] if busy() else measure_in_background(list(dict.fromkeys(jobs.values())), busy=busy)
    deadline = time.monotonic() + max(0.0, wait_seconds)
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting = [job for job in waiting if not _measured(job, "auto") and _label(job) not in background_errors()]
    out = {key: estimate.estimate(cfg, measure_now=False, n_train=n_train, n_val=n_val, paths=paths)
           for key, cfg in configs.items()}
    return out, waiting


def background_errors() -> dict[str, str]:
    """What the background thread could not measure (the model's name, with the preset when it
    is not the forward pass), with the reason."""
    with _LOCK:
        return dict(_STATE["errors"])


__all__ = ["stop_background", "measure_in_background", "measure_forward_in_background", "estimates_for", "is_measured", "planned_split", "background_errors", "POLL_SECONDS", "Job"]
