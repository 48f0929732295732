"""The cache folder kept under a size limit, forgetting what was used least recently.

Everything in these parts of the cache is made again from the user's pictures when it is missing:
decoded pictures (about 150 KB a picture at 224 px, one file per data set and picture size, so every
Lab subset and every size adds one), frozen-layer features, the picture-feature banks behind the data
checks, and download bundles prepared ahead. Without a limit the folder only grew: a class that tries
five data sets at three sizes fills a laptop's disk with copies nobody will read again. Converted
weights and the timing records are small and not touched.

Only files with the names Transfer Lab gives them are counted or removed (a ``train.cache_dir`` may
point at a folder that holds other things). "Used" is the file's modification time: a cache hit touches it (:func:`mark_used`), because access
times are not kept on most disks. What was used in the last :data:`RECENT_S` seconds is never removed,
so a training that is reading a file right now keeps it (on Linux a removed file that is memory-mapped
stays readable anyway; elsewhere the removal fails and the file stays).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

LIMIT_ENV = "TL_CACHE_LIMIT_GB"
DEFAULT_LIMIT_GB = 10.0
RECENT_S = 15 * 60            # used this recently: kept whatever the limit says
STALE_TEMP_S = 24 * 3600      # a half-written temporary file this old was left by a crash

# folder -> what a person calls it
KINDS: dict[str, str] = {
    "decoded": "decoded pictures",
    "features": "frozen-layer features",
    "picture-features": "picture features for data checks",
    "bundles": "prepared downloads",
}


# the names Transfer Lab writes there: 32 hex digits (the cache keys), a run's bundle "<run>-<16 hex>.zip"
_KEY = r"[0-9a-f]{32}"
OWN_NAMES: dict[str, re.Pattern] = {
    "decoded": re.compile(rf"{_KEY}\.(u8|json)"),
    "features": re.compile(rf"{_KEY}\.safetensors"),
    "picture-features": re.compile(rf"{_KEY}\.safetensors"),
    "bundles": re.compile(r"[\w.-]+-[0-9a-f]{16}\.zip"),
}
_TEMP = re.compile(r"\.(?P<name>.+)\.[^.]+\.tmp")        # files.atomic_path's ".<name>.<random>.tmp"
_BUNDLE_WORK = re.compile(r"tl-bundle-[\w-]+")              # aftercare's folder while a bundle is made


@dataclass
class CacheEntry:
    """One thing in the cache: the files that only make sense together (decoded pictures and their
    description), their size and when they were last used."""

    kind: str
    files: list[Path]
    size: int
    last_used: float

    @property
    def name(self) -> str:
        return self.files[0].name


@dataclass
class CacheUsage:
    root: Path
    limit: int | None                           # bytes; None: no limit
    by_kind: dict[str, int] = field(default_factory=dict)
    entries: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


@dataclass
class TrimResult:
    removed: list[CacheEntry] = field(default_factory=list)
    left: int = 0                               # bytes in the trimmed parts afterwards

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


def limit_bytes() -> int | None:
    """The limit from ``$TL_CACHE_LIMIT_GB`` (default 10 GB); 0 or "none" means no limit. A value that is
    not a positive number is ignored (the default applies): a typo must not stop a training."""
    raw = os.environ.get(LIMIT_ENV, "").strip().lower()
    if raw in ("none", "off", "unlimited"):
        return None
    try:
        gb = float(raw) if raw else DEFAULT_LIMIT_GB
    except ValueError:
        gb = DEFAULT_LIMIT_GB
    if gb == 0:
        return None
    if not (math.isfinite(gb) and gb > 0):
        gb = DEFAULT_LIMIT_GB
    return int(min(gb, 1e9) * 1024**3)


def mark_used(*paths: str | Path) -> None:
    """A cache hit: the file's clock says it was just used, so it is the last to go."""
    for p in paths:
        try:
            os.utime(p)
        except OSError:
            pass


def entries(root: str | Path) -> list[CacheEntry]:
    """What the trimmable parts of the cache hold, oldest use first."""
    found: list[CacheEntry] = []
    now = time.time()
    for kind, own in OWN_NAMES.items():
        folder = Path(root) / kind
        groups: dict[str, list[tuple[Path, os.stat_result]]] = {}
        try:
            listing = list(os.scandir(folder))
        except OSError:
            continue
        for item in listing:
            try:
                if item.is_dir(follow_symlinks=False):
                    if kind == "bundles" and _BUNDLE_WORK.fullmatch(item.name):
                        stale = _stale_folder(Path(item.path), now)
                        if stale is not None:
                            found.append(stale)
                    continue
                if not item.is_file(follow_symlinks=False):
                    continue
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            temp = _TEMP.fullmatch(item.name)
            if temp is not None and own.fullmatch(temp.group("name")):
                if now - st.st_mtime < STALE_TEMP_S:   # being written right now
                    continue
                stem = item.name                        # left by a crash: its own entry, old by definition
            elif own.fullmatch(item.name):
                stem = item.name.rsplit(".", 1)[0]     # key.u8 and key.json are one entry
            else:
                continue                                # not a name this app writes: never touched
            groups.setdefault(stem, []).append((Path(item.path), st))
        for files in groups.values():
            found.append(CacheEntry(kind, sorted(p for p, _ in files), sum(st.st_size for _, st in files),
                                    max(st.st_mtime for _, st in files)))
    return sorted(found, key=lambda e: e.last_used)


def _stale_folder(folder: Path, now: float) -> CacheEntry | None:
    """A bundle's work folder that a crash left (older than a day), as one entry; None otherwise."""
    try:
        stats = [p.lstat() for p in folder.rglob("*")] + [folder.lstat()]
    except OSError:
        return None
    newest = max(st.st_mtime for st in stats)
    if now - newest < STALE_TEMP_S:
        return None
    return CacheEntry("bundles", [folder], sum(st.st_size for st in stats if stat.S_ISREG(st.st_mode)), newest)


def usage(root: str | Path) -> CacheUsage:
    u = CacheUsage(Path(root), limit_bytes(), {kind: 0 for kind in KINDS})
    for e in entries(root):
        u.by_kind[e.kind] += e.size
        u.entries += 1
    return u


def trim(root: str | Path, limit: int | None = -1, keep: Iterable[str | Path] = ()) -> TrimResult:
    """Remove the least recently used entries until the trimmable parts fit in ``limit`` bytes (the
    configured limit when not given; None: nothing is removed). Entries used in the last
    :data:`RECENT_S` seconds and the files in ``keep`` stay even if the cache is then over its limit.
    Never raises: a file that cannot be removed is left where it is."""
    limit = limit_bytes() if limit == -1 else limit
    found = entries(root)
    total = sum(e.size for e in found)
    result = TrimResult(left=total)
    if limit is None or total <= limit:
        return result
    kept = {Path(k).resolve() for k in keep}
    recent = time.time() - RECENT_S
    for e in found:
        if result.left <= limit:
            break
        if e.last_used >= recent or any(f.resolve() in kept for f in e.files):
            continue
        if _remove(e):
            result.removed.append(e)
            result.left -= e.size
    return result


def clear(root: str | Path) -> TrimResult:
    """Remove everything in the trimmable parts that is not in use right now (``tl cache --clear``)."""
    found = entries(root)
    result = TrimResult(left=sum(e.size for e in found))
    recent = time.time() - 60
    for e in found:
        if e.last_used < recent and _remove(e):
            result.removed.append(e)
            result.left -= e.size
    return result


def after_write(root: str | Path, *written: str | Path) -> None:
    """Called where the cache grows: keep it under its limit, the new files first of all."""
    try:
        trim(root, keep=written)
    except Exception:  # noqa: BLE001 - the cache is an optimisation: tidying it never fails the work
        pass


def _remove(e: CacheEntry) -> bool:
    # the description first: decoded pictures without their description are a miss, never a wrong hit
    for f in sorted(e.files, key=lambda p: p.suffix != ".json"):
        try:
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f)
            else:
                f.unlink(missing_ok=True)
        except OSError:
            return False
    return True
