"""Keep freed tensor memory in the process while training (or evaluating many images) on a CPU
(Linux/glibc only).

Why: glibc's malloc serves every block above its mmap threshold (128 KiB, growing to 32 MiB at most)
with a fresh ``mmap`` and hands it back with ``munmap`` the moment it is freed. A CPU training step
allocates and frees activations of tens of megabytes per layer, so every step the kernel maps,
zero-fills and unmaps gigabytes of pages. Measured on a 2-core machine (``tf_efficientnet_lite0``,
batch 32 at 224 px, full fine-tune): 16 images/s with 25-40 s of system time per 4 epochs by
default, 26 images/s with 4-7 s of system time with the threshold raised, and epoch-to-epoch noise
fell from ~25% to ~2%. The price is that freed memory stays in the heap while training runs (peak
RSS ~20% higher); when the last training in the process ends, glibc's starting values come back
(128 KiB; glibc offers no way to turn its dynamic threshold back on, which only matters for blocks
of 128 KiB-32 MiB outside training) and ``malloc_trim`` returns the free memory to the system,
which matters for the long-lived app server.

Threads: the thresholds are process-wide, but glibc gives each new thread its own malloc arena, and
in such an arena any block over 64 MiB is always a fresh mapping whatever the settings. The app
trains in a background thread, so the app must be started with one arena
(``MALLOC_ARENA_MAX=1``, as ``make run`` does); measured in a background thread of a server-like
process (``none``, lite0, batch 32): 14 images/s without it, 24-25 images/s with it. The command
line trains in the main thread and needs nothing. :func:`covers_this_thread` tells which case
applies.

Other platforms (macOS, Windows, musl) are left alone. ``TL_MALLOC_TUNING=0`` switches it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
# blocks above this still get their own mapping: only the truly huge (a whole decoded data set)
TRAINING_MMAP_THRESHOLD = 1 << 30
TRAINING_TRIM_THRESHOLD = 1 << 30

_lock = threading.Lock()
_active = 0


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if os.environ.get("TL_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


def _set(libc: ctypes.CDLL, mmap_threshold: int, trim_threshold: int) -> bool:
    ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
    ok_trim = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold))
    return bool(ok_mmap and ok_trim)


def single_arena() -> bool:
    """True when this process was started with one glibc malloc arena (``MALLOC_ARENA_MAX=1`` or
    ``GLIBC_TUNABLES=glibc.malloc.arena_max=1``): then every thread allocates from the main arena."""
    if os.environ.get("MALLOC_ARENA_MAX", "").strip() == "1":
        return True
    return re.search(r"(?:^|:)glibc\.malloc\.arena_max=1(?:$|:)", os.environ.get("GLIBC_TUNABLES", "")) is not None


def covers_this_thread() -> bool:
    """Whether the setting, while active, reaches the large allocations of the calling thread."""
    return tuning_active() and (threading.current_thread() is threading.main_thread() or single_arena())


def tuning_active() -> bool:
    """True while at least one :func:`training_allocator` block is running with the tuning applied."""
    return _active > 0


@contextmanager
def training_allocator() -> Iterator[bool]:
    """Raise glibc's mmap and trim thresholds for the duration of a training run.

    Yields whether the tuning is in effect. Nested and concurrent runs (two trainings in the app's
    server process) share it; the defaults come back when the last one ends.
    """
    global _active
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        applied = _set(libc, TRAINING_MMAP_THRESHOLD, TRAINING_TRIM_THRESHOLD) if _active == 0 else True
        if applied:
            _active += 1
    try:
        yield applied
    finally:
        if applied:
            with _lock:
                _active -= 1
                if _active == 0:
                    _set(libc, GLIBC_DEFAULT_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                    libc.malloc_trim(0)
