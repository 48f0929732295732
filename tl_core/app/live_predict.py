"""Classifying the camera stream live: the newest frame only, as fast as the computer allows (up to
a ceiling), never a queue of old frames, with a rolling "predictions per second".

:class:`LivePredictor` runs one background thread per browser session. The camera's thread only
drops each frame into a :class:`tl_core.app.camera.FrameSlot` (:meth:`LivePredictor.offer`);
the predictor thread takes the newest frame whenever it is free, so frames that arrive while the
model is busy are skipped (counted in ``dropped``), and the answer on screen is never more than
one prediction behind the camera. The thread ends by itself when no frame came for
``idle_stop`` seconds (a closed tab, a stopped camera) and starts again with the next frame.
The page reads :meth:`LivePredictor.latest`. Streamlit-free; the clock is injectable for tests.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from tl_core.app.camera import FrameSlot

__all__ = ["RateMeter", "LiveAnswer", "LivePredictor", "threads_for_this_thread"]


def threads_for_this_thread(n: int) -> None:
    """PyTorch's CPU threads for the calling thread only: ``n`` here, the process's setting unchanged
    for every other thread.

    ``torch.set_num_threads`` sets the calling thread's OpenMP team size and the default that new
    threads start with; a helper thread then puts that default back. Why fewer threads for live
    prediction: the video's decoding and encoding, Streamlit and maybe a training share the cores. On 2
    busy cores, with OpenMP threads spinning while they wait (before tl_core set OMP_WAIT_POLICY=PASSIVE),
    a 2-thread forward pass of EfficientNet-Lite0 once measured 0.8-2 passes a second against 16-33 with
    1 thread; one thread is enough for the live path's ceiling (31 ms a prediction on a quiet 2-core
    machine: bench/RESULTS.md, "Live camera")."""
    import torch

    before = torch.get_num_threads()
    if before == n:
        return
    torch.set_num_threads(n)
    helper = threading.Thread(target=torch.set_num_threads, args=(before,), name="tl-threads-restore")
    helper.start()
    helper.join()


def live_threads() -> int:
    """PyTorch threads for live predictions: half the cores, at least 1."""
    from tl_core.runtime.device import cpu_cores

    return max(1, cpu_cores() // 2)


class RateMeter:
    """Events per second over the last ``window`` seconds (a rolling measure)."""

    def __init__(self, window: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.window = float(window)
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self, at: float | None = None) -> None:
        with self._lock:
            self._times.append(self._clock() if at is None else at)
            self._trim(self._times[-1])

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        """Events per second in the window ending ``now``. Before a whole window has passed since the
        first event, over the time the events span (so a fresh start is not shown as slow)."""
        with self._lock:
            now = self._clock() if now is None else now
            self._trim(now)
            n = len(self._times)
            if n < 2:
                return 0.0
            if now - self._times[0] >= self.window * 0.999:
                return n / self.window
            return (n - 1) / max(self._times[-1] - self._times[0], 1e-9)


@dataclass
class LiveAnswer:
    """What the page shows: the newest answer (``answer`` as :meth:`LoadedModel.answer` gives it) and
    how the live loop is doing."""

    answer: dict | None = None
    frame: int = 0               # the number of the frame it answers
    at: float = 0.0              # when (the predictor's clock)
    per_second: float = 0.0      # predictions per second, rolling
    predicted: int = 0
    dropped: int = 0             # frames skipped because the model was busy
    seconds_each: float = 0.0    # the last prediction's time
    frames_per_second: float = 0.0   # how fast the camera's frames arrive (rolling): the most predictions can be
    error: str | None = None
    running: bool = False
    extra: dict = field(default_factory=dict)


class LivePredictor:
    """Predict the newest camera frame, again and again, in a thread of its own.

    ``predict`` takes an RGB picture and returns a plain answer dict (``LoadedModel.answer``).
    ``max_per_second`` caps the rate (the rest of the app, and a training, keep some CPU)."""

    def __init__(self, predict: Callable[[Image.Image], dict], slot: FrameSlot | None = None,
                 max_per_second: float = 12.0, clock: Callable[[], float] = time.monotonic,
                 idle_stop: float = 10.0, rate_window: float = 3.0, threads: int | str | None = "auto"):
        self._predict = predict
        # "auto": half the cores (1 on 2 cores), the other half for the video, the app and a training;
        # None: the process's setting
        self.threads = live_threads() if threads == "auto" else threads
        self.slot = slot or FrameSlot(clock=clock)
        self._min_gap = 1.0 / max_per_second if max_per_second > 0 else 0.0
        self._clock = clock
        self.idle_stop = idle_stop
        self.meter = RateMeter(rate_window, clock)
        self.frame_meter = RateMeter(rate_window, clock)
        self._lock = threading.Lock()
        self._state = LiveAnswer()
        self._seen = 0
        self._last_start = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the camera's side ------------------------------------------------------------------------
    def offer(self, frame: Any) -> None:
        """A new camera frame (cheap: stored in the slot; the thread starts if it is not running)."""
        self.slot.put(frame)
        self.frame_meter.add()
        self.ensure_running()

    def ensure_running(self) -> None:
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._loop, name="tl-live-predict", daemon=True)
            self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Stop for good (a new predictor is made for another model)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    # -- one step (the thread's loop, and the tests) ----------------------------------------------
    def due_in(self) -> float:
        """Seconds until the rate ceiling allows the next prediction (0: now)."""
        return max(0.0, self._last_start + self._min_gap - self._clock())

    def step(self) -> bool:
        """Predict the newest frame if there is one not answered yet and the ceiling allows; True when it did."""
        seq, frame = self.slot.latest()
        if seq <= self._seen or self.due_in() > 0:
            return False
        start = self._clock()
        self._last_start = start
        skipped = max(0, seq - self._seen - 1)
        self._seen = seq
        try:
            answer = self._predict(self.slot.image(frame))
            error = None
        except Exception as err:  # noqa: BLE001 - shown on the page; the loop goes on with the next frame
            from tl_core.errors import TransferLabError

            answer = None
            error = str(err) if isinstance(err, TransferLabError) else f"The model could not answer ({type(err).__name__}: {err})."
        end = self._clock()
        if error is None:
            self.meter.add(end)
        with self._lock:
            s = self._state
            self._state = LiveAnswer(answer=answer if error is None else s.answer, frame=seq if error is None else s.frame,
                                     at=end if error is None else s.at, per_second=self.meter.rate(end),
                                     predicted=s.predicted + (error is None), dropped=s.dropped + skipped,
                                     seconds_each=end - start, error=error, running=True)
        return True

    def _loop(self) -> None:
        if self.threads:
            threads_for_this_thread(self.threads)
        while not self._stop.is_set():
            if not self.slot.wait_newer(self._seen, timeout=min(1.0, self.idle_stop)):
                age = self.slot.age()
                if age is None or age >= self.idle_stop:
                    break          # nobody is sending frames: end; the next offer() starts again
                continue
            wait = self.due_in()
            if wait > 0:
                if self._stop.wait(wait):
                    break
            if self.step() and self._state.error:
                self._stop.wait(0.5)   # a failing model is not retried in a tight loop
        with self._lock:
            self._state.running = False

    # -- the page's side --------------------------------------------------------------------------
    def latest(self) -> LiveAnswer:
        """The newest answer, with the current rate (decays to 0 when the camera stops)."""
        with self._lock:
            s = self._state
            running = self._thread is not None and self._thread.is_alive()
            return LiveAnswer(answer=s.answer, frame=s.frame, at=s.at, per_second=self.meter.rate(),
                              predicted=s.predicted, dropped=s.dropped, seconds_each=s.seconds_each,
                              frames_per_second=self.frame_meter.rate(), error=s.error, running=running)
