"""Taking pictures with the camera: categories made by name, pictures saved one at a time or as a
burst into a normal category folder, the last ones shown and removable with an undo.

Everything here is Streamlit-free and knows nothing about WebRTC: the page glue
(``pages/_camera.py``) hands each camera frame to :meth:`CameraSession.on_frame` from
streamlit-webrtc's callback thread, and the page itself (the script thread) asks for counts,
the last pictures, a single shot or a burst. A frame is kept as it came (an ``av.VideoFrame``
in the app, a PIL picture in the tests) and turned into a picture only when one is saved or
predicted (``to_image``), so a camera sending 30 frames a second costs nothing while nobody
looks.

Where pictures go: :func:`camera_data_dir` (the one place that decides it), one subfolder per
category, JPEG files named by the time they were taken. That folder becomes the session's data
folder, so checks, training and projects use it like any other. Removing a picture sets it aside
through :mod:`tl_core.data.fixes` (``<data>-set-aside/``, logged, undoable): nothing is deleted.
"""
from __future__ import annotations

import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from tl_core.data import fixes
from tl_core.data.images import SUPPORTED_EXTENSIONS
from tl_core.data.scan import is_ignored_name
from tl_core.errors import DataError
from tl_core.files import atomic_path

__all__ = ["RTC_CONFIGURATION", "CameraError", "camera_data_dir", "clean_category_name", "CameraPictures", "FrameSlot", "Burst",
           "BurstStatus", "CameraSession", "BURST_RATES", "BURST_COUNTS"]

CAMERA_FOLDER = "camera"
JPEG_QUALITY = 90
MAX_CATEGORY_CHARS = 60
MAX_CATEGORIES = 50
# folder names that would turn the category folders into a train/val/test layout (see data/scan.py)
_SPLIT_NAMES = {"train", "val", "validation", "valid", "test"}
BURST_RATES = (1.0, 2.0, 3.0, 5.0)      # pictures per second offered on the page
BURST_COUNTS = (5, 10, 20, 30)          # pictures per burst offered on the page
MAX_BURST = 100


# The live video's WebRTC configuration: no STUN or TURN server, so nothing asks a machine elsewhere for an
# address; the browser and this server find each other through their own (host) addresses, which works on
# this computer and on a classroom's local network. (Without "iceServers", streamlit-webrtc fills in public
# servers and aiortc Google's STUN server.)
RTC_CONFIGURATION = {"iceServers": []}


class CameraError(DataError):
    """Something asked of the camera pictures cannot be done; the message says why and what to do."""


def camera_data_dir(token: str) -> Path:
    """The folder this browser session's camera pictures go into (one subfolder per category).

    The one place that decides it: beside the session's remembered choices
    (``workspace/sessions/<token>/camera``), so it follows wherever :mod:`tl_core.app.sessions`
    keeps a session."""
    from tl_core.app.sessions import session_state_path

    return session_state_path(token).parent / CAMERA_FOLDER


def clean_category_name(name: object, existing: list[str] | tuple[str, ...] = ()) -> str:
    """``name`` as a category folder name (trimmed, NFC), or a plain :class:`CameraError` saying why not:
    empty, a path (``../x``, ``a/b``), hidden, too long, a name the folder layout reserves
    (train, val, test) or one that already exists (in any letter case)."""
    text = unicodedata.normalize("NFC", str(name or "")).strip()
    if not text:
        raise CameraError("Type a name for the category first (for example 'cup' or 'thumbs up').")
    if ("/" in text or "\\" in text or text in (".", "..") or any(ord(c) < 32 for c in text)
            or is_ignored_name(text)):
        raise CameraError(f"'{text[:80]}' cannot be a category name: use letters, digits and spaces only (no / or \\, "
                          "not starting with a dot).")
    if len(text) > MAX_CATEGORY_CHARS:
        raise CameraError(f"That name is {len(text)} characters long: keep a category name under "
                          f"{MAX_CATEGORY_CHARS} characters.")
    if text.lower() in _SPLIT_NAMES:
        raise CameraError(f"'{text}' is a word Transfer Lab keeps for a folder of training or checking pictures: "
                          "choose another name for the category.")
    for other in existing:
        if other.lower() == text.lower():
            raise CameraError(f"There is already a category called '{other}'. Pick it in the list to add pictures "
                              "to it, or choose another name.")
    return text


class CameraPictures:
    """The camera's data folder: categories (subfolders), their pictures, saving, removing, undo."""

    def __init__(self, root: str | Path, max_pictures: int | None = None):
        self.root = Path(root)
        self.max_pictures = max_pictures   # a classroom server's per-student limit (None: no limit)
        self._lock = threading.Lock()   # one save at a time: a burst and a single shot never pick the same name
        self._serial = 0

    # -- looking ----------------------------------------------------------------------------------
    def categories(self) -> list[str]:
        """The category folders, sorted by name (none before the first is made)."""
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not is_ignored_name(e.name))
        except FileNotFoundError:
            return []

    def pictures(self, category: str) -> list[Path]:
        """The category's pictures, oldest first (by the time in their name, then when written)."""
        folder = self.root / category
        try:
            entries = [e for e in os.scandir(folder) if e.is_file() and not is_ignored_name(e.name)
                       and os.path.splitext(e.name)[1].lower() in SUPPORTED_EXTENSIONS]
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries.sort(key=lambda e: (e.stat().st_mtime, e.name))
        return [Path(e.path) for e in entries]

    def counts(self) -> dict[str, int]:
        """Pictures per category, every category listed (an empty one with 0)."""
        return {c: len(self.pictures(c)) for c in self.categories()}

    def recent(self, limit: int = 8, category: str | None = None) -> list[Path]:
        """The last ``limit`` pictures taken (of one category, or of all), newest first."""
        cats = [category] if category else self.categories()
        found = [p for c in cats for p in self.pictures(c)]
        found.sort(key=lambda p: (_mtime(p), p.name), reverse=True)
        return found[:max(0, limit)]

    # -- changing ---------------------------------------------------------------------------------
    def add_category(self, name: object) -> str:
        """Make the category folder ``name`` (checked by :func:`clean_category_name`); returns the name."""
        existing = self.categories()
        clean = clean_category_name(name, existing)
        if len(existing) >= MAX_CATEGORIES:
            raise CameraError(f"There are already {len(existing)} categories: that is the most the camera page keeps.")
        try:
            (self.root / clean).mkdir(parents=True, exist_ok=False)
        except FileExistsError:   # a file (not a folder) of that name, or made a moment ago by another tab
            raise CameraError(f"There is already something called '{clean}' in the camera folder: choose another "
                              "name.") from None
        except OSError as err:
            raise CameraError(f"Could not make the folder for '{clean}': {err.strerror or err}. Is the disk full or "
                              "read-only?") from None
        return clean

    def _category(self, category: str | None) -> Path:
        if not category:
            raise CameraError("Make a category first (type its name and click Add), then take pictures into it.")
        folder = self.root / category
        if category not in self.categories():
            raise CameraError(f"There is no category '{category}' any more. Make it again or pick another one.")
        return folder

    def save(self, category: str | None, image: Image.Image | None, when: float | None = None) -> Path:
        """Save ``image`` as a JPEG in ``category``; returns its path. A plain :class:`CameraError` when
        there is no picture from the camera yet or no such category."""
        folder = self._category(category)
        if image is None:
            raise CameraError("No picture from the camera yet: click Start under the video (and allow the camera "
                              "when the browser asks), then try again.")
        if self.max_pictures is not None:
            have = sum(self.counts().values())
            if have >= self.max_pictures:
                raise CameraError(f"You have {have} pictures: on this server each student may keep at most "
                                  f"{self.max_pictures}. Remove some you do not need, then take more.")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if when is None else when))
        picture = image if image.mode == "RGB" else image.convert("RGB")
        with self._lock:
            while True:
                self._serial += 1
                path = folder / f"cam-{stamp}-{self._serial:04d}.jpg"
                if not path.exists():
                    break
            try:
                with atomic_path(path) as tmp:
                    picture.save(tmp, format="JPEG", quality=JPEG_QUALITY)
            except OSError as err:
                raise CameraError(f"Could not save the picture into '{category}': {err.strerror or err}. Is the disk "
                                  "full?") from None
        return path

    def remove(self, picture: str | Path) -> fixes.Fix:
        """Set ``picture`` aside (out of the data folder, into ``<data>-set-aside/``), logged so that
        :meth:`undo` can put it back. Nothing is deleted."""
        return fixes.set_aside(self.root, picture)

    def undo(self, fix_id: str | None = None) -> fixes.Fix:
        """Put a set-aside picture back (the last one when ``fix_id`` is None)."""
        return fixes.undo(self.root, fix_id)

    def removed(self) -> list[fixes.Fix]:
        """The pictures set aside and not put back yet, oldest first."""
        if not fixes.fixes_log_path(self.root).is_file():
            return []
        return [f for f in fixes.list_fixes(self.root) if f.action == fixes.SET_ASIDE]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class FrameSlot:
    """The newest camera frame, one slot: a new frame replaces the old one (never a queue), numbered
    so that a reader knows whether it has seen it. Written by the camera's thread, read by others."""

    def __init__(self, to_image: Callable[[Any], Image.Image] | None = None, clock: Callable[[], float] = time.monotonic):
        self._to_image = to_image or (lambda frame: frame)
        self._clock = clock
        self._cond = threading.Condition()
        self._frame: Any = None
        self._seq = 0
        self._at = 0.0

    def put(self, frame: Any) -> int:
        with self._cond:
            self._frame, self._seq, self._at = frame, self._seq + 1, self._clock()
            self._cond.notify_all()
            return self._seq

    @property
    def seq(self) -> int:
        """How many frames have arrived (0: none yet)."""
        return self._seq

    def age(self) -> float | None:
        """Seconds since the last frame arrived (None before the first)."""
        return None if self._seq == 0 else max(0.0, self._clock() - self._at)

    def latest(self) -> tuple[int, Any]:
        """(number, frame) of the newest frame; (0, None) before the first."""
        with self._cond:
            return self._seq, self._frame

    def image(self, frame: Any = None) -> Image.Image | None:
        """The newest frame (or ``frame``) as an RGB picture; None before the first frame."""
        if frame is None:
            frame = self.latest()[1]
        if frame is None:
            return None
        image = self._to_image(frame)
        return image if image.mode == "RGB" else image.convert("RGB")

    def wait_newer(self, seen: int, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for a frame numbered above ``seen``; True when there is one."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq > seen, timeout=timeout)


@dataclass(frozen=True)
class BurstStatus:
    category: str | None
    saved: int
    total: int
    active: bool
    error: str | None = None

    def words(self) -> str:
        if self.error:
            return self.error
        if self.active:
            return f"Taking pictures of '{self.category}': {self.saved} of {self.total}…"
        if self.total:
            return f"Took {self.saved} pictures of '{self.category}'."
        return ""


class Burst:
    """Several pictures in a row at a steady rate ("5 pictures, 2 a second").

    :meth:`tick` is called for every camera frame (the camera's thread); it saves the newest frame
    when the next picture is due and that frame was not saved already, so a slow camera never gives
    two copies of one frame. Behind schedule (a slow frame, a busy computer), it does not catch up
    with a rush of pictures: the next one is due one interval after the late one. The clock is
    injectable, so the timing is tested without waiting."""

    def __init__(self, pictures: CameraPictures, clock: Callable[[], float] = time.monotonic):
        self.pictures = pictures
        self._clock = clock
        self._lock = threading.Lock()
        self._category: str | None = None
        self._total = self._saved = 0
        self._interval = 1.0
        self._due = 0.0
        self._last_seq = 0
        self._active = False
        self._error: str | None = None
        self.saved_paths: list[Path] = []

    def start(self, category: str | None, count: int = 10, per_second: float = 2.0) -> None:
        """Begin a burst of ``count`` pictures into ``category`` at ``per_second``; the first is taken
        with the next frame. Refused (plain words) for a missing category or unreasonable numbers."""
        self.pictures._category(category)   # a plain message for no / a vanished category
        if not isinstance(count, int) or not 1 <= count <= MAX_BURST:
            raise CameraError(f"A burst takes 1 to {MAX_BURST} pictures; got {count}.")
        if not (isinstance(per_second, (int, float)) and 0.2 <= float(per_second) <= 10):
            raise CameraError(f"A burst takes 0.2 to 10 pictures a second; got {per_second}.")
        with self._lock:
            self._category, self._total, self._saved = category, count, 0
            self._interval = 1.0 / float(per_second)
            self._due = self._clock()
            self._active, self._error = True, None
            self.saved_paths = []

    def stop(self) -> None:
        with self._lock:
            self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def status(self) -> BurstStatus:
        with self._lock:
            return BurstStatus(self._category, self._saved, self._total, self._active, self._error)

    def tick(self, slot: FrameSlot) -> Path | None:
        """Save the newest frame when a picture is due; returns its path, else None."""
        if not self._active:
            return None
        with self._lock:
            if not self._active:
                return None
            now = self._clock()
            seq, frame = slot.latest()
            if now < self._due or seq == 0 or seq == self._last_seq:
                return None
            try:
                path = self.pictures.save(self._category, slot.image(frame))
            except Exception as err:  # noqa: BLE001 - the camera thread must go on; the page shows why
                self._active = False
                self._error = (str(err) if isinstance(err, CameraError)
                               else f"The burst stopped: a picture could not be saved ({type(err).__name__}: {err}).")
                return None
            self._last_seq = seq
            self._saved += 1
            self.saved_paths.append(path)
            # steady cadence; when late by more than an interval, restart it from now (no catch-up rush)
            self._due = self._due + self._interval if now - self._due < self._interval else now + self._interval
            if self._saved >= self._total:
                self._active = False
            return path


class CameraSession:
    """One browser session's camera: the newest frame, its pictures folder, the running burst.

    :meth:`on_frame` is what the video callback calls (keep it cheap: it stores the frame, and saves
    one only when a burst wants it); :meth:`snap` is a single picture from the newest frame."""

    def __init__(self, root: str | Path, to_image: Callable[[Any], Image.Image] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.pictures = CameraPictures(root)
        self.slot = FrameSlot(to_image, clock)
        self.burst = Burst(self.pictures, clock)
        self._clock = clock

    @property
    def root(self) -> Path:
        return self.pictures.root

    def on_frame(self, frame: Any) -> None:
        self.slot.put(frame)
        self.burst.tick(self.slot)

    def has_frame(self, within: float = 5.0) -> bool:
        """Whether the camera sent a frame in the last ``within`` seconds (it is running)."""
        age = self.slot.age()
        return age is not None and age <= within

    def snap(self, category: str | None) -> Path:
        """Save the newest frame into ``category`` now."""
        if self.slot.seq and not self.has_frame():
            raise CameraError("The camera stopped sending pictures: click Start under the video again.")
        return self.pictures.save(category, self.slot.image())
