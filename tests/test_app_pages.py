"""The Streamlit pages, driven headless with ``streamlit.testing.v1.AppTest``.

Every page must render without an exception with and without data and runs, and its main
controls must do what they say. Training runs for real (bundled sample, 'head' preset, one
epoch; the frozen features are cached across the session, so later trainings are quick).
"""
from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.app import jobs
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.runs import RunFolder, list_runs
from tl_core.data.sample import sample_dir

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = ["pages/1_Data.py", "pages/2_Model.py", "pages/3_Layers.py", "pages/4_Train.py", "pages/5_Results.py",
         "pages/6_Try_and_export.py"]
TIMEOUT = 300


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Runs and workspace in a fresh temporary folder (caches shared, see conftest)."""
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield tmp_path
    _stop_all()


def _stop_all(timeout: float = 120) -> None:
    job = jobs.active_job()
    if job is not None:
        job.stop_event.set()
        job.thread.join(timeout)


def _wait_job(timeout: float = 240) -> None:
    job = jobs.active_job()
    if job is not None:
        job.thread.join(timeout)
        assert not job.thread.is_alive(), "training did not end in time"


TEST_SESSION = "test-session"   # the browser session the tests' AppTests belong to (?session=...)


def app_test() -> AppTest:
    """An AppTest for the browser session whose choices :func:`remember` writes."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["session"] = TEST_SESSION
    return at


def app(page: str | None = None) -> AppTest:
    at = app_test()
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def remember(workspace: Path, **choices) -> None:
    """Write the remembered choices the way the app does, for the tests' browser session."""
    folder = workspace / "sessions" / TEST_SESSION
    folder.mkdir(parents=True, exist_ok=True)
    base = {"data_root": str(sample_dir()), "data_source": "sample", "val_fraction": 0.2, "model_name": None,
            "freeze": {"preset": "head", "frozen_groups": None, "layer_lr_decay": 1.0}, "train": {}, "run_dir": None}
    base.update(choices)
    (folder / "ui_state.json").write_text(json.dumps(base), encoding="utf-8")


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "success", "info", "warning", "error", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [str(e.proto.label) for e in at.get("page_link")]
    return "\n".join(parts)


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


def ui_state(at: AppTest):
    return at.session_state["tl_ui"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One finished run on the sample (1 epoch, head), in its own runs folder."""
    from tl_core.training.loop import train_run

    runs = tmp_path_factory.mktemp("trained-runs")
    config = RunConfig(data=DataConfig(root=str(sample_dir())), model=ModelConfig(weights="offline"),
                       freeze=FreezeConfig(preset="head"), train=TrainConfig(epochs=1, seed=0))
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's per-test dirs
        mp.setenv("TL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tl-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = train_run(config, runs)
    assert result.status == "finished", result.message
    return Path(result.run_dir)


def _use_trained(env_dir: Path, trained: Path, monkeypatch) -> None:
    monkeypatch.setenv("TL_RUNS_DIR", str(trained.parent))
    remember(env_dir / "workspace", run_dir=str(trained))


# -- rendering -------------------------------------------------------------------------------------

def test_home_renders_with_hardware_and_steps(env):
    at = app()
    body = texts(at)
    assert "Transfer learning" in body
    assert "CPU" in body or "Graphics card" in body or "Apple" in body
    for step in ("1 · Data", "4 · Train", "6 · Try & export"):
        assert step in body
    assert at.button(key="home_sample").label == "Try it with the sample data"


def test_home_says_what_the_cache_takes_and_frees_it(env, monkeypatch, tmp_path):
    """Once the cache holds more than half a gigabyte, Home says so and one button frees it (a sparse file
    stands for a gigabyte of decoded pictures: no disk is used)."""
    import os
    import time

    cache = tmp_path / "cache"
    monkeypatch.setenv("TL_CACHE_DIR", str(cache))
    (cache / "decoded").mkdir(parents=True)
    old = cache / "decoded" / f"{'a' * 32}.u8"   # named as the app names its files
    with open(old, "wb") as fh:
        fh.truncate(1024**3)
    t = time.time() - 3600
    os.utime(old, (t, t))
    at = app()
    assert "**1.0 GB** of disk, and never more than 10.0 GB" in texts(at)
    at.button(key="home_clear_cache").click().run()
    assert not at.exception and not old.exists()
    assert not [b for b in at.button if b.key == "home_clear_cache"]   # nothing worth a sentence now


def test_home_asks_before_set_aside_pictures_leave_in_a_project(env, fmnist_small, tmp_path):
    """A picture may have been set aside because it should not be shared: Home's Save offers to leave
    the set-aside pictures out (only when there are some)."""
    import shutil

    from tl_core.data import fixes

    data = tmp_path / "clothes"
    shutil.copytree(fmnist_small, data)
    remember(env / "workspace", data_root=str(data), data_source="path")
    assert not [c for c in app().checkbox if c.key == "home_project_set_aside"]
    fixes.set_aside(data, sorted((data / "bag").iterdir())[0])
    box = app().checkbox(key="home_project_set_aside")
    assert box.value is True and box.label == "Include the 1 picture(s) you set aside"


def test_home_says_nothing_of_a_small_cache(env, monkeypatch, tmp_path):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    at = app()
    assert not [b for b in at.button if b.key == "home_clear_cache"] and "of disk" not in texts(at)


def test_a_new_browser_session_starts_clean_and_can_continue_the_last_project(env):
    """Someone else's choices are not inherited; "Continue where you left off" brings them back."""
    remember(env / "workspace", model_name="resnet18", val_fraction=0.3)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)   # a new tab: no ?session= in the address
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert ui_state(at).data_root is None and ui_state(at).model_name is None
    token = at.query_params["session"][0] if isinstance(at.query_params["session"], list) else at.query_params["session"]
    assert token and token != TEST_SESSION, "the new session gets its own name in the address"
    assert f"the pictures in **{sample_dir().name}**" in texts(at)
    at.button(key="home_continue").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ui_state(at).data_root == str(sample_dir()) and ui_state(at).model_name == "resnet18"
    assert any(t.value == "Data" for t in at.title)
    mine = json.loads((env / "workspace" / "sessions" / token / "ui_state.json").read_text())
    assert mine["model_name"] == "resnet18" and mine["val_fraction"] == pytest.approx(0.3)


def test_home_offers_no_continue_on_a_fresh_computer_or_once_data_is_chosen(env):
    at = app()
    assert not [b for b in at.button if b.key == "home_continue"]
    remember(env / "workspace")
    at = app()
    assert ui_state(at).data_root == str(sample_dir())
    assert not [b for b in at.button if b.key == "home_continue"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_data_or_runs(env, page):
    at = app(page)
    assert not at.error, [e.value for e in at.error]


def test_sample_button_sets_data_folder_and_moves_on(env):
    at = app()
    at.button(key="home_sample").click().run()
    assert not at.exception
    assert ui_state(at).data_root == str(sample_dir())
    assert any(t.value == "Data" for t in at.title), "the sample button should move on to the Data page"
    saved = json.loads((env / "workspace" / "sessions" / TEST_SESSION / "ui_state.json").read_text())
    assert saved["data_root"] == str(sample_dir())


# -- Data ------------------------------------------------------------------------------------------

def test_data_page_shows_classes_counts_examples_and_split(env):
    remember(env / "workspace")
    at = app("pages/1_Data.py")
    assert metric(at, "Pictures") == "200"
    assert metric(at, "Categories") == "5"
    body = texts(at)
    for c in ("bag", "sandal", "sneaker", "t-shirt", "trouser"):
        assert f"**{c}** · 40 pictures" in body
    assert len(at.get("image")) >= 5  # a row of examples per class
    assert "500 MB" in body  # the upload limit is stated
    at.slider(key="data_val_pct").set_value(30).run()
    assert not at.exception
    assert ui_state(at).val_fraction == pytest.approx(0.3)
    assert json.loads((env / "workspace" / "sessions" / TEST_SESSION / "ui_state.json").read_text())["val_fraction"] == pytest.approx(0.3)


def _png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_directory_upload_saves_to_workspace_and_uses_first_folder_level_as_class(env):
    files = []
    for c in ("bag", "trouser"):
        for f in sorted((sample_dir() / c).iterdir())[:6]:
            files.append((f"holiday/{c}/{f.name}", _png_bytes(f), "image/png"))
    at = app("pages/1_Data.py")
    at.file_uploader(key="data_upload_dir").set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]
    root = Path(ui_state(at).data_root)
    assert root.is_dir() and str(root).startswith(str(env / "workspace"))
    assert sorted(p.name for p in root.iterdir()) == ["bag", "trouser"]
    assert metric(at, "Categories") == "2"
    assert metric(at, "Pictures") == "12"
    assert "Saved 12 files." in texts(at)


def test_zip_upload_is_unpacked_and_used(env):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c in ("sandal", "sneaker"):
            for f in sorted((sample_dir() / c).iterdir())[:5]:
                zf.write(f, f"shoes/{c}/{f.name}")
    at = app("pages/1_Data.py")
    at.file_uploader(key="data_upload_zip").set_value(("shoes.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    root = Path(ui_state(at).data_root)
    assert sorted(p.name for p in root.iterdir()) == ["sandal", "sneaker"]
    assert metric(at, "Pictures") == "10"


def test_folder_path_good_and_bad(env):
    at = app("pages/1_Data.py")
    at.text_input(key="data_path").set_value(str(env / "does-not-exist")).run()
    at.button(key="data_use_path").click().run()
    assert not at.exception
    assert any("There is no folder" in e.value for e in at.error)
    assert ui_state(at).data_root is None
    at.text_input(key="data_path").set_value(str(sample_dir())).run()
    at.button(key="data_use_path").click().run()
    assert ui_state(at).data_root == str(sample_dir().resolve())
    assert metric(at, "Categories") == "5"


def test_typed_folder_paths_can_be_switched_off_for_a_shared_server(env, monkeypatch):
    monkeypatch.setenv("TL_FOLDER_PATHS", "off")
    at = app("pages/1_Data.py")
    assert not [t for t in at.text_input if t.key == "data_path"]
    assert any("switched off on this shared server" in i.value for i in at.info)


def test_unusable_folder_shows_error_not_traceback(env):
    bad = env / "one-class" / "only"
    bad.mkdir(parents=True)
    for f in sorted((sample_dir() / "bag").iterdir())[:3]:
        (bad / f.name).write_bytes(f.read_bytes())
    remember(env / "workspace", data_root=str(env / "one-class"), data_source="path")
    at = app("pages/1_Data.py")
    assert at.error, "a folder with one category must be explained"
    for page in PAGES[1:4]:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])


def test_data_problems_are_listed_with_their_fix(env):
    messy = env / "messy"
    for c in ("cat", "dog"):
        (messy / c).mkdir(parents=True)
    for f in sorted((sample_dir() / "bag").iterdir()):
        (messy / "cat" / f.name).write_bytes(f.read_bytes())
    for f in sorted((sample_dir() / "sandal").iterdir())[:3]:
        (messy / "dog" / f.name).write_bytes(f.read_bytes())
    first_bag = sorted((sample_dir() / "bag").iterdir())[0]
    (messy / "dog" / "copy.png").write_bytes(first_bag.read_bytes())  # the same picture in two classes
    (messy / "cat" / "broken.jpg").write_text("hello")                 # not a picture
    remember(env / "workspace", data_root=str(messy), data_source="path")
    at = app("pages/1_Data.py")
    boxes = [e.value for e in at.error] + [w.value for w in at.warning]
    assert any("both 'cat' and 'dog'" in b and "What to do" in b for b in boxes), boxes
    assert any("broken.jpg" in b and "What to do" in b for b in boxes), boxes
    assert any("unbalanced" in b for b in boxes), boxes
    assert metric(at, "Problems found") != "0"


# -- Model -----------------------------------------------------------------------------------------

def test_model_page_lists_catalogue_recommends_and_chooses(env, monkeypatch):
    import tl_core.app.timing as timing
    import tl_core.training.estimate as estimate
    from tl_core.models import RECOMMENDED_MODEL, catalogue

    # no background timing of twelve models inside the test process; one fake measurement instead
    monkeypatch.setattr(timing, "measure_in_background", lambda jobs, *a, **k: [])
    monkeypatch.setattr(estimate, "run_history", lambda: [])   # no correction from earlier test runs
    fake = estimate.Measurement(model_name=RECOMMENDED_MODEL, image_size=224, device="cpu", mode="features",
                                prefix_seconds=0.05, train_seconds=0.0001, eval_seconds=0.0001,
                                trainable_params=1, total_params=2, batch=4)
    monkeypatch.setattr(estimate, "cached_forward", lambda name, *a, **k: fake if name == RECOMMENDED_MODEL else None)
    remember(env / "workspace")
    at = app("pages/2_Model.py")
    body = texts(at)
    for info in catalogue():
        assert info.title in body
    assert "Recommended" in body
    assert "ready offline" in body
    # 200 pictures x 0.05 s forward once + decoding: about 10-11 s for the recommended model
    assert "10 passes" in body and ("11 s" in body or "10 s" in body or "12 s" in body)
    assert at.button(key=f"model_pick_{RECOMMENDED_MODEL}").disabled  # already chosen
    at.button(key="model_pick_tf_efficientnet_lite1").click().run()
    assert not at.exception
    assert ui_state(at).model_name == "tf_efficientnet_lite1"
    assert "EfficientNet-Lite1" in " ".join(s.value for s in at.success)


# -- Layers ----------------------------------------------------------------------------------------

@pytest.fixture
def fast_estimates(monkeypatch, tmp_path):
    """Layers times each plan for real; in the tests a fake measurement keeps it instant."""
    import tl_core.training.estimate as estimate

    def fake_measure(model_name, freeze, num_classes, image_size, dev, batch, feature_cache):
        head = freeze.kind == "head" and freeze.frozen_groups is None
        return estimate.Measurement(model_name=model_name, image_size=224, device="cpu",
                                    mode="features" if head else "full", prefix_seconds=0.05 if head else 0.0,
                                    train_seconds=0.0001 if head else 0.15, eval_seconds=0.05,
                                    trainable_params=0, total_params=0, batch=4)

    # the page measures in a background thread and keeps measurements on disk: a fresh cache each test
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "tl-cache"))
    monkeypatch.setattr(estimate, "_measure_uncached", fake_measure)
    estimate.clear_cache()
    yield
    estimate.clear_cache()


def _count(text: str) -> float:
    text = text.strip()
    scale = {"M": 1e6, "k": 1e3}.get(text[-1], 1)
    return float(text.rstrip("Mk ").strip()) * scale


def test_layers_presets_and_toggles_change_trainable_count(env, fast_estimates):
    remember(env / "workspace")
    at = app("pages/3_Layers.py")
    head = _count(metric(at, "Parameters that learn"))
    assert head < 20_000  # just the new classifier (1280 x 5 + 5)
    assert "EfficientNet-Lite0" in texts(at)

    at.radio(key="layers_kind").set_value("none").run()
    assert not at.exception
    everything = _count(metric(at, "Parameters that learn"))
    assert everything > 3e6
    assert ui_state(at).freeze_config().preset == "none"

    at.radio(key="layers_kind").set_value("last").run()
    at.slider(key="layers_last_n").set_value(2).run()
    last2 = _count(metric(at, "Parameters that learn"))
    assert head < last2 < everything
    assert ui_state(at).freeze_config().preset == "last:2"

    # untick one group in the middle: an explicit list overrides the preset
    at.radio(key="layers_kind").set_value("head").run()
    at.toggle(key="layers_learns_stage_3").set_value(True).run()
    assert not at.exception
    fc = ui_state(at).freeze_config()
    assert fc.frozen_groups is not None and "stage_3" not in fc.frozen_groups and "stem" in fc.frozen_groups
    custom = _count(metric(at, "Parameters that learn"))
    assert head < custom < everything
    assert "Custom" in texts(at)
    assert metric(at, "Expected time") not in ("", "–")


# -- Train -----------------------------------------------------------------------------------------

def test_train_start_runs_a_job_to_the_end_and_shows_it(env):
    remember(env / "workspace", train={"epochs": 1})
    at = app("pages/4_Train.py")
    assert at.number_input(key="train_epochs").value == 1
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = jobs.active_job()
    assert job is not None, [e.value for e in at.error]
    assert Path(job.run_dir).parent == env / "runs"
    assert ui_state(at).run_dir == job.run_dir
    cfg = RunFolder.open(job.run_dir).config()
    assert cfg.train.epochs == 1 and cfg.freeze.preset == "head" and cfg.data.root == str(sample_dir())
    _wait_job()
    assert RunFolder(Path(job.run_dir)).state == "finished", RunFolder(Path(job.run_dir)).status()
    at.run()
    assert not at.exception
    assert any("Training finished" in s.value for s in at.success)
    assert metric(at, "Epochs done") == "1 / 1"
    assert len(at.get("plotly_chart")) >= 1


def test_advanced_settings_are_remembered_and_used(env):
    remember(env / "workspace")
    at = app("pages/4_Train.py")
    at.number_input(key="train_epochs").set_value(3).run()
    at.selectbox(key="train_batch_size").set_value(16).run()
    at.checkbox(key="train_auto_lr").set_value(False).run()
    at.number_input(key="train_lr").set_value(0.001).run()
    at.selectbox(key="train_augment").set_value("strong").run()
    at.toggle(key="train_early").set_value(False).run()
    at.selectbox(key="train_balance").set_value("sampler").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    cfg = ui_state(at).train_config()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.augment, cfg.early_stopping_patience, cfg.balance) == \
        (3, 16, 0.001, "strong", None, "sampler")
    # a new session (a refresh) gets the same settings back from disk
    again = app("pages/4_Train.py")
    assert again.number_input(key="train_epochs").value == 3
    assert again.selectbox(key="train_augment").value == "strong"


def _start_slow_run(at: AppTest) -> jobs.Job:
    """Start a run that trains every layer (slow on a CPU) so there is time to stop it."""
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = jobs.active_job()
    assert job is not None, [e.value for e in at.error]
    deadline = time.time() + 180
    while time.time() < deadline and not RunFolder(job.run.path).events(("on_fit_start",)):
        time.sleep(0.5)
    assert job.alive, RunFolder(job.run.path).status()
    return job


def test_stop_stops_the_run(env):
    remember(env / "workspace", freeze={"preset": "none", "frozen_groups": None, "layer_lr_decay": 1.0},
             train={"epochs": 5, "batch_size": 8})
    at = app("pages/4_Train.py")
    job = _start_slow_run(at)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # the All runs table (a fragment redrawn while a run trains) lists the run as running
    states = [list(df.value["State"]) for df in at.dataframe if "State" in df.value.columns]
    assert states and "running" in states[0], states
    assert not at.button(key="train_stop").disabled
    assert at.button(key="train_start").disabled  # one run at a time
    t0 = time.time()
    at.button(key="train_stop").click().run()
    assert not at.exception
    job.thread.join(120)
    assert not job.alive
    assert time.time() - t0 < 120
    assert RunFolder(job.run.path).state == "stopped"
    at.run()
    assert any("Stopped by you" in i.value for i in at.info)


def test_refresh_during_training_reattaches_and_stop_works_from_the_new_session(env):
    remember(env / "workspace", freeze={"preset": "none", "frozen_groups": None, "layer_lr_decay": 1.0},
             train={"epochs": 5, "batch_size": 8})
    first = app("pages/4_Train.py")
    job = _start_slow_run(first)

    # a refresh is a new session: nothing in session_state, only what the server and the disk know
    remember(env / "workspace", run_dir=None)
    second = app("pages/4_Train.py")
    assert ui_state(second).run_dir == job.run_dir
    assert f"`{job.run_dir}`" in texts(second)
    assert "This run" in [s.value for s in second.subheader]
    assert not second.button(key="train_stop").disabled
    second.button(key="train_stop").click().run()
    assert not second.exception
    job.thread.join(120)
    assert RunFolder(job.run.path).state == "stopped"
    # other pages stay usable and see the same run
    second.switch_page("pages/1_Data.py").run()
    assert not second.exception


def test_other_pages_usable_while_training(env):
    remember(env / "workspace", freeze={"preset": "none", "frozen_groups": None, "layer_lr_decay": 1.0},
             train={"epochs": 5, "batch_size": 8})
    at = app("pages/4_Train.py")
    job = _start_slow_run(at)
    for page in ("pages/1_Data.py", "pages/3_Layers.py", "pages/5_Results.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    assert job.alive
    job.stop_event.set()
    job.thread.join(120)


def test_past_runs_listed_after_restart_including_interrupted(env, trained_run, monkeypatch):
    # a run that says "running" but whose process is gone (the server was killed)
    runs = env / "runs"
    ghost = RunFolder.create(RunConfig(data=DataConfig(root=str(sample_dir()))), runs)
    ghost.write_status("running", "Epoch 1 of 10 done.", epoch=1, epochs=10)
    status = json.loads((ghost.path / "status.json").read_text())
    status["pid"] = 999_999_999
    (ghost.path / "status.json").write_text(json.dumps(status))
    import shutil

    shutil.copytree(trained_run, runs / trained_run.name)
    remember(env / "workspace")
    at = app("pages/4_Train.py")
    table = at.dataframe[-1].value
    assert set(table["State"]) == {"finished", "failed"}
    assert len(list_runs(runs)) == 2
    assert trained_run.name in set(table["Run folder"])
    # the Results page offers the runs that have a model, and picking one makes it the current run
    at.switch_page("pages/5_Results.py").run()
    assert not at.exception
    picker = at.selectbox(key="results_run")
    assert picker.options and len(picker.options) == 1  # the interrupted run has no weights
    assert picker.value == str(runs / trained_run.name)
    assert metric(at, "Accuracy").endswith("%")


# -- Results and Try -------------------------------------------------------------------------------

def test_results_page_metrics_confusion_and_cells(env, trained_run, monkeypatch):
    _use_trained(env, trained_run, monkeypatch)
    at = app("pages/5_Results.py")
    assert not at.error, [e.value for e in at.error]
    acc = metric(at, "Accuracy")
    assert acc.endswith("%")
    assert "Confusion matrix" in [s.value for s in at.subheader]
    per_class = at.dataframe[0].value
    assert set(per_class["Category"]) == {"bag", "sandal", "sneaker", "t-shirt", "trouser"}
    assert {"Right when it says so", "Pictures it found", "Overall score"} <= set(per_class.columns)
    assert (trained_run / "eval_val.json").is_file()
    # choose a cell with the select boxes (the fallback for clicking the heat map)
    at.selectbox(key="results_true").set_value("trouser").run()
    at.selectbox(key="results_pred").set_value("trouser").run()
    assert not at.exception
    assert any("of *trouser* that the model called *trouser* (right)" in m.value for m in at.markdown)


def test_try_page_classifies_an_upload_and_offers_downloads(env, trained_run, monkeypatch):
    _use_trained(env, trained_run, monkeypatch)
    at = app("pages/6_Try_and_export.py")
    photo = sorted((sample_dir() / "trouser").iterdir())[-1]
    at.file_uploader(key="try_upload").set_value((photo.name, photo.read_bytes(), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    verdicts = [s.value for s in at.success] + [w.value for w in at.warning]
    assert any("sure" in v for v in verdicts)
    # the threshold moves the "not sure" line
    at.slider(key="try_threshold").set_value(1.0).run()
    assert any("Not sure" in w.value for w in at.warning)
    assert "Download the bundle (.zip)" in {b.label for b in at.get("download_button")}
    assert {"Prepare ONNX (.onnx)", "Prepare TorchScript (.pt)"} <= {b.label for b in at.button}


def test_try_page_prepares_exports_and_explains_a_failed_one(env, trained_run, monkeypatch):
    """ONNX/TorchScript are made (and parity-checked) on 'Prepare'; a failure is our plain message,
    not Streamlit's generic download error, and the page keeps working."""
    _use_trained(env, trained_run, monkeypatch)
    import tl_core.results.export as export
    from tl_core.results.export import ExportError

    def refuse(run_dir):
        raise ExportError("The ONNX file gives different answers from PyTorch (max difference 0.3).")

    monkeypatch.setattr(export, "onnx_bytes", refuse)
    at = app("pages/6_Try_and_export.py")
    at.button(key="try_dl_ts_prepare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Download TorchScript (.pt)" in {b.label for b in at.get("download_button")}
    at.button(key="try_dl_onnx_prepare").click().run()
    assert not at.exception
    assert any("different answers from PyTorch" in e.value for e in at.error)
    labels = {b.label for b in at.get("download_button")}
    assert "Download ONNX (.onnx)" not in labels and "Download TorchScript (.pt)" in labels   # kept


def test_try_page_classifies_a_camera_photo(env, trained_run, monkeypatch):
    """The camera path: a JPEG from the browser's camera goes through the same loading and answer."""
    _use_trained(env, trained_run, monkeypatch)
    import io

    from PIL import Image

    at = app("pages/6_Try_and_export.py")
    at.radio(key="try_source").set_value("Camera").run()
    assert not at.exception
    photo = sorted((sample_dir() / "trouser").iterdir())[-1]
    buf = io.BytesIO()
    Image.open(photo).convert("RGB").resize((640, 480)).save(buf, "JPEG", quality=90)  # a webcam frame
    at.camera_input(key="try_camera").set_value(("camera.jpg", buf.getvalue(), "image/jpeg")).run()
    assert not at.exception, [e.value for e in at.exception]
    verdicts = [s.value for s in at.success] + [w.value for w in at.warning]
    assert any("sure" in v for v in verdicts)
    captions = [c for img in at.get("image") for c in (img.captions or [])]
    assert "camera.jpg" in captions, f"the photo is shown beside the answer: {captions}"


def test_try_page_bad_upload_is_explained(env, trained_run, monkeypatch):
    _use_trained(env, trained_run, monkeypatch)
    at = app("pages/6_Try_and_export.py")
    at.file_uploader(key="try_upload").set_value(("holiday.png", b"this is not a picture", "image/png")).run()
    assert not at.exception
    assert at.error, "a broken picture must give a plain message"


def test_model_without_offline_weights_is_flagged_when_offline(env, monkeypatch):
    import tl_core.app.timing as timing
    from tl_core.models import weights_status

    monkeypatch.setattr(timing, "measure_forward_in_background", lambda names, *a, **k: [])
    if weights_status("resnet50") == "ready":
        pytest.skip("resnet50 weights happen to be in the local cache")
    remember(env / "workspace", model_name="resnet50")
    at = app("pages/2_Model.py")
    assert any("not on this computer" in w.value for w in at.warning)
    assert at.button(key="model_pick_mobilenetv3_small_100").disabled or weights_status("mobilenetv3_small_100") == "ready"


# -- the split actually used -------------------------------------------------------------------------

def _train_val_folder(root: Path, n_train: int = 6, n_val: int = 4, val_classes=("bag", "sandal", "trouser")) -> Path:
    """train/<class>/ and val/<class>/ with real sample pictures (6 + 4 per category by default)."""
    for c in ("bag", "sandal", "trouser"):
        files = sorted((sample_dir() / c).iterdir())
        for split, chosen in (("train", files[:n_train]),
                              ("val", files[n_train:n_train + n_val] if c in val_classes else [])):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (root / split / c / f.name).write_bytes(f.read_bytes())
    return root


def test_data_and_train_pages_state_a_folders_own_split(env):
    root = _train_val_folder(env / "clothes")
    remember(env / "workspace", data_root=str(root), data_source="path", val_fraction=0.3)
    at = app("pages/1_Data.py")
    words = "18 pictures to learn from, 12 to check with (the folder's own val/ folder)"
    body = texts(at)
    assert f"Split used for training: {words}." in body
    assert "own **train/** and **val/** folders" in body and "no percentage is applied" in body
    assert not [s for s in at.slider if s.key == "data_val_pct"], "the percentage does not apply here"
    table = at.dataframe[-1].value
    rows = {r["Category"]: (r["For training"], r["For checking"]) for r in table.to_dict("records")}
    assert rows == {"bag": (6, 4), "sandal": (6, 4), "trouser": (6, 4), "Total": (18, 12)}
    assert "30%" not in body

    at.switch_page("pages/4_Train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(words in c.value for c in at.caption), [c.value for c in at.caption]


def test_data_page_states_a_random_split_and_follows_the_slider(env):
    remember(env / "workspace")
    at = app("pages/1_Data.py")
    assert ("Split used for training: 160 pictures to learn from, 40 to check with (20% kept aside at random)."
            in texts(at))
    at.slider(key="data_val_pct").set_value(30).run()
    assert not at.exception
    body = texts(at)
    assert "140 pictures to learn from, 60 to check with (30% kept aside at random, per category, copies kept " \
           "together)" in body
    table = at.dataframe[-1].value
    assert table.to_dict("records")[-1] == {"Category": "Total", "For training": 140, "For checking": 60}
    at.switch_page("pages/4_Train.py").run()
    assert any("140 pictures to learn from, 60 to check with (30% kept aside at random)" in c.value
               for c in at.caption), [c.value for c in at.caption]


def test_data_page_explains_a_val_folder_missing_a_category_or_empty(env):
    root = _train_val_folder(env / "partial", val_classes=("bag", "sandal"))
    remember(env / "workspace", data_root=str(root), data_source="path")
    at = app("pages/1_Data.py")
    assert any("'trouser' has no pictures in val/" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "18 pictures to learn from, 8 to check with (the folder's own val/ folder)" in texts(at)

    empty = _train_val_folder(env / "empty-val", n_val=0)
    remember(env / "workspace", data_root=str(empty), data_source="path", val_fraction=0.2)
    at = app("pages/1_Data.py")
    assert any("no pictures in a val/ folder" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "15 pictures to learn from, 3 to check with (20% of train/ kept aside at random" in texts(at)
    assert [s for s in at.slider if s.key == "data_val_pct"], "the share applies to train/ here"


def test_results_page_says_where_the_checked_pictures_came_from(env, trained_run, monkeypatch):
    _use_trained(env, trained_run, monkeypatch)
    at = app("pages/5_Results.py")
    n = metric(at, "Pictures checked")
    assert any(f"Checked on {n} pictures (20% kept aside at random, per category, copies kept together); the model "
               "learned from 160 others." in c.value for c in at.caption), [c.value for c in at.caption]


# -- runs a beginner can compare and manage ------------------------------------------------------------

RUNS_TABLE_COLUMNS = ["When", "Title", "Data", "Model", "Layers", "Best accuracy", "Took", "Epochs", "State",
                      "Run folder"]


def _made_run(runs: Path, run_id: str, root: str, model: str, preset: str, created: float, acc: float,
              seconds: float) -> RunFolder:
    """A finished run folder as training leaves it (status and summary), without training."""
    run = RunFolder.create(RunConfig(data=DataConfig(root=root), model=ModelConfig(name=model),
                                     freeze=FreezeConfig(preset=preset), train=TrainConfig(epochs=2)),
                           runs, run_id=run_id)
    run.write_status("running", "Training started.", epoch=0, epochs=2)
    run.write_status("finished", "Training finished.", epoch=2, best_val_accuracy=acc)
    status = json.loads((run.path / "status.json").read_text())
    status.update(created_at=created, started_at=created + 5, finished_at=created + 5 + seconds)
    (run.path / "status.json").write_text(json.dumps(status))
    run.save_summary({"best_val_accuracy": acc, "train_seconds": seconds})
    return run


def _two_runs(env_dir: Path) -> tuple[RunFolder, RunFolder]:
    """An older run on cats (MobileNetV3-Small, classifier only, 2 min) and a newer one on dogs
    (ResNet-18, last 2 groups, 30 s); the sample is the chosen data."""
    cats = _made_run(env_dir / "runs", "cats-run", "/photos/cats", "mobilenetv3_small_100", "head",
                     1_700_000_000, 0.9, 125)
    dogs = _made_run(env_dir / "runs", "dogs-run", "/photos/dogs", "resnet18", "last:2", 1_700_100_000, 0.8, 30)
    remember(env_dir / "workspace")
    return cats, dogs


def _act(at: AppTest, widget) -> AppTest:
    """Click and run, then run once more: a page's st.rerun() is replayed by AppTest under another
    script hash, so the widgets are only clickable again after a plain run."""
    widget.click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _runs_table(at: AppTest):
    return next(df.value for df in at.dataframe if list(df.value.columns) == RUNS_TABLE_COLUMNS)


def _click_table(at: AppTest, rows=(), cells=()) -> None:
    """What the browser sends for a click on a row's checkbox (rows) or on a cell (cells)."""
    at.session_state["train_runs_table"] = {"selection": {"rows": list(rows), "columns": [],
                                                          "cells": [list(c) for c in cells]}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_runs_table_says_data_model_layers_and_time_taken(env):
    _two_runs(env)
    at = app("pages/4_Train.py")
    table = _runs_table(at)
    rows = {r["Run folder"]: r for r in table.to_dict("records")}
    assert list(rows) == ["dogs-run", "cats-run"]  # newest first
    dogs, cats = rows["dogs-run"], rows["cats-run"]
    assert (dogs["Title"], dogs["Data"], dogs["Model"], dogs["Layers"], dogs["Best accuracy"], dogs["Took"],
            dogs["Epochs"], dogs["State"]) == ("dogs", "dogs", "ResNet-18", "last 2 groups", "80.0%", "30 s",
                                               "2 / 2", "finished")
    assert (cats["Data"], cats["Model"], cats["Layers"], cats["Took"]) == \
        ("cats", "MobileNetV3-Small", "new classifier only", "2 min")
    assert dogs["When"] != cats["When"]
    assert any("Click a row to open that run" in c.value for c in at.caption)


def test_clicking_a_row_opens_that_run_and_the_heading_says_which(env):
    cats, dogs = _two_runs(env)
    at = app("pages/4_Train.py")
    assert "Latest run" in [s.value for s in at.subheader]
    assert ui_state(at).run_dir == str(dogs.path)
    # a click on any cell of the cats row (not only on its checkbox)
    _click_table(at, cells=[(1, "Model")])
    assert ui_state(at).run_dir == str(cats.path)
    assert "Latest run" not in [s.value for s in at.subheader]
    assert any(s.value.startswith("Run: cats · MobileNetV3-Small · new classifier only · ") for s in at.subheader), \
        [s.value for s in at.subheader]
    assert f"`{cats.path}`" in texts(at)
    # a new session (a refresh) shows the chosen run too
    again = app("pages/4_Train.py")
    assert any(s.value.startswith("Run: cats") for s in again.subheader)
    # the checkbox of the dogs row: back to the newest run, headed "Latest run"
    _click_table(at, rows=[0])
    assert ui_state(at).run_dir == str(dogs.path)
    assert "Latest run" in [s.value for s in at.subheader]


def test_heading_says_this_run_while_it_trains_and_it_cannot_be_trashed(env):
    _two_runs(env)
    queued = RunFolder.create(RunConfig(data=DataConfig(root=str(sample_dir()))), env / "runs", run_id="waiting")
    at = app("pages/4_Train.py")
    assert ui_state(at).run_dir == str(queued.path)
    assert "This run" in [s.value for s in at.subheader]
    assert at.button(key="train_trash").disabled
    assert any("stop it first" in c.value for c in at.caption)


def test_rename_and_note_show_in_the_table_and_the_heading(env):
    _cats, dogs = _two_runs(env)
    at = app("pages/4_Train.py")
    at.text_input(key="train_title_dogs-run").set_value("Dogs, more layers")
    at.text_area(key="train_note_dogs-run").set_value("Two groups fine-tuned.\nTry three next.")
    _act(at, at.button(key="train_save_user"))
    assert RunFolder.open(dogs.path).user() == {"title": "Dogs, more layers",
                                                "note": "Two groups fine-tuned.\nTry three next."}
    table = _runs_table(at)
    assert list(table["Title"]) == ["Dogs, more layers", "cats"]
    assert any(c.value.startswith("Dogs, more layers · ") for c in at.caption), [c.value for c in at.caption]
    assert any("Two groups fine-tuned." in c.value and "Try three next." in c.value for c in at.caption)
    assert at.text_input(key="train_title_dogs-run").value == "Dogs, more layers"
    # a bad title is refused with a plain message and nothing changes
    at.text_input(key="train_title_dogs-run").set_value("bell\x07")
    at.button(key="train_save_user").click().run()
    assert any("control characters" in e.value for e in at.error), [e.value for e in at.error]
    assert RunFolder.open(dogs.path).user()["title"] == "Dogs, more layers"


def test_trash_removes_the_run_and_undo_brings_it_back(env):
    _cats, dogs = _two_runs(env)
    at = app("pages/4_Train.py")
    _act(at, at.button(key="train_trash"))
    assert any("Move this run to the trash?" in w.value for w in at.warning)
    _act(at, at.button(key="train_trash_no"))  # Cancel: nothing happens
    assert list(_runs_table(at)["Run folder"]) == ["dogs-run", "cats-run"]
    _act(at, at.button(key="train_trash"))
    _act(at, at.button(key="train_trash_yes"))
    assert list(_runs_table(at)["Run folder"]) == ["cats-run"]
    assert not dogs.path.exists() and (env / "runs" / ".trash").is_dir()
    assert any("to the trash" in i.value for i in at.info)
    assert "Trash (1)" in [e.label for e in at.expander]
    assert ui_state(at).run_dir != str(dogs.path)
    _act(at, at.button(key="train_undo_button"))
    assert list(_runs_table(at)["Run folder"]) == ["dogs-run", "cats-run"]
    assert RunFolder.open(dogs.path).state == "finished" and ui_state(at).run_dir == str(dogs.path)
    assert not any("to the trash" in i.value for i in at.info)
    assert not [e for e in at.expander if e.label.startswith("Trash")]
    # from the Trash list, too
    _act(at, at.button(key="train_trash"))
    _act(at, at.button(key="train_trash_yes"))
    restore = [b for b in at.button if (b.key or "").startswith("train_restore_")]
    assert len(restore) == 1
    _act(at, restore[0])
    assert list(_runs_table(at)["Run folder"]) == ["dogs-run", "cats-run"]


# -- projector-ready and plain words (issue 11) -----------------------------------------------------

def test_sidebar_says_the_model_and_layers_in_plain_words(env):
    remember(env / "workspace", freeze={"preset": "last:2", "frozen_groups": None, "layer_lr_decay": 1.0})
    at = app("pages/1_Data.py")
    side = "\n".join(str(m.value) for m in at.sidebar.markdown)
    assert "EfficientNet-Lite0 (recommended)" in side and "last 2 groups" in side, side
    assert "tf_efficientnet_lite0" not in side and "last:2" not in side and "head" not in side, side
    helps = [m.proto.help for m in at.sidebar.markdown if m.proto.help]
    assert any("tf_efficientnet_lite0" in h and "last:2" in h for h in helps), helps   # technical names: tooltip
    assert [t for t in at.sidebar.toggle if t.key == "tl_presentation"], "the presentation toggle is in the sidebar"
    remember(env / "workspace", model_name="resnet18")
    at = app("pages/1_Data.py")
    side = "\n".join(str(m.value) for m in at.sidebar.markdown)
    assert "ResNet-18" in side and "new classifier only" in side and "resnet18" not in side, side


def test_presentation_mode_is_off_by_default_and_remembered_across_pages(env):
    remember(env / "workspace")
    at = app("pages/1_Data.py")
    assert at.toggle(key="tl_presentation").value is False
    at.toggle(key="tl_presentation").set_value(True).run()
    assert not at.exception
    assert at.session_state["tl_presentation_on"] is True
    at.switch_page("pages/3_Layers.py").run()
    assert not at.exception and at.toggle(key="tl_presentation").value is True


def test_next_is_a_button_that_moves_on(env):
    remember(env / "workspace")
    at = app("pages/1_Data.py")
    assert not [link for link in at.get("page_link") if "Next" in link.proto.label]
    at.button(key="next_model").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.value == "Model" for t in at.title), [t.value for t in at.title]


def test_layers_switches_say_learns_and_on_means_it_learns(env, fast_estimates):
    remember(env / "workspace")
    at = app("pages/3_Layers.py")
    switches = [t for t in at.toggle if (t.key or "").startswith("layers_learns_")]
    assert len(switches) >= 3 and all(t.label == "learns" for t in switches), [t.label for t in at.toggle]
    assert not [t for t in at.toggle if t.label == "Frozen"]
    fixed = at.toggle(key="layers_learns_classifier_fixed")
    assert fixed.value is True and fixed.disabled           # the new classifier always learns
    assert all(not t.value for t in switches if t.key != "layers_learns_classifier_fixed")  # head: nothing else
    at.radio(key="layers_kind").set_value("none").run()
    assert all(t.value for t in at.toggle if (t.key or "").startswith("layers_learns_"))
    at.radio(key="layers_kind").set_value("head").run()
    at.toggle(key="layers_learns_stage_2").set_value(True).run()   # switched on: it learns
    assert not at.exception
    fc = ui_state(at).freeze_config()
    assert fc.frozen_groups is not None and "stage_2" not in fc.frozen_groups and "stem" in fc.frozen_groups
    rows = [m.value for m in at.markdown if m.value.startswith("**")]
    assert any(r.startswith("**First layers** — ") for r in rows), rows    # plain names, not "Stem"
    assert not any(r.startswith("**Stem**") or r.startswith("**Stage ") for r in rows), rows


def test_results_selections_start_over_for_another_run(env, trained_run, monkeypatch):
    import shutil

    runs = env / "runs"
    first = runs / trained_run.name
    second = runs / (trained_run.name + "-again")
    shutil.copytree(trained_run, first)
    shutil.copytree(trained_run, second)
    RunFolder.open(second).rename("The same run again")   # run pickers tell runs apart by their label
    monkeypatch.setenv("TL_RUNS_DIR", str(runs))
    remember(env / "workspace", run_dir=str(first))
    at = app("pages/5_Results.py")
    assert at.selectbox(key="results_run").value == str(first)
    default_pair = (at.selectbox(key="results_true").value, at.selectbox(key="results_pred").value)
    cam = at.selectbox(key="results_cam_pick")
    default_cam = cam.value
    classes = list(at.selectbox(key="results_true").options)
    other = next((t, p) for t in reversed(classes) for p in classes if (t, p) != default_pair)
    at.selectbox(key="results_true").set_value(other[0]).run()
    at.selectbox(key="results_pred").set_value(other[1]).run()
    at.selectbox(key="results_cam_pick").set_value(cam.options[-1]).run()
    assert not at.exception
    assert any(f"of *{other[0]}* that the model called *{other[1]}*" in m.value for m in at.markdown)
    # another run: its own first categories and picture, not the pair looked at before
    at.selectbox(key="results_run").set_value(str(second)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert (at.selectbox(key="results_true").value, at.selectbox(key="results_pred").value) == default_pair
    assert at.selectbox(key="results_cam_pick").value == default_cam
    assert any(f"of *{default_pair[0]}* that the model called *{default_pair[1]}*" in m.value for m in at.markdown)


PETS_FEW = ROOT.parent / "shared" / "datasets" / "pets" / "few"


@pytest.mark.skipif(not PETS_FEW.is_dir(), reason="the shared pets photos are not on this machine")
def test_data_page_shows_everything_at_once_and_odd_pictures_when_the_network_has_looked(env, monkeypatch):
    """The look for odd pictures runs in the background (minutes on a big folder): the page never
    waits for it, says it is looking, and lists the odd picture once done."""
    import shutil

    from PIL import Image, ImageDraw

    from tl_core.app import previews

    root = env / "pets"
    for c in ("cat", "dog"):
        shutil.copytree(PETS_FEW / "train" / c, root / c)
    im = Image.new("RGB", (180, 180), (224, 224, 224))
    ImageDraw.Draw(im).text((40, 120), "image not found", fill=(110, 110, 110))
    im.save(root / "cat" / "placeholder.png")
    remember(env / "workspace", data_root=str(root), data_source="path")

    started = []
    real = previews.OddLook._look

    def slow_look(self):   # the first look is still running when the page is drawn
        started.append(self)
        time.sleep(3)
        real(self)

    monkeypatch.setattr(previews.OddLook, "_look", slow_look)
    at = app("pages/1_Data.py")
    assert metric(at, "Pictures") == "81"                      # everything else is there at once
    bars = lambda: [b.proto.text for b in at.get("progress")]   # noqa: E731
    assert any("Looking for pictures unlike the rest" in t for t in bars()), bars()
    assert not [w for w in at.warning if "placeholder.png" in w.value]
    started[0].thread.join(120)
    at.run()
    assert not any("Looking for pictures" in t for t in bars()), bars()
    assert any("placeholder.png" in w.value for w in at.warning), [w.value for w in at.warning]
    assert metric(at, "Problems found") != "0"
