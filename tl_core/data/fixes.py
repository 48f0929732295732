"""Fixing a data folder from what the model showed: move a picture to another category, or set it
aside, in one step each, every step logged and undoable. Nothing is ever deleted.

Where things go (for a data folder ``photos/``):

* ``photos/<category>/...``: moving a picture changes only its category folder; the rest of its
  place is kept (``cats/2021/a.jpg`` -> ``dogs/2021/a.jpg``; ``train/cats/a.jpg`` ->
  ``train/dogs/a.jpg``), so undo puts it back exactly.
* ``photos-set-aside/<its place>``: a set-aside picture leaves the data folder (training would
  read anything inside it, even a hidden folder is one rename away from being a category) and
  waits beside it, under the same relative path (``photos-set-aside/cats/a.jpg``).
* ``photos-fixes.jsonl``: the log, beside the data folder for the same reason. One JSON object a
  line: ``{"id", "action": "move"|"set_aside", "source", "target", "from_category",
  "to_category", "created_folder", "at"}`` (``source``/``target`` relative to the data folder, a
  set-aside ``target`` relative to the set-aside folder), and ``{"id", "action": "undo",
  "undoes", "at"}`` for an undo. The whole log is rewritten atomically on each step (it stays
  small), so it is never half a line.

Safety: only pictures of the data folder itself (its scan's records, links resolved, nothing
outside it), only into a category that exists unless the caller asks to create it (with a name
that is a plain folder name), never over another file (`` (2)`` is added), never inside the
bundled sample (it is part of the app: copy it first) and with a plain message when the folder
cannot be written. One lock per process keeps two clicks from interleaving.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from tl_core.data.scan import DatasetScan, ImageRecord, is_ignored_name, scan_folder
from tl_core.errors import DataError
from tl_core.files import atomic_path, short_path

__all__ = ["Fix", "FixError", "can_fix", "fixes_log_path", "set_aside_dir", "move_picture", "set_aside", "undo",
           "undo_last", "list_fixes", "category_of"]

LOG_SUFFIX = "-fixes.jsonl"
SET_ASIDE_SUFFIX = "-set-aside"
MOVE, SET_ASIDE, UNDO = "move", "set_aside", "undo"

_lock = threading.Lock()


class FixError(DataError):
    """A fix was refused or could not be made; the message says why and what to do."""


@dataclass
class Fix:
    """One step taken on the data folder, as logged."""

    id: str
    action: str                  # "move" or "set_aside"
    source: str                  # where the picture was, relative to the data folder (posix)
    target: str                  # where it is now: relative to the data folder, or to the set-aside folder
    from_category: str
    to_category: str | None      # None when set aside
    at: float
    created_folder: str | None = None   # a category folder this move made (relative), removed again on undo if empty
    undone: bool = False

    def source_path(self, root: str | Path) -> Path:
        return Path(root) / self.source

    def target_path(self, root: str | Path) -> Path:
        base = set_aside_dir(root) if self.action == SET_ASIDE else Path(root)
        return base / self.target

    def describe(self) -> str:
        """``"Moved a.jpg from cat to dog"`` / ``"Set aside a.jpg (was in cat)"``."""
        name = Path(self.source).name
        if self.action == SET_ASIDE:
            return f"Set aside {name} (was in {self.from_category})"
        return f"Moved {name} from {self.from_category} to {self.to_category}"

    def to_line(self) -> dict:
        out = asdict(self)
        out.pop("undone")
        return out


# -- where ----------------------------------------------------------------------------------------

def _root(root: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(root))))


def fixes_log_path(root: str | Path) -> Path:
    """``<data>-fixes.jsonl`` beside the data folder."""
    r = _root(root)
    return r.parent / f"{r.name}{LOG_SUFFIX}"


def set_aside_dir(root: str | Path) -> Path:
    """``<data>-set-aside/`` beside the data folder."""
    r = _root(root)
    return r.parent / f"{r.name}{SET_ASIDE_SUFFIX}"


def _within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False


# -- refusals -------------------------------------------------------------------------------------

def _sample_reason(root: Path) -> str | None:
    from tl_core.data.sample import sample_dir

    sample = os.path.realpath(sample_dir())
    if _within(os.path.realpath(root), sample) or _within(sample, os.path.realpath(root)):
        return ("These are the sample pictures that come with Transfer Lab: they are not changed, so that the "
                "sample stays the same for everyone. To fix labels, copy the sample folder to a folder of your own "
                f"({short_path(sample)}), choose the copy on the Data page and train on it.")
    return None


def _writable_reason(folder: Path) -> str | None:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        return _read_only_message(folder)
    return None


def _read_only_message(folder: Path) -> str:
    return (f"Transfer Lab cannot change the folder '{short_path(folder)}': it is read-only for you. Copy the "
            "pictures to a folder of your own (for example in your home folder), choose the copy on the Data page "
            "and fix them there.")


def can_fix(root: str | Path) -> str | None:
    """Why pictures of ``root`` cannot be moved or set aside (plain words), or None when they can:
    the bundled sample, a folder that is gone, or one (or the folder beside it) you may not write."""
    r = _root(root)
    reason = _sample_reason(r)
    if reason:
        return reason
    if not r.is_dir():
        return f"The data folder '{short_path(r)}' is not there any more. Choose it again on the Data page."
    return _writable_reason(r) or _writable_reason(r.parent)


def _refuse_unless_fixable(root: Path) -> None:
    reason = can_fix(root)
    if reason:
        raise FixError(reason)


# -- which picture, which category ------------------------------------------------------------------

def _record(scan: DatasetScan, root: Path, picture: str | Path) -> ImageRecord:
    """The scan's record for ``picture`` (absolute, or relative to the data folder), refusing
    anything that is not one of the data folder's own pictures."""
    given = Path(os.path.expanduser(os.fspath(picture)))
    path = given if given.is_absolute() else root / given
    shown = short_path(os.fspath(picture))
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not _within(real, real_root) or real == real_root:
        raise FixError(f"'{shown}' is not inside the data folder '{short_path(root)}': only its own pictures can be "
                       "moved or set aside.")
    if not os.path.lexists(path):
        raise FixError(f"The picture '{shown}' is not there any more (was it moved or deleted outside Transfer "
                       "Lab?). Check the data folder on the Data page.")
    for r in scan.records:
        if os.path.realpath(r.path) == real:
            return r
    raise FixError(f"'{shown}' is not one of the pictures of this data folder (only pictures inside a category "
                   "folder can be moved or set aside).")


def category_of(record: ImageRecord) -> tuple[int, str]:
    """(index of the category folder in the record's relative path, the folder's name on disk)."""
    parts = record.rel_path.split("/")
    i = 1 if record.split is not None else 0
    return i, parts[i]


def _valid_new_category(name: str) -> str:
    clean = unicodedata.normalize("NFC", (name or "").strip())
    if (not clean or clean in (".", "..") or "/" in clean or "\\" in clean or "\x00" in clean
            or is_ignored_name(clean) or len(clean.encode()) > 200):
        raise FixError(f"'{name}' cannot be a category name: use a plain folder name (letters, digits, spaces; no "
                       "/ or \\, not starting with a dot).")
    return clean


def _folder_name_for(scan: DatasetScan, record: ImageRecord, category: str, create: bool) -> str:
    """The on-disk folder name for ``category`` next to the record's category folder (the existing
    folder's own spelling; a new category only when ``create``)."""
    wanted = unicodedata.normalize("NFC", category)
    if wanted in scan.classes:
        i, _ = category_of(record)
        siblings = {r.rel_path.split("/")[i]: r.label for r in scan.records if r.split == record.split}
        on_disk = next((name for name, label in siblings.items() if label == wanted), None)
        return on_disk or wanted
    if not create:
        raise FixError(f"There is no category '{category}' in this data folder (it has {', '.join(scan.classes)}). "
                       "Choose one of those, or make it a new category.")
    return _valid_new_category(category)


def _free_path(path: Path) -> Path:
    """``path``, or ``name (2).ext``, ``name (3).ext``... when something is already there."""
    if not os.path.lexists(path):
        return path
    for n in range(2, 10_000):
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise FixError(f"Too many pictures called '{path.name}' in '{short_path(path.parent)}'.")


# -- the log --------------------------------------------------------------------------------------

def _read_lines(root: Path) -> list[dict]:
    path = fixes_log_path(root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as err:
        raise FixError(f"The list of fixes '{short_path(path)}' cannot be read ({err.strerror or err}).") from None
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line damaged by hand does not hide the others
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item.get("action") in (MOVE, SET_ASIDE, UNDO):
            out.append(item)
    return out


def _write_lines(root: Path, lines: list[dict]) -> None:
    with atomic_path(fixes_log_path(root)) as tmp:
        tmp.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines), encoding="utf-8")


def plain_relative(text: object) -> bool:
    """A place inside the data folder (or its set-aside folder) as the log writes it: relative, no ``..``,
    nothing a file system reads differently. A log line naming anything else is ignored: the log may come
    from a project file, and undo must never move a file from or to elsewhere on the computer."""
    from tl_core.data.uploads import sanitize_relpath

    rel = sanitize_relpath(text) if isinstance(text, str) else None
    return rel is not None and rel.as_posix() == text


def safe_line(line: dict) -> bool:
    """A move or set-aside line whose places all stay inside the data folder (see :func:`plain_relative`)."""
    if line.get("action") == UNDO:
        return True
    folder = line.get("created_folder")
    return (plain_relative(line.get("source")) and plain_relative(line.get("target"))
            and (folder in (None, "") or plain_relative(folder)))


def _fixes_from(lines: list[dict]) -> list[Fix]:
    undone = {line.get("undoes") for line in lines if line["action"] == UNDO}
    fixes = []
    for line in lines:
        if line["action"] == UNDO or not safe_line(line):
            continue
        try:
            fixes.append(Fix(id=line["id"], action=line["action"], source=str(line["source"]),
                             target=str(line["target"]), from_category=str(line.get("from_category", "")),
                             to_category=line.get("to_category"), at=float(line.get("at", 0.0)),
                             created_folder=line.get("created_folder"), undone=line["id"] in undone))
        except (KeyError, TypeError, ValueError):
            continue
    return fixes


def list_fixes(root: str | Path, include_undone: bool = False) -> list[Fix]:
    """The fixes made on this data folder, oldest first (undone ones only when asked)."""
    fixes = _fixes_from(_read_lines(_root(root)))
    return fixes if include_undone else [f for f in fixes if not f.undone]


# -- the steps ------------------------------------------------------------------------------------

def _rename(src: Path, dst: Path) -> None:
    """Move one file without ever replacing another; across disks it is copied, then removed from
    where it was (so it exists in one place or both, never in none)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        raise FixError(f"'{short_path(dst)}' already exists: nothing was moved.")
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        shutil.move(os.fspath(src), os.fspath(dst))


def _do(root: Path, src: Path, dst: Path, fix: Fix) -> Fix:
    """Move, then log; if the log cannot be written, move back (every step is logged or not done)."""
    lines = _read_lines(root)
    try:
        _rename(src, dst)
    except PermissionError:
        raise FixError(_read_only_message(src.parent)) from None
    except FixError:
        raise
    except OSError as err:
        raise FixError(f"'{short_path(src)}' could not be moved: {err.strerror or err}.") from None
    try:
        _write_lines(root, lines + [fix.to_line()])
    except OSError as err:
        os.rename(dst, src)
        _remove_made_folder(root, fix)
        raise FixError(f"The fix was not made: its log '{short_path(fixes_log_path(root))}' could not be written "
                       f"({err.strerror or err}).") from None
    return fix


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


def move_picture(root: str | Path, picture: str | Path, category: str, *, create: bool = False) -> Fix:
    """Move ``picture`` (a picture of the data folder ``root``) into ``category``; ``create`` makes
    a new category folder when there is none by that name. Returns the logged :class:`Fix`."""
    r = _root(root)
    _refuse_unless_fixable(r)
    with _lock:
        scan = scan_folder(r)
        record = _record(scan, r, picture)
        folder = _folder_name_for(scan, record, category, create)
        if unicodedata.normalize("NFC", folder) == record.label:
            raise FixError(f"'{Path(record.rel_path).name}' is already in '{record.label}'.")
        parts = record.rel_path.split("/")
        i, _ = category_of(record)
        parts[i] = folder
        created = None
        category_dir = r.joinpath(*parts[:i + 1])
        if not category_dir.exists():
            created = "/".join(parts[:i + 1])
        dst = _free_path(r.joinpath(*parts))
        fix = Fix(id=_new_id(), action=MOVE, source=record.rel_path, target=dst.relative_to(r).as_posix(),
                  from_category=record.label, to_category=unicodedata.normalize("NFC", folder), at=time.time(),
                  created_folder=created)
        return _do(r, Path(record.path), dst, fix)


def set_aside(root: str | Path, picture: str | Path) -> Fix:
    """Move ``picture`` out of the data folder into ``<data>-set-aside/``, under its own relative
    path, so that training no longer sees it (and undo can put it back)."""
    r = _root(root)
    _refuse_unless_fixable(r)
    with _lock:
        scan = scan_folder(r, min_classes=1)   # a folder still being filled (the camera's) may have one category
        record = _record(scan, r, picture)
        aside = set_aside_dir(r)
        dst = _free_path(aside / record.rel_path)
        fix = Fix(id=_new_id(), action=SET_ASIDE, source=record.rel_path, target=dst.relative_to(aside).as_posix(),
                  from_category=record.label, to_category=None, at=time.time())
        return _do(r, Path(record.path), dst, fix)


def _remove_made_folder(root: Path, fix: Fix) -> None:
    """The category folder a move created, once empty again (only ever one Transfer Lab made)."""
    if not fix.created_folder:
        return
    folder = root / fix.created_folder
    try:
        folder.rmdir()   # refuses a folder that is not empty
    except OSError:
        pass


def undo(root: str | Path, fix_id: str | None = None) -> Fix:
    """Put a picture back where it was before fix ``fix_id`` (the last fix not yet undone when
    None), and log the undo. Refused, with the reason, when the picture is no longer where the fix
    put it or its old place is taken."""
    r = _root(root)
    _refuse_unless_fixable(r)
    with _lock:
        lines = _read_lines(r)
        active = [f for f in _fixes_from(lines) if not f.undone]
        if not active:
            raise FixError("There is no fix to undo.")
        fix = active[-1] if fix_id is None else next((f for f in active if f.id == fix_id), None)
        if fix is None:
            raise FixError("That fix was already undone (or is not in this data folder's list of fixes).")
        now, back = fix.target_path(r), fix.source_path(r)
        if not os.path.lexists(now):
            raise FixError(f"'{Path(fix.target).name}' is no longer at '{short_path(now)}' (moved or deleted outside "
                           "Transfer Lab?), so it cannot be put back.")
        if os.path.lexists(back):
            raise FixError(f"Cannot put '{Path(fix.source).name}' back: another file is now at "
                           f"'{short_path(back)}'. Move that one away first.")
        try:
            _rename(now, back)
        except PermissionError:
            raise FixError(_read_only_message(now.parent)) from None
        except OSError as err:
            raise FixError(f"'{short_path(now)}' could not be put back: {err.strerror or err}.") from None
        try:
            _write_lines(r, lines + [{"id": _new_id(), "action": UNDO, "undoes": fix.id, "at": time.time()}])
        except OSError as err:
            os.rename(back, now)
            raise FixError(f"The undo was not made: the log '{short_path(fixes_log_path(r))}' could not be written "
                           f"({err.strerror or err}).") from None
        if fix.action == MOVE:
            _remove_made_folder(r, fix)
        fix.undone = True
        return fix


def undo_last(root: str | Path) -> Fix:
    """Undo the most recent fix that is not undone yet."""
    return undo(root, None)
