"""Turn a folder of pictures into a list of labelled images, without opening any of them.

The convention every beginner tutorial uses is "one subfolder per category": the name of
the first folder level under the chosen root is the label, and deeper folders are just
organisation (``cats/2021/beach/1.jpg`` is a cat). Users who already split their data can
use ``train/<class>/`` and ``val/<class>/`` (``validation``/``valid``, optional ``test``);
that split is honoured instead of making a new one.

Scanning only looks at names, so it is instant even on large folders; whether each file
really decodes is checked later by :mod:`tl_core.data.checks`. Things that make the folder
unusable raise :class:`~tl_core.errors.DataError` with a fix; everything else becomes a
:class:`Problem` so the app can list it and training can still go ahead.
"""
from __future__ import annotations

import errno
import os
import stat
import unicodedata
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tl_core.errors import DataError
from tl_core.files import short_path
from tl_core.data.images import HEIC_EXTENSIONS, KNOWN_UNSUPPORTED_IMAGE_EXTENSIONS, SUPPORTED_EXTENSIONS

__all__ = [
    "ImageRecord",
    "Problem",
    "DatasetScan",
    "scan_folder",
    "IMAGE_EXTENSIONS",
    "is_ignored_name",
    "MIN_IMAGES_PER_CLASS",
    "RECOMMENDED_IMAGES_PER_CLASS",
]

#: Extensions treated as pictures. HEIC is always included so that, without pillow-heif,
#: those photos are reported with the install command instead of silently vanishing;
#: ``.jfif``/``.jpe`` are how Windows sometimes names plain JPEGs.
IMAGE_EXTENSIONS: frozenset[str] = SUPPORTED_EXTENSIONS | HEIC_EXTENSIONS | frozenset({".jfif", ".jpe"})

#: Below this many pictures a category is flagged as too small to learn well.
MIN_IMAGES_PER_CLASS = 5
#: What we tell users to aim for.
RECOMMENDED_IMAGES_PER_CLASS = 20

# Names created by operating systems, zip tools and notebooks, never by the user on purpose.
_IGNORED_NAMES = frozenset({
    "__macosx", "thumbs.db", "desktop.ini", ".ipynb_checkpoints", "$recycle.bin",
    "system volume information", "@eadir", "ehthumbs.db", "ehthumbs_vista.db",
})

_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}

# When more than this many files of one kind sit in one folder, report them as one line.
_GROUP_AFTER = 5


def is_ignored_name(name: str) -> bool:
    """Hidden files (``.DS_Store``, ``._photo.jpg``), ``__MACOSX``, ``Thumbs.db`` and friends."""
    return name.startswith(".") or name.startswith("~$") or name.lower() in _IGNORED_NAMES


@dataclass
class ImageRecord:
    """One picture file and the category it belongs to."""

    path: str  # absolute
    label: str  # the class name (first folder level under the root, NFC-normalised)
    rel_path: str  # posix, relative to the root; stable across machines, used in reports
    split: str | None = None  # "train" / "val" / "test" when the user's folders said so


@dataclass
class Problem:
    """Something the user should know about, in plain words, with what to do about it.

    ``severity``: ``"error"`` (results will be wrong or training impossible),
    ``"warning"`` (results will suffer) or ``"info"`` (harmless, just so nothing is silent).
    """

    kind: str
    path: str
    message: str
    fix: str = ""
    severity: str = "warning"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DatasetScan:
    """What :func:`scan_folder` found: categories, picture files and the problems seen."""

    root: str
    classes: list[str]
    records: list[ImageRecord]
    problems: list[Problem] = field(default_factory=list)
    layout: str = "classes"  # "classes" (one folder per class) or "train_val" (user split)

    def counts(self) -> dict[str, int]:
        """Number of picture files per class, in class order."""
        out = {c: 0 for c in self.classes}
        for r in self.records:
            out[r.label] = out.get(r.label, 0) + 1
        return out


def _nfc(name: str) -> str:
    # macOS stores "été" decomposed (NFD); the same folder copied from Windows is NFC.
    return unicodedata.normalize("NFC", name)


def _folder_trouble(err: OSError) -> tuple[str, str]:
    """Why a folder could not be listed, and what to do, in a few words (the system's own
    reason alone, "File name too long", does not say that moving the folder fixes it)."""
    if err.errno == errno.ENAMETOOLONG:
        return ("its path is too long for this computer",
                "Move the pictures into a folder with a shorter path (fewer or shorter folder names).")
    if err.errno == errno.ELOOP:
        return ("it is a shortcut that leads back to itself", "Delete the shortcut or replace it with the real folder.")
    if err.errno in (errno.EACCES, errno.EPERM):
        return ("you are not allowed to open it",
                "Give yourself permission to read it, or copy the pictures to a folder you own.")
    return (err.strerror or str(err), "Check that the disk is still connected, then scan the folder again.")


def _is_within(path: str, root_real: str) -> bool:
    try:
        return os.path.commonpath([path, root_real]) == root_real
    except ValueError:  # different drives on Windows
        return False


class _Walker:
    """Walks folders under the root, skipping junk, refusing links that leave the root and
    never looping on links that point back up the tree."""

    def __init__(self, root: Path, problems: list[Problem]):
        self.root = root
        self.root_real = os.path.realpath(root)
        self.problems = problems
        self._reported: set[str] = set()
        self.unreadable: set[str] = set()   # folders that could not be listed (already reported)

    def _note(self, problem: Problem) -> None:
        if problem.path not in self._reported:  # a folder may be listed more than once
            self._reported.add(problem.path)
            self.problems.append(problem)

    def entries(self, folder: Path) -> list[tuple[str, Path, bool]]:
        """``(name, path, is_dir)`` for the usable entries of ``folder``, sorted by name."""
        out: list[tuple[str, Path, bool]] = []
        try:
            with os.scandir(folder) as it:
                raw = sorted(it, key=lambda e: e.name)
        except OSError as err:
            reason, fix = _folder_trouble(err)
            self.unreadable.add(str(folder))
            message = f"Could not open the folder '{short_path(self._rel(folder))}': {reason}."
            self._note(Problem("unreadable_folder", str(folder), message, fix, "warning"))
            return out
        for entry in raw:
            if is_ignored_name(entry.name):
                continue
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if not _is_within(target, self.root_real):
                        self._note(Problem(
                            "outside_link", str(path),
                            f"'{self._rel(path)}' is a shortcut to something outside the chosen folder, so it was not followed.",
                            "Copy the real pictures into the folder instead of linking to them.", "info"))
                        continue
                    if target == self.root_real:
                        continue  # a link back to the chosen folder itself would list everything twice
                    broken = self._broken_link(path)
                    if broken is not None:
                        self._note(broken)
                        continue
                    is_dir = os.path.isdir(target)
                    if not is_dir and not os.path.isfile(target):
                        continue
                else:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if not is_dir and not entry.is_file(follow_symlinks=False):
                        continue  # sockets, pipes, devices
            except OSError:
                continue
            out.append((entry.name, path, is_dir))
        return out

    def _broken_link(self, path: Path) -> Problem | None:
        """A note for a shortcut that leads nowhere (its target is gone, or it loops back on
        itself through other shortcuts), or None when it leads somewhere."""
        try:
            os.stat(path)
            return None
        except OSError as err:
            rel = short_path(self._rel(path))
            if err.errno == errno.ELOOP:
                message = (f"'{rel}' is a shortcut that leads back to itself (through other shortcuts), so it "
                           "leads to no picture.")
            elif err.errno == errno.ENAMETOOLONG:
                message = f"'{rel}' is a shortcut whose target's path is too long for this computer."
            elif err.errno in (errno.ENOENT, errno.ENOTDIR):
                message = f"'{rel}' is a shortcut to a file that no longer exists."
            else:
                message = f"'{rel}' is a shortcut that cannot be followed ({err.strerror or err})."
        return Problem("broken_link", str(path), message, "Delete the shortcut or copy the real file in.", "info")

    def files(self, folder: Path) -> list[Path]:
        """All usable files below ``folder`` (recursively), in a stable order.

        Each real folder is entered once per call, so a link pointing back up the tree
        (``cats/again -> ..``) cannot loop forever or pull in the whole root.
        """
        visited = {self.root_real, os.path.realpath(folder)}
        found: list[Path] = []
        stack = [folder]
        while stack:
            current = stack.pop()
            subdirs = []
            for _name, path, is_dir in self.entries(current):
                if is_dir:
                    real = os.path.realpath(path)
                    if real in visited:
                        continue
                    visited.add(real)
                    subdirs.append(path)
                else:
                    found.append(path)
            stack.extend(reversed(subdirs))
        return found

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _kind_of_file(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in KNOWN_UNSUPPORTED_IMAGE_EXTENSIONS:
        return "unsupported_image"
    return "other"


class _Collector:
    """Collects per-file notes and merges them into one line per folder when there are many."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], list[Path]] = defaultdict(list)

    def add(self, kind: str, folder_label: str, path: Path) -> None:
        self.items[(kind, folder_label)].append(path)

    def problems(self, root: Path) -> list[Problem]:
        out: list[Problem] = []
        for (kind, where), paths in self.items.items():
            rels = [p.relative_to(root).as_posix() for p in paths]
            if kind == "loose_file":
                msg_one = "'{r}' is directly in {w}, not inside a category folder, so it has no category and is left out."
                fix = "Move it into the folder of the category it shows (or delete it)."
                severity = "warning"
            elif kind == "unsupported_image":
                msg_one = "'{r}' is a picture format this app cannot read, so it is left out."
                fix = "Open it in an image editor and save it as JPEG or PNG."
                severity = "warning"
            else:  # not_image
                msg_one = "'{r}' is not a picture, so it is ignored."
                fix = "Nothing to do, unless it is a picture with the wrong extension: then rename it to .jpg or .png."
                severity = "info"
            if len(paths) <= _GROUP_AFTER:
                out.extend(Problem(kind, str(p), msg_one.format(r=r, w=where), fix, severity) for p, r in zip(paths, rels))
            else:
                examples = ", ".join(f"'{r}'" for r in rels[:3])
                if kind == "loose_file":
                    msg = f"{len(paths)} pictures are directly in {where}, not inside a category folder (e.g. {examples}); they are left out."
                elif kind == "unsupported_image":
                    msg = f"{len(paths)} files in {where} are in picture formats this app cannot read (e.g. {examples}); they are left out."
                else:
                    msg = f"{len(paths)} files in {where} are not pictures (e.g. {examples}); they are ignored."
                out.append(Problem(kind, str(paths[0].parent), msg, fix, severity))
        return out


def _has_subfolder(walker: _Walker, folder: Path) -> bool:
    return any(is_dir for _n, _p, is_dir in walker.entries(folder))


def _detect_split_dirs(walker: _Walker, top: list[tuple[str, Path, bool]]) -> dict[str, list[Path]] | None:
    """Return ``{"train": [...], "val": [...], ...}`` when the root looks like a user split.

    Needs a ``train`` folder plus ``val``/``validation``/``valid`` or ``test``, and the train
    folder must contain class subfolders (so classes literally named "train" and "test"
    that hold pictures directly are still read as classes).
    """
    splits: dict[str, list[Path]] = defaultdict(list)
    for name, path, is_dir in top:
        alias = _SPLIT_ALIASES.get(name.lower())
        if is_dir and alias:
            splits[alias].append(path)
    if "train" not in splits or not ({"val", "test"} & set(splits)):
        return None
    if not all(_has_subfolder(walker, p) for p in splits["train"]):
        return None
    return dict(splits)


def _check_root(root_path: Path, what: str) -> None:
    """A :class:`DataError` naming the problem when ``root_path`` is not a folder that can be listed."""
    shown = short_path(root_path)
    try:
        st = os.stat(root_path)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            raise DataError(
                f"The {what} '{shown}' does not exist. Check the path for typos, or choose the folder again.") from None
        reason, fix = _folder_trouble(err)
        raise DataError(f"The {what} '{shown}' cannot be used: {reason}. {fix}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(
            f"'{shown}' is a file, not a folder. Choose the folder that holds one subfolder per category.")
    try:
        with os.scandir(root_path):
            pass
    except OSError as err:
        reason, fix = _folder_trouble(err)
        raise DataError(f"The {what} '{shown}' cannot be read: {reason}. {fix}") from None


def scan_folder(root: str | Path, *, min_classes: int = 2, what: str = "folder") -> DatasetScan:
    """List the labelled pictures under ``root`` (see the module docstring for the layout).

    Raises :class:`DataError` when the folder cannot be used at all: missing, not a folder,
    unreadable, no category folders, no pictures, or fewer than ``min_classes`` categories (a
    separate test folder may hold only some of the categories: ``min_classes=1``). ``what``
    names the folder in those messages ("test folder").
    """
    root_path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    _check_root(root_path, what)

    problems: list[Problem] = []
    walker = _Walker(root_path, problems)
    notes = _Collector()
    top = walker.entries(root_path)

    # (class folder path, split) pairs, plus where loose files live.
    class_dirs: list[tuple[Path, str | None]] = []
    loose_roots: list[tuple[Path, str]] = [(root_path, "the main folder")]
    splits = _detect_split_dirs(walker, top)
    layout = "classes"
    if splits is not None:
        layout = "train_val"
        split_paths = {p for paths in splits.values() for p in paths}
        for name, path, is_dir in top:
            if is_dir and path not in split_paths:
                problems.append(Problem(
                    "extra_folder", str(path),
                    f"The folder '{name}' is next to train/ and val/, so it is not part of any split and is left out.",
                    f"Move its category folders into train/ (or val/), or delete '{name}'.", "warning"))
        for split, paths in sorted(splits.items()):
            for split_dir in paths:
                loose_roots.append((split_dir, f"'{split_dir.name}/'"))
                class_dirs.extend((p, split) for _n, p, d in walker.entries(split_dir) if d)
    else:
        class_dirs = [(p, None) for _n, p, d in top if d]

    for folder, where in loose_roots:
        for _n, path, is_dir in walker.entries(folder):
            if is_dir:
                continue
            kind = _kind_of_file(path)
            if kind == "image":
                notes.add("loose_file", where, path)
            elif kind == "unsupported_image":
                notes.add("unsupported_image", where, path)
            elif folder != root_path:  # a README next to the class folders is normal
                notes.add("not_image", where, path)

    if not class_dirs:
        loose = [p for (k, _w), ps in notes.items.items() if k == "loose_file" for p in ps]
        if loose:
            raise DataError(
                f"no class folders: the {len(loose)} pictures are directly in '{short_path(root_path.name)}'. "
                "Put images in one subfolder per category, e.g. cats/ and dogs/, then choose the folder again.")
        raise DataError(
            f"no class folders: put images in one subfolder per category, e.g. cats/ and dogs/ "
            f"('{short_path(root_path)}' has no subfolders with pictures).")

    records: list[ImageRecord] = []
    folders_of: dict[str, list[Path]] = defaultdict(list)  # label -> class folders (all splits)
    for folder, split in class_dirs:
        label = _nfc(folder.name)
        folders_of[label].append(folder)
        for path in walker.files(folder):
            kind = _kind_of_file(path)
            if kind == "image":
                records.append(ImageRecord(
                    path=str(path), label=label, rel_path=path.relative_to(root_path).as_posix(), split=split))
            elif kind == "unsupported_image":
                notes.add("unsupported_image", f"'{label}'", path)
            else:
                notes.add("not_image", f"'{label}'", path)
    problems.extend(notes.problems(root_path))

    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.label] += 1
    all_labels = sorted(folders_of)
    empty = [c for c in all_labels if counts[c] == 0]
    classes = [c for c in all_labels if counts[c] > 0]

    if not records:
        unsupported = sum(1 for p in problems if p.kind == "unsupported_image")
        extra = (f" Found {unsupported} pictures in formats this app cannot read; save them as JPEG or PNG."
                 if unsupported else "")
        raise DataError(
            f"No pictures found in the category folders of '{short_path(root_path)}' (looked for "
            f"{', '.join(sorted(e.lstrip('.') for e in SUPPORTED_EXTENSIONS))} files).{extra} "
            "Put JPEG or PNG pictures into the category folders.")
    if len(classes) < min_classes:
        only = f"only '{classes[0]}' has pictures" if classes else "no category has pictures"
        hint = ""
        if empty:
            hint = f" The folder(s) {', '.join(repr(c) for c in empty)} are empty."
        elif len(all_labels) == 1:
            sub = [n for n, _p, d in walker.entries(folders_of[all_labels[0]][0]) if d]
            if len(sub) >= 2:
                hint = (f" '{all_labels[0]}' itself contains the folders {', '.join(repr(s) for s in sub[:5])}: "
                        f"did you mean to choose '{folders_of[all_labels[0]][0]}' instead?")
        raise DataError(
            f"need at least 2 categories to learn the difference, but {only}.{hint} "
            "Add a second folder (e.g. 'dogs' next to 'cats') with pictures of the other category.")

    for c in empty:
        for folder in folders_of[c]:
            if str(folder) in walker.unreadable:
                continue  # already said: the folder could not be opened (not that it is empty)
            problems.append(Problem(
                "empty_class", str(folder),
                f"The category folder '{c}' has no pictures, so the category is left out.",
                f"Add pictures of '{c}' to it, or delete the folder if you do not need that category.", "warning"))
    for c in classes:
        n = counts[c]
        folder = str(folders_of[c][0])
        if n < 2:
            problems.append(Problem(
                "too_few_to_split", folder,
                f"'{c}' has only 1 picture: the model cannot learn it and it cannot be checked on pictures it has not seen.",
                f"Add more pictures of '{c}' (at least {MIN_IMAGES_PER_CLASS}, ideally {RECOMMENDED_IMAGES_PER_CLASS} or more).",
                "error"))
        elif n < MIN_IMAGES_PER_CLASS:
            problems.append(Problem(
                "too_few_images", folder,
                f"'{c}' has only {n} pictures, which is very few to learn from.",
                f"Add more pictures of '{c}': {RECOMMENDED_IMAGES_PER_CLASS} or more per category gives much better results.",
                "warning"))
    if layout == "train_val":
        for c in classes:
            if not any(r.label == c and r.split == "train" for r in records):
                problems.append(Problem(
                    "missing_in_train", str(folders_of[c][0]),
                    f"'{c}' has pictures in val/ or test/ but none in train/, so the model cannot learn it.",
                    f"Move some pictures of '{c}' into train/{c}/.", "error"))

    by_fold: dict[str, list[str]] = defaultdict(list)
    for c in classes:
        by_fold[" ".join(c.casefold().replace("_", " ").replace("-", " ").split())].append(c)
    for names in by_fold.values():
        if len(names) > 1:
            problems.append(Problem(
                "similar_class_names", str(folders_of[names[0]][0]),
                f"The categories {', '.join(repr(n) for n in names)} differ only in capitals or spacing, so they count as different categories.",
                "If they are the same category, move all pictures into one folder.", "warning"))

    order = {c: i for i, c in enumerate(classes)}
    records.sort(key=lambda r: (order[r.label], r.rel_path))
    return DatasetScan(root=str(root_path), classes=classes, records=records, problems=problems, layout=layout)
