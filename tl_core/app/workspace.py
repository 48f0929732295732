"""Where the app keeps the user's things on this computer: the workspace (uploads, remembered
choices) and the runs folder, plus the fingerprints that tell when a folder or an upload changed."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

from tl_core.runs import default_runs_dir

UPLOAD_LIMIT_MB_DEFAULT = 500


def workspace_dir() -> Path:
    """``$TL_WORKSPACE`` or ``./workspace``: uploads and the remembered choices live here."""
    root = Path(os.environ.get("TL_WORKSPACE") or "workspace").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_dir() -> Path:
    return default_runs_dir()


def new_upload_dir(kind: str = "upload") -> Path:
    """A fresh (not yet created) folder for one upload: ``workspace/uploads/<time>-<kind>-<token>``."""
    parent = workspace_dir() / "uploads"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"


def upload_limit_mb(config_path: str | Path | None = None) -> int:
    """``server.maxUploadSize`` from ``.streamlit/config.toml`` (500 MB when not set)."""
    candidates = [Path(config_path)] if config_path else [Path(".streamlit/config.toml"),
                                                          Path(__file__).resolve().parents[2] / ".streamlit"
                                                          / "config.toml"]
    for path in candidates:
        try:
            import tomllib

            with open(path, "rb") as fh:
                value = tomllib.load(fh).get("server", {}).get("maxUploadSize")
            if value:
                return int(value)
        except (OSError, ValueError, ImportError):
            continue
    return UPLOAD_LIMIT_MB_DEFAULT


def folder_fingerprint(root: str | Path) -> tuple[int, int, float]:
    """(files, total bytes, newest mtime) of a folder tree: changes when its content changes."""
    n = size = 0
    newest = 0.0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            n += 1
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return n, size, newest


def uploaded_signature(files: Iterable[Any]) -> str:
    """A stable id for what is in a file uploader, so a rerun does not save it again."""
    parts = sorted(f"{getattr(f, 'file_id', '')}:{getattr(f, 'name', '')}:{getattr(f, 'size', '')}"
                   for f in files)
    return str(hash(tuple(parts)))
