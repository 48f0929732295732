"""Where the app keeps the user's things on this computer: the workspace (uploads, remembered
choices) and the runs folder, plus the fingerprints that tell when a folder or an upload changed.

On a laptop (``make run``) there is one user: one runs folder (``$TL_RUNS_DIR`` or ``./runs``) and
uploads under the workspace. In classroom mode (``make classroom``, ``TL_CLASSROOM=1``) every browser
session that entered the class code has a workspace of its own, ``workspace/sessions/<token>/`` with
``runs/``, ``uploads/``, ``experiments/`` and its choices: :func:`runs_dir`, :func:`new_upload_dir` and
:func:`user_workspace` answer for the session whose page is running (the app tells this module how to
find it with :func:`set_session_source`) and refuse, with a plain :class:`ClassroomError`, when no
admitted session is known: nothing falls back to a folder another student uses.
"""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from tl_core.errors import TransferLabError
from tl_core.runs import default_runs_dir

UPLOAD_LIMIT_MB_DEFAULT = 500
CLASSROOM_ENV = "TL_CLASSROOM"
SESSIONS_DIR = "sessions"


class ClassroomError(TransferLabError):
    """Something a classroom server refuses: a wrong code, another student's run, a limit reached."""


def workspace_dir() -> Path:
    """``$TL_WORKSPACE`` or ``./workspace``: uploads and the remembered choices live here."""
    root = Path(os.environ.get("TL_WORKSPACE") or "workspace").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def classroom_mode() -> bool:
    """True on a classroom server (``make classroom`` sets ``TL_CLASSROOM=1``)."""
    return os.environ.get(CLASSROOM_ENV, "").strip().lower() in ("1", "on", "yes", "true")


_SESSION_SOURCE: list[Callable[[], str | None]] = []


def set_session_source(source: Callable[[], str | None] | None) -> None:
    """How to find the admitted session of the page running now (the app's glue registers one that
    reads Streamlit's session state; tests pass a lambda). None forgets it."""
    _SESSION_SOURCE[:] = [source] if source is not None else []


def current_session() -> str | None:
    """The admitted session token of the page running now; None outside classroom mode, outside a
    page (a background thread) or before the class code was entered."""
    if not classroom_mode() or not _SESSION_SOURCE:
        return None
    try:
        token = _SESSION_SOURCE[0]()
    except Exception:  # noqa: BLE001 - no session is the safe answer
        return None
    return token or None


def session_root(token: str) -> Path:
    """``workspace/sessions/<token>/``: one browser session's folder (not created here)."""
    from tl_core.app.sessions import valid_token

    if not valid_token(token):
        raise ClassroomError("This browser session has no valid name. Open the app's address again.")
    return workspace_dir() / SESSIONS_DIR / token


def user_workspace() -> Path:
    """Where this user's things go: the whole workspace on a laptop, the session's own folder on a
    classroom server (created on first use). Refuses when no admitted session is known."""
    if not classroom_mode():
        return workspace_dir()
    token = current_session()
    if token is None:
        raise ClassroomError("Enter the class code first: on this classroom server everything belongs to a "
                             "student who entered it.")
    root = session_root(token)
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_dir() -> Path:
    """The runs this user sees: ``$TL_RUNS_DIR`` (or ``./runs``) on a laptop, the session's own
    ``runs/`` on a classroom server."""
    if not classroom_mode():
        return default_runs_dir()
    return user_workspace() / "runs"


def owns_run(run_dir: str | Path | None) -> bool:
    """Whether this user may open ``run_dir``: always on a laptop; on a classroom server only a run
    inside the session's own runs folder (a path typed, remembered or guessed elsewhere reaches nothing)."""
    if not run_dir:
        return False
    if not classroom_mode():
        return True
    try:
        mine = runs_dir().resolve()
        real = Path(run_dir).resolve()
    except (ClassroomError, OSError):
        return False
    return real.parent == mine


def check_owns_run(run_dir: str | Path) -> Path:
    """``run_dir`` when this user may open it, else a plain :class:`ClassroomError`."""
    if not owns_run(run_dir):
        raise ClassroomError("This run is not yours: on this classroom server each student sees only their own "
                             "runs.")
    return Path(run_dir)


def new_upload_dir(kind: str = "upload") -> Path:
    """A fresh (not yet created) folder for one upload: ``<user workspace>/uploads/<time>-<kind>-<token>``
    (the camera's pictures, the Data page's folders and zips)."""
    parent = user_workspace() / "uploads"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"


def upload_limit_mb(config_path: str | Path | None = None) -> int:
    """``server.maxUploadSize`` from ``.streamlit/config.toml`` (500 MB when not set), or the per-student
    limit ``TL_LIMIT_UPLOAD_MB`` when that is smaller (see :mod:`tl_core.app.classroom`)."""
    from tl_core.app.classroom import limits

    server = _server_upload_limit_mb(config_path)
    student = limits().upload_mb
    return min(server, student) if student else server


def _server_upload_limit_mb(config_path: str | Path | None = None) -> int:
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
    """The policy for this server: ``TL_FOLDER_PATHS`` when set, else off in classroom mode, on for a
    server that only this computer can reach and off for one the network can reach."""
    setting = os.environ.get("TL_FOLDER_PATHS", "").strip()
    if not setting and classroom_mode():  # a room full of visitors, whatever address it listens on
        return FolderAccess(False)
    if setting.lower() in ("on", "any", "1", "yes"):
        return FolderAccess(True)
    if setting.lower() in ("off", "0", "no", "none"):
        return FolderAccess(False)
    if setting:
        roots = tuple(Path(p).expanduser().resolve() for p in setting.split(os.pathsep) if p.strip())
        return FolderAccess(bool(roots), roots)
    return FolderAccess((server_address or "").strip() in LOCAL_ADDRESSES)
