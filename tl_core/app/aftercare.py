"""What people ask of a finished run next, prepared in the background as soon as it finishes, so the
Results and Try pages answer at once instead of showing a bar: the evaluation on the pictures kept
aside (``eval_val.json`` in the run folder) and the bundle zip (kept in the cache folder, made
again only when the weights change).

One preparation per run at a time, in a daemon thread; it waits while a model trains (it would slow
the training down and be slowed by it) and is simply asked again on a later page draw."""
from __future__ import annotations

import atexit
import hashlib
import logging
import tempfile
import threading
from pathlib import Path
from typing import Callable

from tl_core.files import atomic_path
from tl_core.paths import cache_dir
from tl_core.runs import RunFolder

log = logging.getLogger(__name__)

BUNDLES_DIR = "bundles"
EVALUATION_FILE = "eval_val.json"

_lock = threading.Lock()
_threads: dict[str, threading.Thread] = {}


def _weights_signature(run: RunFolder) -> str:
    """Changes whenever training saves better weights (size and modification time, to the nanosecond)."""
    st = run.weights_path.stat()
    return hashlib.sha256(f"{run.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def bundle_cache_path(run_dir: str | Path) -> Path:
    run = RunFolder.open(run_dir)
    return cache_dir() / BUNDLES_DIR / f"{run.run_id}-{_weights_signature(run)}.zip"


def bundle_is_ready(run_dir: str | Path) -> bool:
    try:
        return bundle_cache_path(run_dir).is_file()
    except Exception:  # noqa: BLE001 - a run without weights has no bundle to be ready
        return False


def bundle_bytes(run_dir: str | Path) -> bytes:
    """The run's bundle zip: the prepared one when the weights have not changed since, else made
    (and verified, see :func:`tl_core.results.export.export_bundle_zip`) now and kept for next time."""
    from tl_core.results.export import export_bundle_zip

    target = bundle_cache_path(run_dir)
    if target.is_file():
        return target.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tl-bundle-", dir=target.parent) as tmp:
        made = export_bundle_zip(run_dir, Path(tmp) / f"{RunFolder.open(run_dir).run_id}-model.zip")
        data = made.read_bytes()
    try:
        with atomic_path(target) as part:
            Path(part).write_bytes(data)
        _forget_older_bundles(target)
    except OSError as err:  # a full cache disk: the download still works, it is just not kept
        log.info("bundle not kept in the cache: %s", err)
    return data


def _forget_older_bundles(current: Path) -> None:
    """A run's earlier bundles (older weights) are only cache: keep the newest one."""
    prefix = current.name.rsplit("-", 1)[0] + "-"
    for old in current.parent.glob(f"{prefix}*.zip"):
        if old != current and len(old.name) == len(current.name):
            try:
                old.unlink()
            except OSError:
                pass


def evaluation_is_ready(run_dir: str | Path) -> bool:
    """The saved evaluation is there and newer than the weights it measured."""
    run = RunFolder(Path(run_dir))
    saved = run.path / EVALUATION_FILE
    try:
        return saved.is_file() and saved.stat().st_mtime >= run.weights_path.stat().st_mtime
    except OSError:
        return False


def prepare(run_dir: str | Path, busy: Callable[[], bool] = lambda: False) -> dict[str, bool]:
    """Evaluate the run and make its bundle, skipping what is ready; returns what is ready now.
    Stops early (to be asked again later) when ``busy()`` says a model is training."""
    import tl_core

    run = RunFolder.open(run_dir)
    if run.state != "finished" or not run.has_weights():
        return {"evaluation": False, "bundle": False}
    if not evaluation_is_ready(run_dir) and not busy():
        tl_core.evaluate(run_dir)
    if not bundle_is_ready(run_dir) and not busy():
        bundle_bytes(run_dir)
    return {"evaluation": evaluation_is_ready(run_dir), "bundle": bundle_is_ready(run_dir)}


def prepare_in_background(run_dir: str | Path, busy: Callable[[], bool] = lambda: False) -> threading.Thread | None:
    """Start :func:`prepare` for this run in a daemon thread unless one is running or all is ready.
    Failures are logged, never raised: the pages make what is missing on demand, with their message."""
    key = str(Path(run_dir).resolve())
    with _lock:
        running = _threads.get(key)
        if running is not None and running.is_alive():
            return running
        try:
            if evaluation_is_ready(run_dir) and bundle_is_ready(run_dir):
                return None
        except Exception:  # noqa: BLE001
            return None

        def work() -> None:
            try:
                prepare(run_dir, busy)
            except Exception as err:  # noqa: BLE001 - the page will make it on demand and explain
                log.info("preparing %s in the background failed: %s", run_dir, err)

        thread = threading.Thread(target=work, name=f"aftercare-{Path(run_dir).name}", daemon=True)
        _threads[key] = thread
        thread.start()
        return thread


def running(run_dir: str | Path) -> threading.Thread | None:
    """The preparation working on this run now, if any (a page can wait for it instead of doing
    the same work a second time)."""
    with _lock:
        thread = _threads.get(str(Path(run_dir).resolve()))
    return thread if thread is not None and thread.is_alive() else None


def wait_all(timeout: float = 60.0) -> None:
    """Let running preparations end (tests, and a server shutting down)."""
    with _lock:
        threads = list(_threads.values())
    for t in threads:
        t.join(timeout)


@atexit.register
def _finish_before_exit() -> None:
    """A daemon thread still inside PyTorch while Python finalises aborts the process ("terminate
    called..."): let a preparation under way end first (an evaluation takes seconds)."""
    wait_all(timeout=120.0)


__all__ = ["bundle_bytes", "bundle_cache_path", "bundle_is_ready", "evaluation_is_ready", "prepare",
           "prepare_in_background", "running", "wait_all"]
