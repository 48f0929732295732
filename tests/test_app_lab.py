"""The Lab page (pages/7_Lab.py) driven headless with AppTest: choose an experiment, start it in the
background, Stop it, and find every experiment drawn again from its folder after a restart (a new
AppTest is a new server run: nothing but the folders carries over). Tiny trainings: the bundled
sample, 'head' preset, one pass."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.app import lab_jobs
from tl_core.data.sample import sample_dir
from tl_core.lab import ExperimentFolder, list_experiments

ROOT = Path(__file__).resolve().parent.parent
LAB = "pages/7_Lab.py"
SESSION = "lab-session"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.delenv("TL_EXPERIMENTS_DIR", raising=False)
    yield tmp_path
    lab_jobs.stop_all(120)


def choose_sample(workspace: Path) -> None:
    folder = workspace / "sessions" / SESSION
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ui_state.json").write_text(json.dumps({"data_root": str(sample_dir()), "data_source": "sample",
                                                      "val_fraction": 0.2}), encoding="utf-8")


def lab_page(presenting: bool = False) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["session"] = SESSION
    if presenting:
        at.session_state["tl_presentation_on"] = True
    at.switch_page(LAB)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_for_experiment(timeout: float = 600) -> None:
    job = lab_jobs.active_experiment()
    if job is not None:
        job.thread.join(timeout)
        assert not job.thread.is_alive(), "the experiment did not end in time"


def test_without_pictures_the_page_points_to_the_data_page(env):
    at = lab_page()
    assert any("Data" in i.value for i in at.info)
    assert "lab_start" not in [b.key for b in at.button]


def test_every_experiment_has_its_settings_and_start(env):
    choose_sample(env / "workspace")
    at = lab_page()
    assert at.radio(key="lab_kind").options == ["Pretrained vs from scratch", "How many pictures do I need?",
                                                "Which layers should learn?", "Which model suits my pictures?"]
    at.radio(key="lab_kind").set_value("data-size").run()
    assert at.multiselect(key="lab_fractions").value == [0.1, 0.25, 0.5, 1.0]
    assert at.number_input(key="lab_repeats").value == 3
    at.radio(key="lab_kind").set_value("layers").run()
    assert at.multiselect(key="lab_presets").value == ["head", "last:1", "last:2", "none"]
    at.radio(key="lab_kind").set_value("models").run()
    assert "tf_efficientnet_lite0" in at.multiselect(key="lab_models").value
    assert not at.exception and not at.button(key="lab_start").disabled


def test_run_an_experiment_then_find_it_drawn_after_a_restart(env):
    choose_sample(env / "workspace")
    at = lab_page()
    at.radio(key="lab_kind").set_value("data-size").run()
    at.multiselect(key="lab_fractions").set_value([0.5, 1.0])
    at.number_input(key="lab_repeats").set_value(1)
    at.number_input(key="lab_epochs_data-size").set_value(1)
    at.run()
    at.button(key="lab_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = lab_jobs.active_experiment()
    assert job is not None and job.kind == "data-size"
    assert Path(job.path).parent == env / "workspace" / "experiments"
    wait_for_experiment()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("pictures per category" in s.value for s in at.success), [s.value for s in at.success]
    assert len(at.get("plotly_chart")) >= 1 and len(at.dataframe) >= 1
    assert any("Category by category" in m.value for m in at.markdown)
    assert any(m.value.startswith("- **bag**: ") for m in at.markdown)

    # a restart: a new server run finds the experiment in its folder and draws it again, projector-ready
    [row] = list_experiments(env / "workspace" / "experiments")
    assert row["state"] == "finished"
    again = lab_page(presenting=True)
    assert again.selectbox(key="lab_pick").value == row["path"]
    assert any("pictures per category" in s.value for s in again.success)
    chart = json.loads(again.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["height"] == 560 and chart["layout"]["font"]["size"] == 20
    assert chart["layout"]["xaxis"]["title"]["text"] == "pictures per category"
    assert chart["layout"]["yaxis"]["title"]["text"] == "correct on pictures it never saw"


def test_stop_keeps_the_experiment_and_says_so(env):
    choose_sample(env / "workspace")
    at = lab_page()
    at.radio(key="lab_kind").set_value("layers").run()
    at.multiselect(key="lab_presets").set_value(["head", "none"])
    at.run()
    at.button(key="lab_start").click().run()
    job = lab_jobs.active_experiment()
    assert job is not None
    at.run()   # the page as it is drawn while the experiment runs (the bar, the Stop button)
    assert any(s.value.startswith("Running: Which layers") for s in at.subheader)
    at.button(key="lab_stop").click().run()
    assert not at.exception, [e.value for e in at.exception]
    wait_for_experiment()
    status = ExperimentFolder(job.path).status()
    assert status["state"] == "stopped", status
    at.run()
    assert any("Stopped by you" in i.value for i in at.info), [i.value for i in at.info]
