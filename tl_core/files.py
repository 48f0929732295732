"""Writing whole files so that a reader never sees half of one, and naming files in messages.

A run folder is read while it is written (the app polls it; a crash or a full disk can stop a
write midway), and caches are shared between runs. Every file tl_core writes in one piece goes
through :func:`atomic_path`: the bytes go to a temporary file next to the target, which replaces
the target only when the write finished; on any error the temporary file is removed and the old
file, if any, is untouched. :func:`save_safetensors_atomic` does the same for tensors and turns
safetensors' own I/O error (which is not an ``OSError``) into one, so every caller's
``except OSError`` also covers a full disk.

Paths can be thousands of characters long (deep folders, long file names): :func:`short_path`
keeps a message about one of them short enough to read.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - type hints only
    import torch


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; it becomes ``target`` when the block ends
    without an error, and is deleted otherwise (the error propagates)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        _remove_quietly(tmp)


def _remove_quietly(path: Path) -> None:
    """Delete a temporary file; a failure here must not hide the error that got us here."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def write_json_atomic(path: str | Path, data: Any) -> None:
    """``data`` as indented, key-sorted JSON (values JSON does not know are written as text)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")


_OS_ERROR_NUMBER = re.compile(r"os error (\d+)")


def save_safetensors_atomic(path: str | Path, tensors: Mapping[str, "torch.Tensor"],
                            metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` as a ``.safetensors`` file at ``path``, whole or not at all.

    safetensors reports a failed write (a full disk, a vanished folder) as ``SafetensorError``,
    which is not an ``OSError``: it is re-raised here as an ``OSError`` with the operating
    system's error number and the target as ``filename``, so that callers handle a full disk in
    one place. Other safetensors errors (a tensor it cannot store) propagate unchanged.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            save_file(dict(tensors), str(tmp), metadata=metadata)
        except SafetensorError as err:
            raise _as_os_error(err, path) from err
    return path


def _as_os_error(err: Exception, path: Path) -> Exception:
    """``OSError`` for a safetensors I/O failure ("I/O error: No space left on device (os error
    28)"); ``err`` itself for anything else."""
    text = str(err)
    found = _OS_ERROR_NUMBER.search(text)
    if found is None and "I/O error" not in text:
        return err
    number = int(found.group(1)) if found else errno.EIO
    return OSError(number, os.strerror(number), str(path))


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the user's quota) is full."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


# -- paths in messages ------------------------------------------------------------------------------

SHORT_PATH_CHARS = 120


def short_path(path: str | os.PathLike, limit: int = SHORT_PATH_CHARS) -> str:
    """``path`` for a message, at most about ``limit`` characters: the start and the end (which
    name the place and the file) with "…" for what is left out."""
    text = os.fspath(path) if not isinstance(path, str) else path
    if len(text) <= limit:
        return text
    head = max(limit // 3, 1)
    tail = max(limit - head - 1, 1)
    return f"{text[:head]}…{text[-tail:]}"


def size_text(n: int | None) -> str:
    """A number of bytes as people read it: "1.5 GB", "320.0 KB", "12 bytes" (binary units)."""
    n = n or 0
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"
