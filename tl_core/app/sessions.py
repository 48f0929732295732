"""One set of choices per browser session, so a new visitor starts clean and nobody inherits the
previous person's pictures and settings.

A browser session is named by a random token kept in the page address (``?session=...``): a refresh
or a server restart keeps the address, so the session finds its own choices again in
``workspace/sessions/<token>/ui_state.json``; a new tab or another browser gets a new token and a
clean start, with "Continue where you left off" offered for the last project worked on here.

On a classroom server (:mod:`tl_core.app.classroom`) the session's folder is the student's whole
workspace (runs, uploads, experiments) and holds ``admission.json`` once the class code was entered;
"Continue where you left off" is never offered there: the newest other session is another student's.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import time
from pathlib import Path

from tl_core.app.state import UI_STATE_FILE, UIState, read_ui_state, state_from_runs, write_ui_state
from tl_core.app.workspace import SESSIONS_DIR, classroom_mode, workspace_dir

SESSION_PARAM = "session"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{6,64}")


def new_token() -> str:
    """A fresh session name: 72 random bits, so one session cannot guess another's address."""
    return secrets.token_urlsafe(9)


def valid_token(value: object) -> bool:
    """Only plain tokens name a folder: nothing from the address can reach outside ``sessions/``."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def session_state_path(token: str) -> Path:
    if not valid_token(token):
        raise ValueError(f"not a session token: {token!r}")
    return workspace_dir() / SESSIONS_DIR / token / UI_STATE_FILE


def load_session(token: str) -> UIState:
    """This session's choices, or a clean start when it has none yet."""
    return read_ui_state(session_state_path(token)) or UIState()


def save_session(token: str, state: UIState) -> None:
    write_ui_state(session_state_path(token), state)


@dataclasses.dataclass
class LastProject:
    """What "Continue where you left off" offers: the newest other session that chose pictures."""

    state: UIState
    saved_at: float
    token: str | None        # None: rebuilt from the runs folder or an older app's single state file

    @property
    def data_name(self) -> str:
        root = Path(self.state.data_root or "")
        return root.parent.name if root.name in {"train", "data"} and root.parent.name else root.name

    def age_words(self, now: float | None = None) -> str:
        seconds = max(0.0, (time.time() if now is None else now) - self.saved_at)
        for limit, unit, size in ((3600, "minute", 60), (86400, "hour", 3600), (float("inf"), "day", 86400)):
            if seconds < limit:
                count = max(1, int(seconds // size))
                return f"{count} {unit}{'s' if count > 1 else ''} ago"
        return ""


def _saved_states(exclude: str | None) -> list[tuple[float, str | None, Path]]:
    root = workspace_dir()
    found = []
    for path in (root / SESSIONS_DIR).glob(f"*/{UI_STATE_FILE}"):
        token = path.parent.name
        if token == exclude or not valid_token(token):
            continue
        try:
            found.append((path.stat().st_mtime, token, path))
        except OSError:
            continue
    legacy = root / UI_STATE_FILE  # written by versions before per-session choices
    if legacy.is_file():
        found.append((legacy.stat().st_mtime, None, legacy))
    return sorted(found, key=lambda item: item[0], reverse=True)


def last_project(exclude: str | None = None) -> LastProject | None:
    """The newest saved choices of another session whose pictures are still here; else the newest
    run's choices (a workspace that was lost or never saved); None on a fresh computer, and always None
    on a classroom server (another session there is another student)."""
    if classroom_mode():
        return None
    for saved_at, token, path in _saved_states(exclude):
        state = read_ui_state(path)
        if state is not None and state.data_root:
            return LastProject(state=state, saved_at=saved_at, token=token)
    state = state_from_runs()
    if state.data_root:
        saved_at = time.time()
        if state.run_dir:
            try:
                saved_at = (Path(state.run_dir) / "config.json").stat().st_mtime
            except OSError:
                pass
        return LastProject(state=state, saved_at=saved_at, token=None)
    return None
