"""Writing whole files so that a reader never sees half of one.

A run folder is read while it is written (the app polls it; a crash or a full disk can stop a
write midway), and caches are shared between runs. Every file tl_core writes in one piece goes
through :func:`atomic_path`: the bytes go to a temporary file next to the target, which replaces
the target only when the write finished; on any error the temporary file is removed and the old
file, if any, is untouched.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """``data`` as indented, key-sorted JSON (values JSON does not know are written as text)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
