"""Home's Save / Open project, headless: a project saved from the app's choices opens in another
workspace with its pictures, its runs in the runs folder, the same choices and the same answers."""
from __future__ import annotations

import shutil

import pytest

import tl_core
from tl_core.app.projects import open_uploaded_project, project_bytes
from tl_core.app.state import UIState
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import DataError, UploadError
from tl_core.runs import list_runs


@pytest.fixture
def trained(fmnist_small, tmp_path, monkeypatch):
    data = tmp_path / "clothes"
    shutil.copytree(fmnist_small, data)
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    config = RunConfig(data=DataConfig(root=str(data)), model=ModelConfig("tf_efficientnet_lite0", image_size=64),
                       freeze=FreezeConfig(preset="head"), train=TrainConfig(epochs=1))
    result = tl_core.train(config, tmp_path / "runs")
    assert result.status == "finished"
    state = UIState(data_root=str(data), data_source="path", val_fraction=0.2, run_dir=result.run_dir,
                    train={"epochs": 1})
    return state, data, result.run_dir


def test_project_round_trip_from_the_app(trained, tmp_path, monkeypatch):
    state, data, run_dir = trained
    picture = sorted(data.rglob("*.png"))[0]
    before = list(tl_core.predict(run_dir, [picture]))[0]
    keep = tmp_path / "picture.png"
    shutil.copy(picture, keep)
    blob = project_bytes(state)
    # another computer: the pictures, the runs and the workspace are gone
    shutil.rmtree(data)
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "other-runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "other-workspace"))
    new_state, opened = open_uploaded_project("clothes.tlproj", blob)
    assert new_state.data_source == "project" and new_state.train == {"epochs": 1}
    assert new_state.data_root == str(opened.data_root) and opened.data_root.is_dir()
    (listed,) = list_runs(tmp_path / "other-runs")
    assert new_state.run_dir == listed["path"] and listed["state"] == "finished"
    after = list(tl_core.predict(new_state.run_dir, [keep]))[0]
    assert after["label"] == before["label"] and after["probability"] == pytest.approx(before["probability"],
                                                                                        abs=1e-5)
    # opening the same file again never overwrites: a second copy with new names
    again, second = open_uploaded_project("clothes.tlproj", blob)
    assert second.data_root != opened.data_root and again.run_dir != new_state.run_dir


def test_project_bad_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    with pytest.raises(DataError, match="Data page"):
        project_bytes(UIState())
    with pytest.raises(UploadError):
        open_uploaded_project("evil.tlproj", b"not a project at all")
    assert not any((tmp_path / "workspace" / "projects").iterdir())   # nothing left behind


def test_no_local_path_travels_in_a_project_file(trained, tmp_path):
    """A project is made to be handed to other people: the user's folders (their name, their layout)
    must not be inside it, in any member, and it must still open with the same answers."""
    import io
    import zipfile

    state, data, run_dir = trained
    blob = project_bytes(state)
    local = [str(tmp_path), str(data), str(run_dir)]
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for name in zf.namelist():
            if name.endswith((".json", ".jsonl")):
                text = zf.read(name).decode("utf-8")
                assert not any(path in text for path in local), (name, [p for p in local if p in text])
    new_state, opened = open_uploaded_project("clothes.tlproj", blob)
    report = tl_core.evaluate(new_state.run_dir)             # validation pictures found in the new place
    assert report.n > 0 and not report.skipped
