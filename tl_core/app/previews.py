"""Quick looks at a data folder for the Data, Model and Layers pages: examples per category, the
remembered check of a folder, the split preview and picture counts without opening pictures."""
from __future__ import annotations

import atexit
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

import tl_core
from tl_core.app.workspace import folder_fingerprint
from tl_core.data.dataset import SplitFacts, recorded_split, split_facts
from tl_core.data.scan import scan_folder
from tl_core.data.split import split_source, val_target


def examples_per_class(records: Iterable[Any], k: int = 4) -> dict[str, list[Any]]:
    """The first ``k`` records of each class, in class order of first appearance."""
    out: dict[str, list[Any]] = {}
    for r in records:
        bucket = out.setdefault(r.label, [])
        if len(bucket) < k:
            bucket.append(r)
    return out


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_CHECKS = _LRU(8)


def checked_dataset(root: str | Path, progress: Callable[[int, int], None] | None = None):
    """:func:`tl_core.check` without the look for odd pictures (:func:`odd_look` makes it in the
    background), remembered per folder content for this process (the Data page redraws on every
    click; opening every picture each time would be slow)."""
    key = (str(Path(root).resolve()), folder_fingerprint(root))
    hit = _CHECKS.get(key)
    if hit is not None:
        return hit
    report = tl_core.check(root, progress=progress, outliers=False)   # odd pictures: see odd_look
    _CHECKS.put(key, report)
    return report


class OddLook:
    """The look for odd pictures of one folder, made in a background thread: the network looks at
    every picture once, which takes minutes on a big folder the first time (25,000 photos: the check
    itself takes about 15 s), so the Data page shows everything else at once and this part when it is
    ready. ``state`` is "running", "done" or "failed"; ``fraction`` of the pictures looked at so far."""

    def __init__(self, records: list[Any]):
        self.state = "running"
        self.fraction = 0.0
        self.found = None          # tl_core.data.outliers.OddPictures when done
        self.problems: list[Any] = []
        self.message = ""
        self._records = records
        self.thread = threading.Thread(target=self._look, name="tl-odd-pictures", daemon=True)

    def _look(self) -> None:
        from tl_core.data.outliers import find_odd_pictures, odd_problems

        def progress(done: int, total: int) -> None:
            if _STOP.is_set():   # the server is stopping: end between two chunks of pictures
                raise RuntimeError("the app is stopping")
            self.fraction = done / total if total else 1.0

        try:
            found = find_odd_pictures(self._records, progress=progress)
            self.found, self.problems = found, odd_problems(found)
            self.state = "done"
        except Exception as err:  # noqa: BLE001 - the rest of the Data page stands without this part
            self.message = f"Odd pictures were not looked for: {err}"
            self.state = "failed"
        finally:
            self.fraction, self._records = 1.0, []

    @property
    def running(self) -> bool:
        return self.state == "running"


_ODD = _LRU(8)
_ODD_LOCK = threading.Lock()
_STOP = threading.Event()


@atexit.register
def _stop_looks(timeout: float = 30.0) -> None:
    """A daemon thread still inside PyTorch while Python finalises aborts the process ("terminate
    called..."): a look under way stops at its next chunk of pictures and is waited for."""
    _STOP.set()
    with _ODD_LOCK:
        with _ODD.lock:
            looks = [look for look in _ODD.items.values() if look.running]
    for look in looks:
        look.thread.join(timeout)


def odd_look(root: str | Path, report) -> OddLook:
    """The look for odd pictures in ``root`` (its quick ``report`` from :func:`checked_dataset`):
    started in the background on first call, the same object for the same folder content after."""
    key = (str(Path(root).resolve()), folder_fingerprint(root))
    with _ODD_LOCK:
        look = _ODD.get(key)
        if look is None:
            look = OddLook(list(report.readable))
            _ODD.put(key, look)
            look.thread.start()
    return look


def cached_check(root: str | Path):
    """The remembered check of ``root`` when there is one, else None (never opens pictures)."""
    return _CHECKS.get((str(Path(root).resolve()), folder_fingerprint(root)))


def split_counts(counts: dict[str, int], val_fraction: float) -> dict[str, tuple[int, int]]:
    """(train, validation) pictures per class for a validation share, from counts alone (no copies
    known): :func:`tl_core.data.split.val_target`'s numbers. For a folder, use :func:`split_preview`,
    which also knows a folder's own val/."""
    return {label: (n - val_target(n, val_fraction), val_target(n, val_fraction)) for label, n in counts.items()}


def split_preview(root: str | Path, val_fraction: float, split_seed: int = 0, report=None) -> SplitFacts:
    """How ``root`` will be split (:func:`tl_core.data.dataset.split_facts`): from ``report`` or the
    remembered check when there is one (exactly training's numbers), else from file names only.
    Raises :class:`~tl_core.errors.DataError` when the folder cannot be used at all."""
    from types import SimpleNamespace

    report = report if report is not None else cached_check(root)
    cfg = SimpleNamespace(root=str(root), val_fraction=val_fraction, split_seed=split_seed)
    return split_facts(cfg, report=report)


def split_words(root: str | Path | None, val_fraction: float, split_seed: int = 0) -> str:
    """The split in one line for captions (``"160 pictures to learn from, 40 to check with (20% kept
    aside at random)"``); never raises: without a usable folder, just the share."""
    if root:
        try:
            return split_preview(root, val_fraction, split_seed).describe()
        except Exception:  # a caption must not break its page; the Data page explains the folder
            pass
    return f"{split_source('random', val_fraction)} to check the model"


def run_split(run_dir: str | Path) -> SplitFacts | None:
    """The split a run used, from its summary.json and config (None when it never read its data)."""
    from tl_core.runs import RunFolder

    try:
        run = RunFolder.open(run_dir)
        summary = run.summary()
    except tl_core.TransferLabError:
        return None
    try:
        config = run.config()
    except Exception:  # an unreadable config.json: the summary alone still gives the numbers
        config = None
    return recorded_split(summary, config)


def quick_counts(root: str | Path) -> dict[str, int]:
    """Pictures per class: from the remembered check when there is one, else from a name-only scan
    (instant; unreadable files are still counted until the Data page checks them)."""
    report = cached_check(root)
    if report is not None:
        return dict(report.counts)
    return scan_folder(root).counts()


def display_picture(image, box: int = 160):
    """A picture sized for the screen: big photos shrunk to fit ``box`` (smoothly), tiny ones (the
    28-pixel sample) enlarged by a whole factor with hard pixel edges, so on a projector they look
    crisp instead of a blur the browser makes of a stretched 28-pixel image."""
    from PIL import Image

    img = image.copy()
    longest = max(img.size)
    if longest > box:
        img.thumbnail((box, box), Image.Resampling.LANCZOS)
    elif longest * 2 <= box:
        factor = box // longest
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    return img
