"""A whole project as one file: the pictures, the runs trained on them and the user's choices.

A project file is a plain zip with the extension ``.tlproj``::

    project.json                    the manifest (below)
    choices.json                    the user's choices, a plain dict (optional)
    data/<category>/<picture>       every picture the scanner accepts, in the data folder's own
    data/train/<category>/...       layout (a folder with its own train/ and val/ keeps them)
    runs/<run-id>/config.json       each run folder: config.json, status.json, metrics.jsonl,
                  ...               model.safetensors, labels.json, preprocessing.json,
                                    summary.json, user.json, eval_*.json, error.log, the "none of
                                    these" calibration and label_issues.json (when present)
    set-aside/<category>/<picture>  the pictures the user set aside (``<data>-set-aside/`` beside the
                                    data folder, :mod:`tl_core.data.fixes`), so undo still works
    fixes.jsonl                     the log of moves and set-asides (``<data>-fixes.jsonl``)

``.tlproj`` rather than ``.zip``: the Data page unpacks a dropped ``.zip`` as a folder of pictures,
and a project is not that; its own extension tells the app, the file manager and the user which
is which, while any unzip tool can still look inside.

The manifest (``project.json``): ``format`` ("transfer-lab-project"), ``format_version``,
``created`` (UTC, ISO 8601), ``transfer_lab_version``, ``data`` (``name``, ``layout``,
``classes``, ``counts``, ``images``, ``original_roots``, ``left_out``, ``set_aside``, ``fixes``), ``runs`` (``id``,
``original_path``, ``model``, ``state``, ``files``), ``choices`` (whether ``choices.json`` is
there), ``members`` (``{name: {"size", "sha256"}}`` for every member but the manifest) and
``total_bytes``.

No local path travels: in the runs' files and the choices, the data folder is written as
:data:`TRAVEL_DATA` and each run as ``TRAVEL_RUNS/<id>`` (``original_roots`` and ``original_path``
in the manifest), and ``config.json`` keeps only the last part of other paths, as in a bundle. Files
made before this carry the real paths there; they open the same way.

Opening treats the file as untrusted input, exactly like an uploaded zip: it is unpacked by
:func:`tl_core.data.uploads.extract_zip` (no path traversal, absolute paths, links or nested
archives; entry, size and compression-ratio caps; bytes counted as written; a staging folder, so
a refused file leaves nothing behind), and every member must then match the manifest's size and
sha256, with nothing unlisted. Only then are the runs re-pointed to the unpacked pictures and the
folder moved into place under a name that did not exist.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from tl_core.data.scan import scan_folder
from tl_core.data.uploads import ArchiveWords, extract_zip, name_key, sanitize_relpath, unpacked_name
from tl_core.errors import ConfigError, DataError, ExportError, RunError, TransferLabError, UploadError
from tl_core.files import atomic_path, size_text, write_json_atomic
from tl_core.results.export import shareable_config
from tl_core.runs import (ACTIVE_STATES, CONFIG_FILE, LABELS_FILE, METRICS_FILE, PREPROCESSING_FILE, STATUS_FILE,
                          SUMMARY_FILE, USER_FILE, WEIGHTS_FILE, RunFolder, default_runs_dir)
from tl_core.results.evaluate import EVAL_PREFIX
from tl_core.data.fixes import LOG_SUFFIX, SET_ASIDE_SUFFIX, fixes_log_path, safe_line, set_aside_dir
from tl_core.data.scan import is_ignored_name
from tl_core.results.mistakes import ISSUES_FILE
from tl_core.results.novelty import NOVELTY_FILE, NOVELTY_TENSORS

__all__ = ["FORMAT", "FORMAT_VERSION", "PROJECT_SUFFIX", "MANIFEST_FILE", "CHOICES_FILE", "OpenedProject",
           "save_project", "open_project", "read_manifest", "runs_of_data", "set_aside_pictures"]

FORMAT = "transfer-lab-project"
FORMAT_VERSION = 2   # 2: set-aside pictures, the fix log, label_issues.json may travel (written only when they do)
PROJECT_SUFFIX = ".tlproj"
MANIFEST_FILE = "project.json"
CHOICES_FILE = "choices.json"
DATA_DIR = "data"
RUNS_DIR = "runs"
SET_ASIDE_DIR = "set-aside"
FIXES_FILE = "fixes.jsonl"
ERROR_LOG = "error.log"
# a run's calibration for "none of these" and its likely label mistakes are made again on first use when
# missing, but that takes a pass over the pictures: they travel too
RUN_FILES = (CONFIG_FILE, STATUS_FILE, METRICS_FILE, WEIGHTS_FILE, LABELS_FILE, PREPROCESSING_FILE, SUMMARY_FILE,
             USER_FILE, ERROR_LOG, NOVELTY_FILE, NOVELTY_TENSORS, ISSUES_FILE)

# Caps for opening: far above any real project, low enough to stop a hostile file.
MAX_ENTRIES = 200_000
MAX_TOTAL_BYTES = 64 * 1024**3
MAX_RATIO = 200.0
MAX_MANIFEST_BYTES = 64 * 1024**2

_CHUNK = 1 << 20
# Stored as they are: pictures and weights do not compress, and a stored member can never look
# like a zip bomb to the ratio check however plain a picture is.
_DEFLATED_SUFFIXES = frozenset({".json", ".jsonl", ".log", ".txt"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_REOPEN = ("Copy the project file again from the computer where it was saved (or save the project there "
           "again), then open the new copy.")
PROJECT_WORDS = ArchiveWords(
    name="project file",
    remake=_REOPEN,
    too_many="A project saved by Transfer Lab is never that large, so it was not opened.",
    too_big="Save the project with fewer pictures or runs, or open it on a computer with more disk space.",
    bomb="A saved project does not compress like that, so it was not opened.",
    cancelled="opening the project was cancelled",
    files="the project's files",
)

ProgressFn = Callable[[int, int], None]


@dataclass
class OpenedProject:
    """Where :func:`open_project` put everything.

    ``folder`` is the new project folder; ``data_root`` the pictures in it (``folder/<their folder name>``);
    ``run_dirs`` the run folders (``folder/runs/<id>``), each re-pointed to ``data_root`` so
    evaluate, predict, export and redraw work there; ``choices`` the user's choices as saved, with
    paths to the old data folder and runs changed to the new ones (None when none were saved);
    ``manifest`` the file's ``project.json``.
    """

    folder: Path
    data_root: Path
    run_dirs: list[Path] = field(default_factory=list)
    choices: dict | None = None
    manifest: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = self.manifest.get("data") or {}
        return {"path": str(self.folder), "data_root": str(self.data_root),
                "runs": [str(p) for p in self.run_dirs], "images": data.get("images"),
                "classes": data.get("classes"), "bytes": self.manifest.get("total_bytes"),
                "choices": self.choices is not None,
                # counted from the checked list of files: the manifest's own number is only words
                "set_aside": sum(isinstance(n, str) and n.startswith(f"{SET_ASIDE_DIR}/")
                                 for n in self.manifest.get("members") or {})}


# -- helpers -------------------------------------------------------------------------------------



def _disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


def _abs(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _under(path: str, roots: Iterable[str]) -> bool:
    for root in roots:
        try:
            if os.path.commonpath([path, root]) == root:
                return True
        except ValueError:
            continue
    return False


def _root_forms(path: Path) -> list[str]:
    return list(dict.fromkeys([str(path), os.path.realpath(path)]))


def _uses_data(run: RunFolder, data_forms: list[str]) -> bool:
    """Whether ``run`` was trained on the data folder: its config names it (a relative name is
    read from here), or, failing that, its validation pictures all lie in it."""
    try:
        root = run.config().data.root
    except TransferLabError as err:
        raise RunError(f"The run '{run.path}' cannot be read ({err}), so it cannot go into a project.") from None
    if os.path.realpath(_abs(root)) in {os.path.realpath(f) for f in data_forms}:
        return True
    try:
        records = run.summary().get("val_records") or []
        paths = [r["path"] for r in records]
    except (RunError, TypeError, KeyError, AttributeError):
        return False
    return bool(paths) and all(isinstance(p, str) and os.path.isabs(p) and _under(p, data_forms) for p in paths)


def runs_of_data(data_root: str | Path, runs_dir: str | Path | None = None) -> list[Path]:
    """The run folders under ``runs_dir`` (default ``$TL_RUNS_DIR`` or ``./runs``) that were trained
    on ``data_root`` and are not training now: what "all runs" means for a project of that folder.
    Oldest first (the order they were made)."""
    forms = _root_forms(_abs(data_root))
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return []
    found: list[tuple[float, str, Path]] = []
    for child in root.iterdir():
        if child.name.startswith(".") or not (child / CONFIG_FILE).is_file():
            continue
        run = RunFolder(child)
        try:
            if run.state in ACTIVE_STATES or not _uses_data(run, forms):
                continue
        except TransferLabError:
            continue
        try:
            created = run.status().get("created_at")
        except TransferLabError:
            created = None
        found.append((created if isinstance(created, (int, float)) else 0.0, child.name, child))
    return [p for _c, _n, p in sorted(found)]


# -- saving --------------------------------------------------------------------------------------

@dataclass
class _Member:
    name: str
    source: Path | None = None
    data: bytes | None = None

    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size  # type: ignore[union-attr]


def _target(out_path: str | Path, data_name: str) -> Path:
    out = _abs(out_path)
    if out.is_dir():  # a folder: name the file after the data folder, without replacing anything
        stem = re.sub(r"[^\w.-]+", "-", data_name).strip(".-") or "project"
        candidate = out / f"{stem}{PROJECT_SUFFIX}"
        n = 2
        while os.path.lexists(candidate):
            candidate = out / f"{stem}-{n}{PROJECT_SUFFIX}"
            n += 1
        return candidate
    if not out.suffix:
        out = out.with_name(out.name + PROJECT_SUFFIX)
    if os.path.lexists(out):
        raise ExportError(f"'{out}' already exists, and saving a project never replaces a file. "
                          "Choose another name, or move the old file away first.")
    return out


UNSAFE_NAME = "its name cannot be stored safely in a project (rename it with plain letters and digits)"


def _data_members(data_root: Path) -> tuple[list[_Member], dict, list[dict]]:
    scan = scan_folder(data_root)
    members: list[_Member] = []
    left_out: list[dict] = []
    seen: set[str] = set()
    for rec in scan.records:
        name = f"{DATA_DIR}/{rec.rel_path}"
        rel = unpacked_name(name)
        if rel is None or rel.as_posix() != name:
            left_out.append({"path": rec.rel_path, "reason": UNSAFE_NAME})
            continue
        key = name_key(rel)
        if key in seen:
            left_out.append({"path": rec.rel_path, "reason": "another picture has the same name apart from capitals"})
            continue
        seen.add(key)
        members.append(_Member(name, source=Path(rec.path)))
    if not members:
        raise DataError(f"None of the pictures in '{data_root}' can be stored in a project: rename them with plain "
                        "letters and digits and try again.")
    counts = {c: 0 for c in scan.classes}
    by_name = {f"{DATA_DIR}/{r.rel_path}": r.label for r in scan.records}
    for m in members:
        counts[by_name[m.name]] += 1
    info = {"name": data_root.name, "layout": scan.layout, "classes": [c for c in scan.classes if counts[c]],
            "counts": counts, "images": len(members), "left_out": left_out}
    return members, info, left_out


def set_aside_pictures(data_root: str | Path) -> list[Path]:
    """The files waiting in the data folder's set-aside folder (what a project would carry)."""
    aside = set_aside_dir(data_root)
    found: list[Path] = []
    for dirpath, dirs, files in os.walk(aside):   # nothing when there is none; links are not followed
        dirs.sort()
        found += [Path(dirpath, f) for f in sorted(files) if not is_ignored_name(f)
                  and not Path(dirpath, f).is_symlink() and Path(dirpath, f).is_file()]
    return found


def _fix_members(data_root: Path, left_out: list[dict], set_aside: bool = True) -> list[_Member]:
    """The set-aside pictures (unless left out) and the fix log beside the data folder: the user's own
    decisions, which undo needs (a set-aside picture goes back from there)."""
    members: list[_Member] = []
    aside = set_aside_dir(data_root)
    seen: set[str] = set()
    for path in set_aside_pictures(data_root) if set_aside else ():
        rel = path.relative_to(aside).as_posix()
        name = f"{SET_ASIDE_DIR}/{rel}"
        safe = unpacked_name(name)
        if safe is None or safe.as_posix() != name or name_key(safe) in seen:
            left_out.append({"path": f"{aside.name}/{rel}", "reason": UNSAFE_NAME})
            continue
        seen.add(name_key(safe))
        members.append(_Member(name, source=path))
    log = fixes_log_path(data_root)
    if log.is_file():
        members.append(_Member(FIXES_FILE, source=log))
    return members


def _run_members(run_dirs: Iterable[str | Path], data_forms: list[str],
                 data_root: Path) -> tuple[list[_Member], list[dict], list[str]]:
    """The runs' members, their manifest entries, and the other names under which the runs knew
    the data folder (an absolute path through a link, say), so opening can re-point those too."""
    members: list[_Member] = []
    runs: list[dict] = []
    used: set[str] = set()
    seen_runs: set[str] = set()
    aliases: list[str] = []
    data_real = os.path.realpath(data_root)
    for raw in run_dirs:
        run = RunFolder.open(_abs(raw))
        if os.path.realpath(run.path) in seen_runs:
            continue
        seen_runs.add(os.path.realpath(run.path))
        status = run.status()
        if status.get("state") in ACTIVE_STATES:
            raise RunError(f"The run '{run.run_id}' is still training, so it cannot be saved yet. Wait until it "
                           "finishes (or stop it), then save the project again.")
        if not _uses_data(run, data_forms):
            try:
                other = run.config().data.root
            except TransferLabError:
                other = "another folder"
            raise RunError(f"The run '{run.run_id}' was trained on the pictures in '{other}', not on '{data_root}'. "
                           "A project keeps one data folder: leave this run out, or save it in a project of "
                           "its own data folder.")
        own_root = str(_abs(run.config().data.root))
        if os.path.realpath(own_root) == data_real and own_root not in data_forms:
            aliases.append(own_root)
        if unpacked_name(f"{RUNS_DIR}/{run.run_id}/{CONFIG_FILE}") is None:
            raise RunError(f"The run folder name '{run.run_id}' cannot be stored safely in a project. Rename the "
                           "folder with plain letters, digits and dashes, then try again.")
        run_id, n = run.run_id, 2
        while name_key(f"{RUNS_DIR}/{run_id}") in used:
            run_id, n = f"{run.run_id}-{n}", n + 1
        used.add(name_key(f"{RUNS_DIR}/{run_id}"))
        files = [f for f in RUN_FILES if (run.path / f).is_file()]
        files += sorted(p.name for p in run.path.glob(f"{EVAL_PREFIX}*.json")
                        if p.is_file() and unpacked_name(p.name) is not None)
        rebase = _rebaser([(form, Path(TRAVEL_DATA)) for form in [*data_forms, own_root]]
                          + [(str(run.path), Path(TRAVEL_RUNS) / run_id)])
        for f in files:
            member = _Member(f"{RUNS_DIR}/{run_id}/{f}", source=run.path / f)
            if f == STATUS_FILE and status.get("interrupted"):
                # "running" on a computer whose process is gone reads as interrupted here, but on
                # another computer it would look as if it were still training: keep what it is.
                member = _Member(member.name, data=(json.dumps(status, indent=2, sort_keys=True) + "\n").encode())
            if f == CONFIG_FILE:   # folder and file paths cut to their last part, as in a bundle
                member = _Member(member.name, data=(shareable_config(run.path).to_json() + "\n").encode())
            elif f.endswith((".json", ".jsonl")):
                try:
                    raw = member.data if member.data is not None else (run.path / f).read_bytes()
                    member = _Member(member.name, data=_travelling(raw, f, rebase))
                except (OSError, UnicodeDecodeError, ValueError):
                    pass   # a damaged file travels as it is; the run folder reports it when read
            members.append(member)
        try:
            model = run.config().model.name
        except TransferLabError:
            model = None
        runs.append({"id": run_id, "original_path": f"{TRAVEL_RUNS}/{run_id}", "model": model,
                     "state": status.get("state"), "files": files, "local_path": str(run.path)})
    return members, runs, list(dict.fromkeys(aliases))


# Where the data folder and each run "were" inside a project file: no local path travels (it would
# give away the user's name and folder layout); opening re-points these to the unpacked copy.
TRAVEL_DATA = "/transfer-lab-project/data"
TRAVEL_RUNS = "/transfer-lab-project/runs"


def _travelling(raw: bytes, name: str, rebase: Callable[[Any], Any]) -> bytes:
    """A run's JSON (or JSON-lines) file with its local paths replaced by the project's own."""
    text = raw.decode("utf-8")
    if name.endswith(".jsonl"):
        lines = []
        for line in text.splitlines():
            try:
                lines.append(json.dumps(rebase(json.loads(line)), default=float))
            except ValueError:   # a half-written last line: left as it is
                lines.append(line)
        return ("\n".join(lines) + ("\n" if lines else "")).encode()
    return (json.dumps(rebase(json.loads(text)), indent=2, sort_keys=True) + "\n").encode()


def _choices_member(choices: dict | None) -> _Member | None:
    if choices is None:
        return None
    if not isinstance(choices, dict):
        raise ConfigError(f"The choices to keep with a project must be a dict, not {type(choices).__name__}.")
    try:
        text = json.dumps(choices, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"The choices to keep with a project must be plain data (text, numbers, lists, "
                          f"dicts): {err}.") from None
    return _Member(CHOICES_FILE, data=(text + "\n").encode())


def _zip_info(member: _Member) -> zipfile.ZipInfo:
    if member.source is not None:
        info = zipfile.ZipInfo.from_file(member.source, member.name, strict_timestamps=False)
    else:
        info = zipfile.ZipInfo(member.name, date_time=time.localtime()[:6])
        info.external_attr = 0o644 << 16
        info.file_size = len(member.data or b"")
    info.compress_type = (zipfile.ZIP_DEFLATED if PurePosixPath(member.name).suffix.lower() in _DEFLATED_SUFFIXES
                          else zipfile.ZIP_STORED)
    return info


def _write_member(zf: zipfile.ZipFile, member: _Member, tick: Callable[[int], None]) -> dict:
    info = _zip_info(member)
    digest = hashlib.sha256()
    size = 0
    with zf.open(info, "w", force_zip64=info.file_size > (1 << 30)) as dst:
        if member.data is not None:
            digest.update(member.data)
            dst.write(member.data)
            size = len(member.data)
            tick(size)
        else:
            try:
                src = open(member.source, "rb")  # type: ignore[arg-type]
            except OSError as err:
                raise DataError(f"'{member.source}' could not be read while the project was being saved "
                                f"({err.strerror or err}); nothing was saved. Check the file and try again.") from None
            with src:
                while True:
                    try:
                        chunk = src.read(_CHUNK)
                    except OSError as err:
                        raise DataError(f"'{member.source}' could not be read while the project was being saved "
                                        f"({err.strerror or err}); nothing was saved.") from None
                    if not chunk:
                        break
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                    tick(len(chunk))
    return {"size": size, "sha256": digest.hexdigest()}


def save_project(out_path: str | Path, data_root: str | Path, run_dirs: Iterable[str | Path] = (),
                 choices: dict | None = None, *, progress: ProgressFn | None = None, set_aside: bool = True) -> Path:
    """Write the data folder's pictures, ``run_dirs`` and ``choices`` into one project file.

    ``out_path`` gets ``.tlproj`` when it has no extension; an existing folder receives
    ``<data folder name>.tlproj``; an existing file is never replaced (:class:`ExportError`). Every
    run must have been trained on ``data_root`` and not be training now (:class:`RunError`). Pictures
    whose names cannot travel safely are left out and listed in the manifest's ``data.left_out``.
    ``progress(done, total)`` counts bytes. The file appears whole or not at all. Returns its path.
    The pictures the user set aside travel too (undo works on the other computer) unless
    ``set_aside`` is False: one may have been set aside because it should not be shared.
    """
    root = _abs(data_root)
    target = _target(out_path, root.name)
    data_members, data_info, left_out = _data_members(root)
    fix_members = _fix_members(root, left_out, set_aside)
    data_info["set_aside"] = sum(m.name.startswith(f"{SET_ASIDE_DIR}/") for m in fix_members)
    data_info["fixes"] = any(m.name == FIXES_FILE for m in fix_members)
    forms = _root_forms(root)
    run_members, runs, aliases = _run_members(run_dirs, forms, root)
    if choices is not None and isinstance(choices, dict):
        choices = _rebaser([(form, Path(TRAVEL_DATA)) for form in forms + aliases]
                           + [(r.pop("local_path"), Path(r["original_path"])) for r in runs])(choices)
    for r in runs:
        r.pop("local_path", None)
    choice = _choices_member(choices)
    members = data_members + fix_members + run_members + ([choice] if choice is not None else [])
    try:
        total = sum(m.size() for m in members)
    except OSError as err:
        raise DataError(f"A file disappeared while the project was being prepared ({err.strerror or err}: "
                        f"'{err.filename}'). Try again.") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target.parent).free
    except OSError as err:
        raise ExportError(f"Cannot write to '{target.parent}' ({err.strerror or err}). Choose a folder you are "
                          "allowed to write to.") from None
    if free < total + (1 << 20):
        raise ExportError(f"The disk is full: the project needs about {size_text(total)} and only "
                          f"{size_text(free)} is free in '{target.parent}'. Free some space, or save it elsewhere.")
    data_info["original_roots"] = [TRAVEL_DATA]   # no local path travels (see TRAVEL_DATA)
    # set-aside pictures and the fix log are not unpacked beside the pictures by format 1's readers, and
    # they leave label_issues.json's paths pointing nowhere
    needs_v2 = bool(fix_members) or any(ISSUES_FILE in r["files"] for r in runs)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, max(total, done))

    if progress is not None:
        progress(0, total)
    listed: dict[str, dict] = {}
    try:
        with atomic_path(target) as tmp:
            with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
                for member in members:
                    listed[member.name] = _write_member(zf, member, tick)
                manifest = {
                    # format 1 unless something travels that an older Transfer Lab would mishandle
                    "format": FORMAT, "format_version": FORMAT_VERSION if needs_v2 else 1,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "transfer_lab_version": _version(), "data": data_info, "runs": runs,
                    "choices": choice is not None, "members": listed,
                    "total_bytes": sum(m["size"] for m in listed.values()),
                }
                zf.writestr(zipfile.ZipInfo(MANIFEST_FILE, date_time=time.localtime()[:6]),
                            json.dumps(manifest, indent=2, sort_keys=True) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    except OSError as err:
        if _disk_full(err):
            raise ExportError("The disk became full while the project was being saved; nothing was kept. Free some "
                              "space, or save it elsewhere.") from None
        raise ExportError(f"Could not write the project file '{target}' ({err.strerror or err}); nothing was kept. "
                          "Choose another folder.") from None
    return target


def _version() -> str:
    from tl_core import __version__

    return __version__


# -- opening -------------------------------------------------------------------------------------

def _not_a_project(path: Path) -> UploadError:
    return UploadError(f"'{path.name}' is not a Transfer Lab project file, or it is damaged or incomplete (it is not "
                       f"a readable zip archive). {_REOPEN}")


def _damaged(path: Path, what: str) -> UploadError:
    return UploadError(f"The project file '{path.name}' is damaged: {what}. Nothing was opened. {_REOPEN}")


def _check_manifest(manifest: Any, path: Path) -> dict:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UploadError(f"'{path.name}' is a zip archive but not a Transfer Lab project (its project.json is not "
                          "one). To use a zip of pictures, add it as data instead.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _damaged(path, "its format version is missing")
    if version > FORMAT_VERSION:
        made = manifest.get("transfer_lab_version")
        raise UploadError(f"'{path.name}' was saved by a newer Transfer Lab{f' ({made})' if isinstance(made, str) else ''}"
                          f" in project format {version}; this one ({_version()}) opens format {FORMAT_VERSION} and "
                          "older. Update Transfer Lab, then open it again.")
    members = manifest.get("members")
    if not isinstance(members, dict) or not members:
        raise _damaged(path, "its list of files is missing")
    for name, entry in members.items():
        rel = unpacked_name(name) if isinstance(name, str) else None
        if (rel is None or rel.as_posix() != name or not isinstance(entry, dict)
                or not isinstance(entry.get("size"), int) or entry["size"] < 0
                or not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"])
                or not (name in (CHOICES_FILE, FIXES_FILE)
                        or rel.parts[0] in (DATA_DIR, RUNS_DIR, SET_ASIDE_DIR) and len(rel.parts) >= 3)):
            raise _damaged(path, f"its list of files names '{str(name)[:200]}', which a project never holds")
    data = manifest.get("data")
    if not isinstance(data, dict):
        raise _damaged(path, "it does not say which pictures it holds")
    runs = manifest.get("runs")
    if not isinstance(runs, list):
        raise _damaged(path, "it does not say which runs it holds")
    seen: set[str] = set()
    for run in runs:
        rid = run.get("id") if isinstance(run, dict) else None
        if (not isinstance(rid, str) or sanitize_relpath(rid) is None or sanitize_relpath(rid).as_posix() != rid
                or "/" in rid or rid in seen or f"{RUNS_DIR}/{rid}/{CONFIG_FILE}" not in members):
            raise _damaged(path, f"its run '{str(rid)[:200]}' is incomplete")
        seen.add(rid)
    return manifest


def read_manifest(path: str | Path) -> dict:
    """The manifest (``project.json``) of a project file, without unpacking anything: what it holds
    (pictures, runs, choices), when and by which version it was saved. :class:`UploadError` for a
    file that is not a project, is damaged, or was saved in a newer format."""
    src = _abs(path)
    if not src.is_file():
        raise UploadError(f"The project file '{src}' was not found. Check its name and folder.")
    try:
        with zipfile.ZipFile(src) as zf:
            return _manifest_from(zf, src)
    except UploadError:
        raise
    except Exception:  # BadZipFile, OSError, struct errors on mangled headers
        raise _not_a_project(src) from None


def _manifest_from(zf: zipfile.ZipFile, src: Path) -> dict:
    try:
        info = zf.getinfo(MANIFEST_FILE)
    except KeyError:
        raise UploadError(f"'{src.name}' is a zip archive but not a Transfer Lab project (it has no project.json). "
                          "To use a zip of pictures, add it as data instead.") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise _damaged(src, "its project.json is far too large")
    try:
        with zf.open(info) as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        manifest = json.loads(raw.decode("utf-8"))
    except Exception:
        raise _damaged(src, "its project.json cannot be read") from None
    return _check_manifest(manifest, src)


def _fresh_folder(parent: Path, stem: str) -> Path:
    rel = sanitize_relpath(stem)
    base = rel.name if rel is not None and len(rel.parts) == 1 and not stem.startswith(".") else "project"
    n = 1
    while True:
        candidate = parent / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def _refusal(src: Path, problem: Any) -> UploadError:
    why = {"unsafe_name": "points outside the project folder (an absolute path or '..')",
           "symlink": "is a link to another file", "nested_archive": "is an archive inside the project",
           "encrypted": "is password-protected", "duplicate_name": "appears twice",
           "unsupported_compression": "is packed in a way Transfer Lab does not unpack"}.get(
        problem.kind, "could not be unpacked")
    return UploadError(f"The project file '{src.name}' was refused: '{problem.path}' {why}, which a project saved by "
                       f"Transfer Lab never holds. Nothing was opened. {_REOPEN}")


def _verify(stage: Path, manifest: dict, src: Path, tick: Callable[[int], None]) -> None:
    members: dict = manifest["members"]
    found: set[str] = set()
    for dirpath, _dirs, files in os.walk(stage):
        for f in files:
            found.add(Path(dirpath, f).relative_to(stage).as_posix())
    found.discard(MANIFEST_FILE)
    extra = sorted(found - set(members))
    if extra:
        raise _damaged(src, f"it holds '{extra[0]}', which its list of files does not name (was it changed?)")
    missing = sorted(set(members) - found)
    if missing:
        raise _damaged(src, f"'{missing[0]}' is missing")
    for name, entry in members.items():
        digest = hashlib.sha256()
        size = 0
        with open(stage.joinpath(*name.split("/")), "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                tick(len(chunk))
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise _damaged(src, f"'{name}' is not the file that was saved (its checksum differs)")


def _check_fix_log(path: Path, src: Path) -> None:
    """A travelling fix log may only name places inside its pictures: undo follows it, and must never
    move a file from or to anywhere else on this computer."""
    if not path.is_file():
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise _damaged(src, "its list of fixes cannot be read") from None
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue   # a damaged line is ignored when the log is read, as at home
        if isinstance(item, dict) and not safe_line(item):
            raise _damaged(src, "its list of fixes names a place outside its pictures")


def _rebaser(pairs: list[tuple[str, Path]]) -> Callable[[Any], Any]:
    """A function that rewrites, anywhere in JSON data, each text that is an old path (or lies
    under one) to the same place under the new one. Old paths may come from another operating
    system, so both separators count; the rest of the path must be a safe relative name."""
    prefixes = sorted(((old.rstrip("/\\"), new) for old, new in pairs
                       if isinstance(old, str) and old.rstrip("/\\")), key=lambda p: -len(p[0]))

    def one(text: str) -> str:
        for old, new in prefixes:
            if text == old:
                return str(new)
            if text.startswith(old) and text[len(old):len(old) + 1] in ("/", "\\"):
                rel = sanitize_relpath(text[len(old) + 1:])
                if rel is not None:
                    return str(new.joinpath(*rel.parts))
        return text

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return one(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _data_folder_name(manifest: dict) -> str:
    """The opened pictures' folder keeps the original folder's name ("cats_and_dogs", not "data"), so
    runs lists and labels still say which pictures a run learned from; "data" when that name is not
    a plain, safe folder name."""
    name = (manifest.get("data") or {}).get("name")
    if (isinstance(name, str) and re.fullmatch(r"[\w][\w .()+-]{0,79}", name) and name.strip() == name
            and name not in (RUNS_DIR, CHOICES_FILE, MANIFEST_FILE, SET_ASIDE_DIR, FIXES_FILE)):
        return name
    return DATA_DIR


def _repoint(stage: Path, final: Path, manifest: dict, data_name: str = DATA_DIR) -> tuple[list[Path], dict | None]:
    data_root = final / data_name
    roots = (manifest.get("data") or {}).get("original_roots") or []
    to_data = _rebaser([(r, data_root) for r in roots if isinstance(r, str)])
    run_pairs: list[tuple[str, Path]] = []
    run_dirs: list[Path] = []
    for run in manifest["runs"]:
        new = final / RUNS_DIR / run["id"]
        run_dirs.append(new)
        if isinstance(run.get("original_path"), str):
            run_pairs.append((run["original_path"], new))
        here = stage / RUNS_DIR / run["id"]
        config = _load(here / CONFIG_FILE)
        if isinstance(config, dict) and isinstance(config.get("data"), dict):
            config["data"] = to_data(config["data"])
            config["data"]["root"] = str(data_root)
            write_json_atomic(here / CONFIG_FILE, config)
        for f in [SUMMARY_FILE, ISSUES_FILE, *sorted(p.name for p in here.glob(f"{EVAL_PREFIX}*.json"))]:
            content = _load(here / f)
            if isinstance(content, dict):
                write_json_atomic(here / f, to_data(content))
    choices = None
    if manifest.get("choices") and (stage / CHOICES_FILE).is_file():
        loaded = _load(stage / CHOICES_FILE)
        if isinstance(loaded, dict):
            choices = _rebaser([(r, data_root) for r in roots if isinstance(r, str)] + run_pairs)(loaded)
            write_json_atomic(stage / CHOICES_FILE, choices)
    return run_dirs, choices


def _move_into(stage: Path, final: Path) -> None:
    """``final`` is the empty folder reserved for the project: it becomes the staging folder."""
    try:
        os.replace(stage, final)  # POSIX replaces an empty folder in one step
        return
    except OSError:
        pass
    moved: list[str] = []
    try:
        for name in sorted(os.listdir(stage)):
            os.rename(stage / name, final / name)
            moved.append(name)
        stage.rmdir()
    except OSError:
        for name in reversed(moved):
            try:
                os.rename(final / name, stage / name)
            except OSError:
                pass
        raise


def open_project(path: str | Path, dest_dir: str | Path, *, progress: ProgressFn | None = None,
                 max_entries: int = MAX_ENTRIES, max_total_bytes: int = MAX_TOTAL_BYTES,
                 max_ratio: float = MAX_RATIO) -> OpenedProject:
    """Unpack a project file into a new folder under ``dest_dir`` and return where things are.

    The folder is named after the file (``pets.tlproj`` -> ``dest_dir/pets``, or ``pets-2`` ... when
    that exists): nothing that exists is changed. The file is untrusted (see the module docstring);
    anything wrong raises :class:`UploadError` in plain words and leaves nothing behind: not a
    project, damaged or truncated, a member whose checksum differs, a newer format, a full disk.
    ``progress(done, total)`` counts bytes unpacked, then checked.
    """
    src = _abs(path)
    if not src.is_file():
        raise UploadError(f"The project file '{src}' was not found. Check its name and folder.")
    dest = _abs(dest_dir)
    if dest.exists() and not dest.is_dir():
        raise UploadError(f"'{dest}' is a file, so the project cannot be opened there. Choose a folder instead.")
    try:
        fh = open(src, "rb")
    except OSError as err:
        raise UploadError(f"The project file '{src}' cannot be read ({err.strerror or err}).") from None
    with fh:
        try:
            zf = zipfile.ZipFile(fh)
        except Exception:
            raise _not_a_project(src) from None
        with zf:
            manifest = _manifest_from(zf, src)
        total = int(manifest.get("total_bytes") or 0)
        total = max(total, sum(e["size"] for e in manifest["members"].values()))
        try:
            dest.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(dest).free
        except OSError as err:
            raise UploadError(f"Cannot create or use the folder '{dest}' ({err.strerror or err}). Choose a folder "
                              "you are allowed to write to.") from None
        if free < total + (1 << 20):
            raise UploadError(f"The disk is full: the project needs about {size_text(total)} and only "
                              f"{size_text(free)} is free in '{dest}'. Free some space, or open it elsewhere.")
        try:
            final = _fresh_folder(dest, src.stem)
        except OSError as err:
            raise UploadError(f"Cannot create a folder in '{dest}' ({err.strerror or err}). Choose a folder you are "
                              "allowed to write to.") from None
        stage = dest / f".{final.name}.opening-{secrets.token_hex(6)}"
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, 2 * total), 2 * total)

        def unpacked(n: int, _declared: int) -> None:
            if progress is not None:
                progress(min(n, total), 2 * total)

        try:
            if progress is not None:
                progress(0, 2 * total)
            fh.seek(0)
            report = extract_zip(fh, stage, max_entries=max_entries, max_total_bytes=max_total_bytes,
                                 max_ratio=max_ratio, words=PROJECT_WORDS, progress=unpacked)
            if report.skipped:
                raise _refusal(src, report.skipped[0])
            done = total
            _verify(stage, manifest, src, tick)
            _check_fix_log(stage / FIXES_FILE, src)
            data_name = _data_folder_name(manifest)
            if data_name != DATA_DIR and (stage / DATA_DIR).is_dir():
                os.rename(stage / DATA_DIR, stage / data_name)
            if (stage / SET_ASIDE_DIR).is_dir():   # beside the data folder, where undo looks for them
                os.rename(stage / SET_ASIDE_DIR, stage / f"{data_name}{SET_ASIDE_SUFFIX}")
            if (stage / FIXES_FILE).is_file():
                os.rename(stage / FIXES_FILE, stage / f"{data_name}{LOG_SUFFIX}")
            run_dirs, choices = _repoint(stage, final, manifest, data_name)
            _move_into(stage, final)
        except BaseException as err:
            shutil.rmtree(stage, ignore_errors=True)
            try:
                final.rmdir()  # the empty folder reserved above; never anything else
            except OSError:
                pass
            if isinstance(err, OSError):
                if _disk_full(err):
                    raise UploadError("The disk is full, so opening the project was cancelled and nothing was kept. "
                                      "Free some space and try again.") from None
                raise UploadError(f"Could not write the project's files ({err.strerror or err}); nothing was kept. "
                                  "Try again, or choose another folder.") from None
            raise
    if progress is not None:
        progress(2 * total, 2 * total)
    return OpenedProject(folder=final, data_root=final / data_name, run_dirs=run_dirs, choices=choices,
                         manifest=manifest)
