"""Receive pictures from the browser (a dragged folder or a zip) and put them on disk safely.

Everything that arrives from a browser is untrusted: file names can contain ``..``, drive
letters or control characters, and a zip can hold symlinks, absolute paths, nested
archives or a "zip bomb" (a few kilobytes that unpack to gigabytes, with sizes in the
header that lie). The rules here:

* names are cleaned by :func:`sanitize_relpath`; anything that could escape the target
  folder is refused and reported, never "fixed" into a surprising place;
* bytes are counted as they are actually written, not as the archive declares them;
* everything is written into a fresh staging folder next to the destination
  (``<dest>.partial-<random>``) and only moved into place at the very end, so a refused
  or failed upload never removes or changes anything the user already had.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterable, Iterator

from tl_core.errors import UploadError
from tl_core.files import size_text
from tl_core.data.scan import Problem, is_ignored_name

__all__ = ["UploadReport", "ArchiveWords", "UPLOAD_WORDS", "sanitize_relpath", "unpacked_name", "name_key",
           "save_uploaded_files", "extract_zip"]

_ARCHIVE_EXTENSIONS = frozenset({
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".7z", ".rar", ".zst", ".lz", ".lzma", ".cab",
})
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
)
# Bidirectional-text controls can disguise a name ("photo<U+202E>gpj.exe"); refuse them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_DRIVE = re.compile(r"^[A-Za-z]:")
# The compression-ratio rules (per entry, and for the whole archive) only apply once this much
# has come out: tiny files that compress well (a blank text file) are harmless, bombs are large
# by design. The whole-archive rule counts every entry, so many entries just under this size
# (each harmless alone, together a bomb) are refused as well.
_RATIO_MIN_BYTES = 1 << 20
# Every zip ends with its "end of central directory" record (its table of contents' footer).
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22
_CHUNK = 1 << 16
_STREAMABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass
class UploadReport:
    """What was written, what was refused and why, and the folder to scan next.

    ``dest`` is the folder :func:`~tl_core.data.scan.scan_folder` should use: the
    destination itself, or the single top-level folder that wrapped everything.
    """

    saved: list[str] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    dest: str = ""


_REZIP = "Create the zip again (right-click the folder > Compress) and upload it."


@dataclass(frozen=True)
class ArchiveWords:
    """What :func:`extract_zip`'s refusals call the archive and what they advise.

    The defaults (:data:`UPLOAD_WORDS`) speak about an uploaded zip of pictures; another kind of
    archive unpacked with the same safety rules (a saved project, :mod:`tl_core.projects`) passes
    its own words so the advice fits. Only the words change, never the checks.
    """

    name: str = "zip"                                   # "The zip is damaged", "The zip holds ..."
    remake: str = _REZIP                                # what to do about a damaged archive
    too_many: str = "Upload a smaller set of pictures (a few hundred per category is plenty)."
    too_big: str = "Upload fewer or smaller pictures."
    bomb: str = "Pictures do not compress like that; zip the picture folder again."
    cancelled: str = "the upload was cancelled"         # "The disk is full, so <cancelled> and nothing was kept."
    files: str = "the uploaded files"                   # "Could not write <files> (...)"


UPLOAD_WORDS = ArchiveWords()


def sanitize_relpath(name: str) -> PurePosixPath | None:
    """Make a browser- or zip-supplied name safe to join under a folder, or return None.

    Backslashes become ``/``; a leading drive letter (``C:``) is dropped; empty and ``.``
    parts are dropped. Returns ``None`` for names that are absolute, contain ``..``, NUL,
    control or bidi characters, Windows device names (``CON``, ``NUL`` ...) or parts made only
    of dots/spaces, and when nothing is left.
    """
    if not isinstance(name, str) or not name:
        return None
    if any(unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS for ch in name):
        return None
    s = name.replace("\\", "/")
    s = _DRIVE.sub("", s, count=1)
    if s.startswith("/"):
        return None  # absolute: /etc/passwd, //server/share, C:\Windows\...
    parts: list[str] = []
    for part in s.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            return None
        if not part.strip(". "):
            return None  # "...", " ": Windows would silently turn these into something else
        if part.split(".")[0].strip().lower() in _WINDOWS_RESERVED:
            return None
        if os.name == "nt" and ":" in part:
            return None  # NTFS alternate data stream
        parts.append(part)
    if not parts:
        return None
    return PurePosixPath(*parts)


def unpacked_name(name: str) -> PurePosixPath | None:
    """The relative path :func:`extract_zip` unpacks an entry called ``name`` to, or None when it
    would not unpack it (an unsafe name, a hidden or system file, an archive inside the archive).

    Whoever writes an archive meant to be unpacked by :func:`extract_zip` (a saved project) uses
    this to keep only names that come back unchanged. Two names whose :func:`name_key` is equal
    collide (the second is not unpacked).
    """
    rel = sanitize_relpath(name)
    if rel is None or _silently_skipped(rel) or rel.suffix.lower() in _ARCHIVE_EXTENSIONS:
        return None
    return rel


def name_key(rel: PurePosixPath | str) -> str:
    """Names with the same key are the same file on macOS and Windows (capitals, Unicode forms)."""
    return _key(PurePosixPath(rel))


def _display(name: object, limit: int = 200) -> str:
    """A name safe to show in a message: control characters replaced, length capped."""
    text = name if isinstance(name, str) else repr(name)
    text = "".join("?" if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS else ch for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."




def _silently_skipped(rel: PurePosixPath) -> bool:
    """Hidden files and OS junk (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``)."""
    return any(is_ignored_name(part) for part in rel.parts)


def _key(rel: PurePosixPath) -> str:
    # Two names that differ only in case or Unicode normalisation are the same file on
    # macOS and Windows: the second would silently overwrite the first.
    return unicodedata.normalize("NFC", rel.as_posix()).casefold()


def _content_root(rels: list[PurePosixPath]) -> PurePosixPath:
    """The folder under the destination that holds the class folders.

    A dragged folder or a zip made from one wraps everything in a single top folder
    (``pets/cat/1.jpg``). We step into such wrappers, but only while there is still a
    folder level below them, so ``cat/1.jpg`` alone stays as it is (the class level).
    """
    parts = [r.parts for r in rels]
    prefix: list[str] = []
    while parts:
        d = len(prefix)
        firsts = {p[d] for p in parts}
        if len(firsts) != 1 or any(len(p) <= d + 1 for p in parts) or not any(len(p) >= d + 3 for p in parts):
            break
        prefix.append(firsts.pop())
    return PurePosixPath(*prefix) if prefix else PurePosixPath(".")


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise UploadError(f"'{dest}' is a file, so the upload cannot be put there. Choose a folder name instead.")


def _make_staging(dest: Path) -> Path:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(f"{dest}.partial-{secrets.token_hex(6)}")
        staging.mkdir()
    except OSError as err:
        raise UploadError(
            f"Cannot create a folder next to '{dest}' ({err.strerror or err}). "
            "Choose a folder you are allowed to write to, with free disk space.") from None
    return staging


def _commit(staging: Path, dest: Path) -> None:
    """Move the finished staging folder into place.

    A new ``dest`` is a single atomic rename. An existing ``dest`` is added to, but only if
    none of the new top-level names is already there: existing files are never replaced.
    """
    if not os.path.lexists(dest):
        try:
            os.rename(staging, dest)
            return
        except OSError:
            if not dest.is_dir():  # created meanwhile as a file, or a real error
                raise
    names = sorted(os.listdir(staging))
    clash = [n for n in names if os.path.lexists(dest / n)]
    if clash:
        raise UploadError(
            f"The folder '{dest}' already contains '{clash[0]}', and an upload never replaces existing files. "
            "Choose a new folder name for this upload, or delete the old folder first.")
    moved: list[str] = []
    try:
        for n in names:
            os.rename(staging / n, dest / n)
            moved.append(n)
    except OSError:
        for n in reversed(moved):  # put back what was moved: all or nothing
            try:
                os.rename(dest / n, staging / n)
            except OSError:
                pass
        raise
    staging.rmdir()


def _finish(staging: Path, dest: Path, saved_rel: list[PurePosixPath], skipped: list[Problem],
            what: str) -> UploadReport:
    if not saved_rel:
        reasons = "; ".join(dict.fromkeys(p.message for p in skipped[:5]))
        detail = f" ({reasons})" if reasons else " (it only held hidden or system files)"
        raise UploadError(f"Nothing could be saved from the {what}{detail}. Upload the folder of pictures itself.")
    root_rel = _content_root(saved_rel)
    _commit(staging, dest)
    return UploadReport(
        saved=[str(dest.joinpath(*r.parts)) for r in saved_rel],
        skipped=skipped,
        dest=str(dest if str(root_rel) == "." else dest.joinpath(*root_rel.parts)),
    )


def _chunks(data: object) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), 1 << 20):
            yield bytes(view[start:start + (1 << 20)])
        return
    read = getattr(data, "read", None)
    if read is None:
        raise TypeError("file content must be bytes or a readable binary file object")
    try:  # an upload widget's file may have been read already (e.g. for a preview): rewind
        if data.seekable():  # type: ignore[attr-defined]
            data.seek(0)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        pass
    while True:
        chunk = read(1 << 20)
        if not chunk:
            return
        yield bytes(chunk)


def _write_failed(err: OSError, words: ArchiveWords = UPLOAD_WORDS) -> UploadError:
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return UploadError(f"The disk is full, so {words.cancelled} and nothing was kept. Free some space and try again.")
    return UploadError(f"Could not write {words.files} ({err.strerror or err}); nothing was kept. Try again, or choose another folder.")


def save_uploaded_files(
    files: Iterable[tuple[str, bytes]],
    dest_dir: str | Path,
    *,
    max_files: int = 20000,
    max_total_bytes: int = 2 * 1024**3,
) -> UploadReport:
    """Write browser-uploaded ``(relative name, content)`` pairs under ``dest_dir``.

    Content may be bytes or a readable binary file object. Unsafe names are skipped and
    reported; hidden/system files are skipped silently. Raises :class:`UploadError` (and
    keeps nothing) when there are too many files, too many bytes, or nothing to save.
    """
    dest = Path(os.path.abspath(os.fspath(dest_dir)))
    _check_dest(dest)
    staging = _make_staging(dest)
    try:
        saved_rel: list[PurePosixPath] = []
        skipped: list[Problem] = []
        seen: set[str] = set()
        count = 0
        total = 0
        for name, data in files:
            count += 1
            if count > max_files:
                raise UploadError(
                    f"Too many files: the upload has more than {max_files}. Upload a smaller folder "
                    "(a few hundred pictures per category is plenty).")
            rel = sanitize_relpath(name)
            if rel is None:
                skipped.append(Problem(
                    "unsafe_name", _display(name),
                    f"'{_display(name)}' has a name that could point outside the upload folder, so it was not saved.",
                    "Rename the file (plain letters, digits, spaces; no '..') and upload it again.", "warning"))
                continue
            if _silently_skipped(rel):
                continue
            key = _key(rel)
            if key in seen:
                skipped.append(Problem(
                    "duplicate_name", rel.as_posix(),
                    f"'{rel.as_posix()}' was uploaded twice (names differing only in capitals count as the same); the second copy was not saved.",
                    "Rename one of the two files if both are needed.", "info"))
                continue
            target = staging.joinpath(*rel.parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = open(target, "xb")
            except OSError as err:
                if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
                    raise _write_failed(err) from None
                skipped.append(Problem(
                    "cannot_save", rel.as_posix(),
                    f"'{rel.as_posix()}' could not be saved ({err.strerror or err}).",
                    "Rename it with a shorter, simpler name and upload it again.", "warning"))
                continue
            with out:
                for chunk in _chunks(data):
                    total += len(chunk)
                    if total > max_total_bytes:
                        raise UploadError(
                            f"The upload is too big: more than {size_text(max_total_bytes)}. Upload fewer or smaller pictures.")
                    try:
                        out.write(chunk)
                    except OSError as err:
                        raise _write_failed(err) from None
            seen.add(key)
            saved_rel.append(rel)
        return _finish(staging, dest, saved_rel, skipped, "upload")
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError) and not isinstance(err, UploadError):
            raise _write_failed(err) from None
        raise


def _archive_size(source: str | Path | BinaryIO) -> int | None:
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.path.getsize(source)
        pos = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(pos)
        return int(end)
    except Exception:
        return None


_BAD_ZIP = ("This file is not a valid zip archive (it may be damaged, incomplete, or another kind of file). " + _REZIP)


def extract_zip(
    zip_path: str | Path | BinaryIO,
    dest_dir: str | Path,
    *,
    max_entries: int = 20000,
    max_total_bytes: int = 2 * 1024**3,
    max_ratio: float = 200.0,
    words: ArchiveWords = UPLOAD_WORDS,
    progress: Callable[[int, int], None] | None = None,
) -> UploadReport:
    """Unpack an uploaded zip under ``dest_dir`` defensively (see the module docstring).

    Skipped and reported: unsafe names, symlinks, nested archives, encrypted entries and
    unusual compression methods. Skipped silently: ``__MACOSX`` and hidden entries. Raises
    :class:`UploadError` (keeping nothing) for a damaged zip (also one cut short so that only
    an archive stored inside it still looks whole), too many entries, too many unpacked bytes, or
    an entry, or the archive as a whole, that expands more than ``max_ratio`` times (a zip bomb).
    ``UploadReport.dest`` is the folder to scan: the single top-level folder when there is one.
    ``words`` changes what the messages call the archive and advise (:class:`ArchiveWords`);
    ``progress(done, total)`` hears the bytes unpacked so far against the sizes the zip declares.
    """
    dest = Path(os.path.abspath(os.fspath(dest_dir)))
    _check_dest(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        if words == UPLOAD_WORDS:
            raise UploadError(f"The zip file '{_display(str(zip_path))}' was not found. Upload it again.") from None
        raise UploadError(f"The {words.name} '{_display(str(zip_path))}' was not found. Check its name and folder.") from None
    except Exception:  # BadZipFile, but also ValueError/OSError/struct errors on mangled headers
        raise UploadError(_BAD_ZIP) from None
    with zf:
        try:
            infos = zf.infolist()
        except Exception:
            raise UploadError(_BAD_ZIP) from None
        archive_size = _archive_size(zip_path)
        if not _directory_is_its_own(zf, infos, zip_path, archive_size):
            raise UploadError(
                f"The {words.name} is damaged or incomplete (it may have been cut short while it was copied, "
                f"downloaded or uploaded), so nothing was unpacked. {words.remake}")
        if len(infos) > max_entries:
            raise UploadError(
                f"The {words.name} holds {len(infos)} files and folders; the limit is {max_entries}. {words.too_many}")
        declared = sum(max(0, i.file_size) for i in infos)
        if declared > max_total_bytes:
            raise UploadError(
                f"The {words.name} unpacks to more than {size_text(max_total_bytes)}. {words.too_big}")
        packed = _packed_size(infos, archive_size)
        if _expands_too_much(declared, packed, max_ratio):
            raise _archive_bomb(max_ratio, words)
        staging = _make_staging(dest)
        try:
            return _extract_entries(zf, infos, staging, dest, max_total_bytes, max_ratio, archive_size, words,
                                    progress, declared, packed)
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, OSError):
                raise _write_failed(err, words) from None
            raise


def _archive_tail(source: str | Path | BinaryIO, size: int) -> bytes | None:
    """The last ``size`` bytes of the archive (None when they cannot be read)."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                f.seek(-size, os.SEEK_END)
                return f.read(size)
        pos = source.tell()
        try:
            source.seek(-size, os.SEEK_END)
            return source.read(size)
        finally:
            source.seek(pos)
    except (OSError, ValueError, AttributeError):
        return None


def _directory_is_its_own(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], source: str | Path | BinaryIO,
                          archive_size: int | None) -> bool:
    """Whether the table of contents ``zipfile`` found belongs to this archive.

    ``zipfile`` looks for the table of contents (the central directory) from the end of the file
    and accepts one that sits further in, taking the bytes before it for a prefix. When a zip that
    holds another, uncompressed zip is cut short, the only table left is the *inner* zip's: the
    upload would "succeed" with the wrong files. A whole archive ends with its own end record
    (after it only its comment) and its first entry starts at the very beginning of the file.
    """
    if infos and min(i.header_offset for i in infos) != 0:
        return False
    if archive_size is None:
        return True  # a stream of unknown size: the offsets above are all there is to check
    footer = _EOCD_SIZE + len(zf.comment)
    if archive_size < footer:
        return False
    tail = _archive_tail(source, footer)
    if tail is None:
        return True  # unreadable here, yet zipfile read it: let the entries' own checks decide
    return tail.startswith(_EOCD_SIGNATURE) and tail[_EOCD_SIZE:] == zf.comment


def _packed_size(infos: list[zipfile.ZipInfo], archive_size: int | None) -> int:
    """What the whole-archive ratio is measured against: the archive's real size when known (the
    packed sizes in the headers can lie), else the packed sizes the entries declare."""
    if archive_size is not None:
        return max(1, archive_size)
    return max(1, sum(max(0, i.compress_size) for i in infos))


def _expands_too_much(unpacked: int, packed: int, max_ratio: float) -> bool:
    return unpacked > _RATIO_MIN_BYTES and unpacked > max_ratio * packed


def _archive_bomb(max_ratio: float, words: ArchiveWords) -> UploadError:
    return UploadError(
        f"The {words.name} was refused: all together its files expand more than {max_ratio:g} times the "
        f"{words.name}'s own size, which is how 'zip bombs' fill up a disk. {words.bomb}")


def _bomb(name: str, max_ratio: float, words: ArchiveWords) -> UploadError:
    return UploadError(
        f"The {words.name} was refused: '{_display(name)}' expands more than {max_ratio:g} times its packed size, "
        f"which is how 'zip bombs' fill up a disk. {words.bomb}")


def _extract_entries(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], staging: Path, dest: Path,
                     max_total_bytes: int, max_ratio: float, archive_size: int | None,
                     words: ArchiveWords = UPLOAD_WORDS, progress: Callable[[int, int], None] | None = None,
                     declared: int = 0, archive_packed: int | None = None) -> UploadReport:
    """Write the entries into ``staging``, counting every byte that really comes out against the
    caps: the total size, each entry's ratio and the whole archive's ratio (``archive_packed``,
    by default the archive's size)."""
    if archive_packed is None:
        archive_packed = _packed_size(infos, archive_size)
    saved_rel: list[PurePosixPath] = []
    skipped: list[Problem] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if name.endswith("/") or name.endswith("\\"):
            continue  # folders are created as files need them
        rel = sanitize_relpath(name)
        if rel is None:
            skipped.append(Problem(
                "unsafe_name", _display(name),
                f"'{_display(name)}' in the zip points outside the upload folder (an absolute path or '..'), so it was not unpacked.",
                "Zip the picture folder itself (right-click it > Compress) and upload that zip.", "warning"))
            continue
        if _silently_skipped(rel):
            continue
        shown = rel.as_posix()
        if stat.S_ISLNK(info.external_attr >> 16):
            skipped.append(Problem(
                "symlink", shown, f"'{shown}' is a link to another file, not a picture, so it was not unpacked.",
                "Put the real pictures in the folder before zipping it.", "info"))
            continue
        if rel.suffix.lower() in _ARCHIVE_EXTENSIONS:
            skipped.append(Problem(
                "nested_archive", shown,
                f"'{shown}' is an archive inside the zip; archives inside archives are not unpacked.",
                f"Unpack '{rel.name}' on your computer and put its pictures in the folder before zipping.", "info"))
            continue
        if info.flag_bits & 0x1:
            skipped.append(Problem(
                "encrypted", shown, f"'{shown}' is password-protected, so it could not be unpacked.",
                "Create the zip again without a password.", "warning"))
            continue
        if info.compress_type not in _STREAMABLE:
            # bzip2/LZMA entries cannot be unpacked in bounded memory with zipfile; they are
            # rare (most tools use 'deflate'), so they are skipped rather than risked.
            skipped.append(Problem(
                "unsupported_compression", shown,
                f"'{shown}' is packed with a compression method this app does not unpack.",
                "Create the zip again with your system's normal 'Compress' command.", "warning"))
            continue
        key = _key(rel)
        if key in seen:
            skipped.append(Problem(
                "duplicate_name", shown,
                f"'{shown}' appears twice in the zip (names differing only in capitals count as the same); the second copy was not unpacked.",
                "Rename one of the two files if both are needed.", "info"))
            continue
        packed = max(1, info.compress_size if archive_size is None else min(info.compress_size, archive_size))
        if _expands_too_much(info.file_size, packed, max_ratio):
            raise _bomb(name, max_ratio, words)

        target = staging.joinpath(*rel.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "xb")
        except OSError as err:
            if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
                raise _write_failed(err, words) from None
            skipped.append(Problem(
                "cannot_save", shown, f"'{shown}' could not be unpacked ({err.strerror or err}).",
                "Rename it with a shorter, simpler name and zip the folder again.", "warning"))
            continue
        with out:
            try:
                src = zf.open(info)
            except Exception:
                raise UploadError(f"The {words.name} is damaged: '{_display(name)}' could not be unpacked. "
                                  f"{words.remake}") from None
            written = 0
            with src:
                while True:
                    try:
                        chunk = src.read(_CHUNK)
                    except Exception:  # bad CRC, truncated data, invalid deflate stream ...
                        raise UploadError(f"The {words.name} is damaged: '{_display(name)}' could not be unpacked. "
                                          f"{words.remake}") from None
                    if not chunk:
                        break
                    # Count what actually comes out, not what the header declares.
                    written += len(chunk)
                    total += len(chunk)
                    if total > max_total_bytes:
                        raise UploadError(
                            f"The {words.name} unpacks to more than {size_text(max_total_bytes)}. {words.too_big}")
                    if _expands_too_much(written, packed, max_ratio):
                        raise _bomb(name, max_ratio, words)
                    if _expands_too_much(total, archive_packed, max_ratio):
                        raise _archive_bomb(max_ratio, words)
                    try:
                        out.write(chunk)
                    except OSError as err:
                        raise _write_failed(err, words) from None
                    if progress is not None:
                        progress(total, max(declared, total))
        seen.add(key)
        saved_rel.append(rel)
    return _finish(staging, dest, saved_rel, skipped, words.name)
