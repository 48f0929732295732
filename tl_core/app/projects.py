"""Home's "Save this project" and "Open a project": the app side of :mod:`tl_core.projects`.

Saving packs the chosen data folder, every run trained on it and the user's choices into one
``.tlproj`` file for the browser to download; opening unpacks an uploaded file into the workspace
(never over anything that exists) and returns the choices that point at the unpacked copy."""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import tl_core
from tl_core.app.state import UIState
from tl_core.app.workspace import runs_dir, user_workspace
from tl_core.errors import DataError
from tl_core.projects import runs_of_data


def project_bytes(state: UIState, runs_folder: str | Path | None = None, set_aside: bool = True) -> bytes:
    """The project of ``state`` (its data folder, the runs trained on it in ``runs_folder``, by default
    the user's runs folder, its choices, the pictures set aside unless ``set_aside`` is False) as one file."""
    if not state.data_root or not Path(state.data_root).is_dir():
        raise DataError("Choose your pictures on the Data page first: a project is built around them.")
    runs = runs_of_data(state.data_root, runs_folder if runs_folder is not None else runs_dir())
    with tempfile.TemporaryDirectory(prefix="tl-project-") as tmp:
        path = tl_core.save_project(Path(tmp) / Path(state.data_root).name, state.data_root, runs,
                                    choices=state.to_dict(), set_aside=set_aside)
        return path.read_bytes()


def open_uploaded_project(name: str, data: bytes) -> tuple[UIState, tl_core.projects.OpenedProject]:
    """Unpack an uploaded project into ``projects/`` of the user's workspace (a classroom student's
    own) and return the choices to continue with (the saved ones, pointed at the unpacked pictures and
    runs) and where it went."""
    from tl_core.app.classroom import check_upload

    check_upload(len(data))
    projects = user_workspace() / "projects"
    projects.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tl-upload-", dir=projects) as tmp:
        upload = Path(tmp) / (Path(name).name or "project.tlproj")
        upload.write_bytes(data)
        opened = tl_core.open_project(upload, projects)
    # the runs join the app's runs folder, where every page lists them (a new name if one is taken)
    moved = []
    for run in sorted(opened.run_dirs, key=lambda p: p.name):
        target = runs_dir() / run.name
        n = 2
        while target.exists():
            target = runs_dir() / f"{run.name}-{n}"
            n += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run), str(target))
        moved.append(target)
    opened = dataclasses.replace(opened, run_dirs=moved)
    state = UIState.from_dict(opened.choices or {})
    state.data_root, state.data_source = str(opened.data_root), "project"
    state.run_dir = str(moved[-1]) if moved else None
    return state, opened


__all__ = ["project_bytes", "open_uploaded_project"]
