"""Time estimates measured in the background, so the Model page can show the catalogue at once and
fill in "about N seconds per epoch here" as each model's forward pass is timed.

The measuring itself is :mod:`tl_core.training.estimate` (plain functions, cached per process);
this module only owns the queue and the one background thread that works through it. It does not
know about training jobs: the caller says when to pause with ``busy`` (the pages pass
``lambda: jobs.active_job() is not None``), because timing while a model trains would slow the
training down and measure the wrong thing.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from tl_core.training import estimate

# How often a paused worker asks ``busy()`` again (seconds).
POLL_SECONDS = 1.0

_LOCK = threading.Lock()


def _new_state() -> dict:
    return {"thread": None, "queue": [], "errors": {}, "busy": _never_busy}


def _never_busy() -> bool:
    return False


_STATE: dict = _new_state()


def measure_forward_in_background(model_names: list[str], image_size: int | None = None, device: str = "auto",
                                  *, busy: Callable[[], bool] = _never_busy) -> list[str]:
    """Queue forward measurements (:func:`tl_core.training.estimate.measure_forward`) for a
    background thread, one at a time and in order. Returns the names still waiting (queued or being
    measured). Models that fail to measure are remembered in :func:`background_errors` and not
    tried again.

    While ``busy()`` returns True the thread waits before starting its next measurement; the
    latest call's ``busy`` is the one used.
    """
    state = _STATE
    with _LOCK:
        state["busy"] = busy
        errors: dict = state["errors"]
        queue: list = state["queue"]
        waiting = []
        for name in model_names:
            if name in errors or estimate.cached_forward(name, image_size, device) is not None:
                continue
            waiting.append(name)
            if name not in queue:
                queue.append(name)
        thread = state["thread"]
        if queue and not (isinstance(thread, threading.Thread) and thread.is_alive()):
            t = threading.Thread(target=_worker, args=(state, image_size, device), daemon=True, name="tl-estimate")
            state["thread"] = t
            t.start()
    return waiting


def _is_busy(state: dict) -> bool:
    try:
        return bool(state["busy"]())
    except Exception:  # noqa: BLE001 - a broken check must not stop the timing for good
        return False


def _worker(state: dict, image_size: int | None, device: str) -> None:
    queue: list = state["queue"]
    while True:
        while _is_busy(state):
            time.sleep(POLL_SECONDS)
        with _LOCK:
            if not queue:
                state["thread"] = None
                return
            name = queue[0]
        try:
            estimate.measure_forward(name, image_size, device)
        except Exception as err:  # noqa: BLE001 - an unmeasurable model just shows no time
            with _LOCK:
                state["errors"][name] = f"{type(err).__name__}: {err}"
        finally:
            with _LOCK:
                if queue and queue[0] == name:
                    queue.pop(0)


def background_errors() -> dict[str, str]:
    """Models the background thread could not measure, with the reason."""
    with _LOCK:
        return dict(_STATE["errors"])


__all__ = ["measure_forward_in_background", "background_errors", "POLL_SECONDS"]
