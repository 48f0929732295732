"""Where the app keeps the user's things on this computer: the workspace (uploads, remembered
choices) and the runs folder, plus the fingerprints that tell when a folder or an upload changed."""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
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


# -- "A folder on this computer": who may type a path the server then reads -------------------------

LOCAL_ADDRESSES = {"", "127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class FolderAccess:
    """Whether the Data page may use a folder path typed in the browser, and under which folders.

    On a laptop (the server listens on this computer only) the person typing is the owner: any
    folder they can read. On a shared server (a classroom, a team) a typed path would let every
    visitor browse the server's disk, so it is off unless ``TL_FOLDER_PATHS`` names the folders
    allowed (separated like PATH), or says ``on``/``off``."""

    enabled: bool
    roots: tuple[Path, ...] = ()     # empty while enabled: any folder

    def check(self, typed: str) -> Path:
        """The folder a typed path names, or a plain :class:`DataError` saying why it cannot be used."""
        from tl_core.errors import DataError

        if not self.enabled:
            raise DataError("Typing a folder path is switched off on this shared server. Upload the pictures "
                            "as a folder or a .zip instead.")
        text = (typed or "").strip()
        path = Path(text).expanduser() if text else None
        if path is None or not path.is_dir():
            raise DataError(f"There is no folder at '{text[:200]}'. Check the spelling, or copy the path from your "
                            "file manager.")
        real = path.resolve()
        if self.roots and not any(real == root or root in real.parents for root in self.roots):
            allowed = ", ".join(f"'{r}'" for r in self.roots)
            raise DataError(f"On this server, pictures can only be used from inside {allowed}. Put your folder "
                            "there, or upload it as a folder or a .zip.")
        return real


def folder_access(server_address: str | None) -> FolderAccess:
    """The policy for this server: ``TL_FOLDER_PATHS`` when set, else on for a server that only this
    computer can reach and off for one the network can reach."""
    setting = os.environ.get("TL_FOLDER_PATHS", "").strip()
    if setting.lower() in ("on", "any", "1", "yes"):
        return FolderAccess(True)
    if setting.lower() in ("off", "0", "no", "none"):
        return FolderAccess(False)
    if setting:
        roots = tuple(Path(p).expanduser().resolve() for p in setting.split(os.pathsep) if p.strip())
        return FolderAccess(bool(roots), roots)
    return FolderAccess((server_address or "").strip() in LOCAL_ADDRESSES)
