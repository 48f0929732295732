"""What people ask of a finished run next, prepared in the background as soon as it finishes, so the
Results and Try pages answer at once instead of showing a bar: the evaluation on the pictures kept
aside (``eval_val.json`` in the run folder), the bundle zip (kept in the cache folder, made
again only when the weights change) and the likely label mistakes (``label_issues.json``, see
:mod:`tl_core.results.mistakes`). And what comes after looking: :func:`retrain_with_fixes`, the
same settings again on the data as the user fixed it.

One preparation per run at a time, in a daemon thread; it waits while a model trains (it would slow
the training down and be slowed by it) and is simply asked again on a later page draw."""
from __future__ import annotations

import atexit
import hashlib
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tl_core.files import atomic_path
from tl_core.paths import cache_dir
from tl_core.runtime.cache_space import after_write, mark_used
from tl_core.runs import RunFolder

if TYPE_CHECKING:  # pragma: no cover - type hints only
    from tl_core.app.jobs import Job
    from tl_core.data.fixes import Fix
    from tl_core.results.picture_features import Warmed

log = logging.getLogger(__name__)

BUNDLES_DIR = "bundles"
EVALUATION_FILE = "eval_val.json"

_lock = threading.Lock()
_threads: dict[str, threading.Thread] = {}
_mistakes_failed: dict[str, str] = {}   # run -> why its label mistakes could not be found (not retried by itself)


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
    try:
        data = target.read_bytes()
        mark_used(target)
        return data
    except OSError:   # not prepared yet, or forgotten by the cache's size limit: made again
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tl-bundle-", dir=target.parent) as tmp:
        made = export_bundle_zip(run_dir, Path(tmp) / f"{RunFolder.open(run_dir).run_id}-model.zip")
        data = made.read_bytes()
    try:
        with atomic_path(target) as part:
            Path(part).write_bytes(data)
        _forget_older_bundles(target)
        after_write(cache_dir(), target)
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


def mistakes_are_ready(run_dir: str | Path) -> bool:
    from tl_core.results.mistakes import label_issues_ready

    return label_issues_ready(run_dir)


def mistakes_failed(run_dir: str | Path) -> str | None:
    """Why looking for label mistakes failed in the background for this run's weights (None: it did not)."""
    return _mistakes_failed.get(_failure_key(run_dir))


def _failure_key(run_dir: str | Path) -> str:
    try:
        return f"{Path(run_dir).resolve()}:{_weights_signature(RunFolder.open(run_dir))}"
    except Exception:  # noqa: BLE001 - no weights: nothing to remember against
        return str(Path(run_dir).resolve())


def _find_mistakes(run_dir: str | Path) -> None:
    """Label mistakes, remembering a failure (a data folder gone, weights missing) instead of
    trying again on every page draw; the Results page offers to try again and says why."""
    from tl_core.errors import TransferLabError
    from tl_core.results.mistakes import find_label_issues

    try:
        find_label_issues(run_dir)
    except (TransferLabError, OSError) as err:
        _mistakes_failed[_failure_key(run_dir)] = str(err)
        log.info("label mistakes of %s not found: %s", run_dir, err)


def _all_ready(run_dir: str | Path) -> bool:
    return (evaluation_is_ready(run_dir) and bundle_is_ready(run_dir)
            and (mistakes_are_ready(run_dir) or mistakes_failed(run_dir) is not None))


def prepare(run_dir: str | Path, busy: Callable[[], bool] = lambda: False) -> dict[str, bool]:
    """Evaluate the run, make its bundle and find its likely label mistakes, skipping what is
    ready; returns what is ready now. Stops early (to be asked again later) when ``busy()`` says a
    model is training."""
    import tl_core

    run = RunFolder.open(run_dir)
    if run.state != "finished" or not run.has_weights():
        return {"evaluation": False, "bundle": False, "mistakes": False}
    if not evaluation_is_ready(run_dir) and not busy():
        tl_core.evaluate(run_dir)
    if not bundle_is_ready(run_dir) and not busy():
        bundle_bytes(run_dir)
    if not mistakes_are_ready(run_dir) and mistakes_failed(run_dir) is None and not busy():
        _find_mistakes(run_dir)
    return {"evaluation": evaluation_is_ready(run_dir), "bundle": bundle_is_ready(run_dir),
            "mistakes": mistakes_are_ready(run_dir)}


def prepare_in_background(run_dir: str | Path, busy: Callable[[], bool] = lambda: False) -> threading.Thread | None:
    """Start :func:`prepare` for this run in a daemon thread unless one is running or all is ready.
    Failures are logged, never raised: the pages make what is missing on demand, with their message."""
    key = str(Path(run_dir).resolve())
    with _lock:
        running = _threads.get(key)
        if running is not None and running.is_alive():
            return running
        try:
            if _all_ready(run_dir):
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


# -- after looking: the same settings on the fixed data -------------------------------------------

def fixes_since(run_dir: str | Path) -> list["Fix"]:
    """The fixes (not undone) made on this run's data folder since the run was created."""
    from tl_core.data.fixes import list_fixes

    run = RunFolder.open(run_dir)
    created = float(run.status().get("created_at") or 0.0)
    try:
        fixes = list_fixes(run.config().data.root)
    except Exception:  # noqa: BLE001 - an unreadable log: no fixes to speak of
        return []
    return [f for f in fixes if f.at >= created]


@dataclass
class Retrain:
    """A retrain that has started: the job, what the feature cache could reuse, the fixes it has."""

    job: "Job"
    warmed: "Warmed"
    fixes: int


def retrain_with_fixes(run_dir: str | Path) -> Retrain:
    """Start a new run with exactly this run's settings, on its data folder as it is now (after the
    user's fixes), into the same runs folder. The training cache is filled from the pictures'
    saved features first (:func:`tl_core.results.picture_features.warm_training_cache`), so a
    "classifier only" run reads no unchanged or moved picture through the network again."""
    from tl_core.app import jobs
    from tl_core.errors import TransferLabError
    from tl_core.results.picture_features import warm_training_cache

    run = RunFolder.open(run_dir)
    config = run.config()
    busy = jobs.own_job()   # the user's own job; someone else's training only makes this one wait in line
    if busy is not None:
        raise TransferLabError(f"A model is already training ({busy.run.run_id}). Wait for it to finish (or stop "
                               "it on the Train page), then retrain.")
    fixes = fixes_since(run_dir)
    warmed = warm_training_cache(config)
    job = jobs.start_training(config, run.path.parent)
    fixed = f"{len(fixes)} fix{'es' if len(fixes) != 1 else ''}"
    try:
        old = run.user().get("title")
        job.run.rename(f"{old} + {fixed}"[:80] if old else f"Retrained with {fixed}")
    except Exception:  # noqa: BLE001 - a title is a nicety
        pass
    return Retrain(job, warmed, len(fixes))


__all__ = ["Retrain", "bundle_bytes", "bundle_cache_path", "bundle_is_ready", "evaluation_is_ready", "fixes_since",
           "mistakes_are_ready", "mistakes_failed", "prepare", "prepare_in_background", "retrain_with_fixes",
           "running", "wait_all"]
