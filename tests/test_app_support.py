"""The plain-Python helpers behind the pages: remembered choices, run picking, live progress and the
time estimate."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tl_core.training import estimate

from tl_core.app import formatting, live, previews, sessions, timing, workspace
from tl_core.app import state as app_state
from tl_core.config import DataConfig, FreezeConfig, RunConfig, TrainConfig
from tl_core.runs import RunFolder
from tl_core.data.sample import sample_dir


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "ws"))
    return tmp_path


def test_ui_state_round_trip_and_bad_values_dropped(dirs):
    state = app_state.UIState(data_root=str(sample_dir()), data_source="sample", val_fraction=0.3,
                               model_name="resnet18", freeze={"preset": "last:2", "frozen_groups": None},
                               train={"epochs": 3})
    sessions.save_session("tab-one", state)
    back = sessions.load_session("tab-one")
    assert back == state
    assert back.train_config().epochs == 3 and back.freeze_config().preset == "last:2"
    path = sessions.session_state_path("tab-one")
    raw = json.loads(path.read_text())
    raw.update(val_fraction=7, freeze={"preset": "bogus"}, train={"epochs": -1}, unknown=1)
    path.write_text(json.dumps(raw))
    back = sessions.load_session("tab-one")
    assert back.val_fraction == 0.2 and back.freeze_config().preset == "head" and back.train == {}
    path.write_text("{not json")
    assert sessions.load_session("tab-one") == app_state.UIState()


def test_missing_data_folder_is_forgotten(dirs):
    sessions.save_session("tab-one", app_state.UIState(data_root=str(dirs / "gone")))
    assert sessions.load_session("tab-one").data_root is None


def test_each_browser_session_starts_clean_and_keeps_its_own_choices(dirs):
    """A new session inherits nothing; two sessions do not see each other's choices."""
    sessions.save_session("first-tab", app_state.UIState(data_root=str(sample_dir()), model_name="resnet18"))
    assert sessions.load_session("second-tab") == app_state.UIState()
    sessions.save_session("second-tab", app_state.UIState(model_name="resnet50"))
    assert sessions.load_session("first-tab").model_name == "resnet18"
    assert sessions.load_session("second-tab").model_name == "resnet50"


@pytest.mark.parametrize("token", ["../etc", "a/b/c/d", "", "short", "x" * 65, None, 12345678, "tab one!"])
def test_session_tokens_from_the_address_cannot_name_other_folders(dirs, token):
    assert not sessions.valid_token(token)
    with pytest.raises(ValueError):
        sessions.session_state_path(token)


def test_new_tokens_are_valid_and_unique():
    tokens = {sessions.new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(sessions.valid_token(t) for t in tokens)


def test_continue_where_you_left_off_offers_the_newest_other_session(dirs):
    import os

    assert sessions.last_project(exclude="mine-now") is None  # a fresh computer: nothing to offer
    sessions.save_session("older-tab", app_state.UIState(data_root=str(sample_dir()), model_name="resnet18"))
    sessions.save_session("no-data-tab", app_state.UIState(model_name="resnet50"))  # chose no pictures
    other = dirs / "ants_bees" / "train"
    other.mkdir(parents=True)
    sessions.save_session("newer-tab", app_state.UIState(data_root=str(other)))
    old = time.time() - 7200
    os.utime(sessions.session_state_path("older-tab"), (old, old))
    last = sessions.last_project(exclude="mine-now")
    assert last.token == "newer-tab" and last.data_name == "ants_bees"
    assert sessions.last_project(exclude="newer-tab").token == "older-tab"
    assert sessions.last_project(exclude="newer-tab").age_words() == "2 hours ago"


def test_continue_offers_an_older_apps_single_state_file(dirs):
    legacy = workspace.workspace_dir() / "ui_state.json"
    legacy.write_text(json.dumps({"data_root": str(sample_dir()), "data_source": "sample"}))
    last = sessions.last_project(exclude="mine-now")
    assert last.token is None and last.state.data_root == str(sample_dir())


def test_continue_recovers_the_newest_run_when_the_workspace_is_lost(dirs):
    cfg = RunConfig(data=DataConfig(root=str(sample_dir()), val_fraction=0.25),
                    freeze=FreezeConfig(preset="last:1"), train=TrainConfig(epochs=4))
    run = RunFolder.create(cfg, dirs / "runs")
    assert sessions.load_session("brand-new") == app_state.UIState()   # a new session starts clean
    state = sessions.last_project(exclude="brand-new").state
    assert state.run_dir == str(run.path)
    assert state.data_root == str(sample_dir()) and state.val_fraction == 0.25
    assert state.freeze_config().preset == "last:1" and state.train_config().epochs == 4


def test_pick_run_to_show_prefers_active_then_session_then_running_then_newest(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for p in (a, b):
        p.mkdir()
        (p / "config.json").write_text("{}")
    runs = [{"path": str(b), "state": "finished"}, {"path": str(a), "state": "running"}]
    assert app_state.pick_run_to_show(str(b), "/active", runs) == "/active"
    assert app_state.pick_run_to_show(str(b), None, runs) == str(b)
    assert app_state.pick_run_to_show(None, None, runs) == str(a)
    assert app_state.pick_run_to_show(None, None, runs[:1]) == str(b)
    assert app_state.pick_run_to_show(None, None, []) is None


def test_freeze_from_toggles_maps_back_to_presets():
    names = ["stem", "stage_1", "stage_2", "final", "classifier"]
    assert app_state.freeze_from_toggles(names, ["stem", "stage_1", "stage_2", "final"])["preset"] == "head"
    assert app_state.freeze_from_toggles(names, [])["preset"] == "none"
    d = app_state.freeze_from_toggles(names, ["stem", "stage_1"])
    assert d == {"preset": "last:2", "frozen_groups": None, "layer_lr_decay": 1.0}
    d = app_state.freeze_from_toggles(names, ["stem", "stage_2"])
    assert d["frozen_groups"] == ["stem", "stage_2"] and d["preset"] == "last:2"
    FreezeConfig(**d)  # valid


def test_live_view_from_run_events(dirs, monkeypatch):
    monkeypatch.setattr(live, "_expected", lambda run: None)   # no measurement: the default shares
    run = RunFolder.create(RunConfig(data=DataConfig(root=str(sample_dir())), train=TrainConfig(epochs=4)),
                           dirs / "runs")
    run.write_status("running", "Preparing")
    run.append_event({"event": "on_prepare", "stage": "features", "done": 10, "total": 40, "time": time.time()})
    view = live.live_view(run.path)
    assert view.active and view.prepare["done"] == 10
    assert "Computing features" in view.progress_text()
    # one bar for the whole run: checking done, a quarter of the reading, no training yet
    assert view.fraction == pytest.approx(0.15 + 0.35 * 0.25)
    assert [s["part"] for s in view.segments] == ["check", "read", "train"]
    run.append_event({"event": "on_fit_start", "info": {"epochs": 4}, "time": time.time()})
    run.append_event({"event": "on_batch_end", "step": 5, "logs": {"progress": 0.3, "images_per_sec": 50.0},
                      "time": time.time()})
    logs = {"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.6, "eta_seconds": 30.0,
            "epoch_seconds": 10.0, "best_val_accuracy": 0.6, "images_per_sec": 48.0}
    run.append_event({"event": "on_epoch_end", "epoch": 1, "logs": logs, "time": time.time()})
    run.append_event({"event": "on_warning", "kind": "overfitting", "message": "memorising", "time": time.time()})
    view = live.live_view(run.path)
    assert view.prepare is None and view.epoch == 1 and view.epochs == 4
    assert view.fraction == pytest.approx(0.15 + 0.35 + 0.5 * 0.3)   # preparation done, 30% of the epochs
    assert 20 <= view.eta_seconds <= 30
    assert view.warnings[0]["kind"] == "overfitting"
    assert "1 of 4 epochs done" in view.progress_text() and "50 images/s" in view.progress_text()
    assert view.epoch_text() == "1 of 4 epochs done"
    run.write_status("stopped", "Stopped by you.")
    view = live.live_view(run.path)
    assert not view.active and view.eta_seconds is None


def test_split_counts_and_formatting():
    assert previews.split_counts({"a": 10, "b": 1, "c": 2}, 0.2) == {"a": (8, 2), "b": (1, 0), "c": (1, 1)}
    assert formatting.format_seconds(0.2) == "under a second"
    assert formatting.format_seconds(42) == "42 s"
    assert formatting.format_seconds(600) == "10 min"
    assert formatting.format_params(3_400_000) == "3.4 M" and formatting.format_params(6405) == "6 k"


def test_upload_limit_read_from_streamlit_config(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[server]\nmaxUploadSize = 123\n")
    assert workspace.upload_limit_mb(cfg) == 123
    assert workspace.upload_limit_mb() == 500  # the repository's .streamlit/config.toml


def test_app_support_does_not_import_streamlit():
    import tl_core

    root = Path(tl_core.__file__).parent
    for path in root.rglob("*.py"):
        assert "import streamlit" not in path.read_text(), path


# -- estimate --------------------------------------------------------------------------------------

def test_estimate_measures_and_scales_with_images_and_preset():
    estimate.clear_cache()
    head = estimate.estimate_run("mobilenetv3_small_100", 100, 0.2, FreezeConfig(preset="head"), num_classes=3)
    assert head.mode == "features"
    assert head.n_train == 80 and head.n_val == 20
    assert head.prepare_seconds > 0 and head.epoch_seconds >= 0
    # the frozen prefix runs once, so later epochs are far cheaper than the preparation
    assert head.epoch_seconds < head.prepare_seconds
    again = estimate.estimate_run("mobilenetv3_small_100", 200, 0.2, FreezeConfig(preset="head"), num_classes=3)
    assert again.measurement is head.measurement  # cached per process
    fixed = 2 * head.measurement.build_seconds  # building the model and loading weights, once per run
    assert fixed > 0
    assert again.prepare_seconds - fixed == pytest.approx(2 * (head.prepare_seconds - fixed), rel=1e-6)
    full = estimate.estimate_run("mobilenetv3_small_100", 100, 0.2, FreezeConfig(preset="none"), num_classes=3)
    assert full.mode == "full" and full.measurement.trainable_params > head.measurement.trainable_params
    assert full.total_seconds(10) > full.epoch_seconds


def test_estimate_quick_path_and_background_timing():
    estimate.clear_cache()
    assert estimate.estimate_if_known("mobilenetv3_small_100", 100) is None
    waiting = timing.measure_forward_in_background(["mobilenetv3_small_100"])
    assert waiting == ["mobilenetv3_small_100"]
    deadline = time.time() + 120
    while estimate.cached_forward("mobilenetv3_small_100") is None and time.time() < deadline:
        time.sleep(0.2)
    quick = estimate.estimate_if_known("mobilenetv3_small_100", 100, preset="head")
    assert quick is not None and quick.mode == "features"
    rough = estimate.estimate_if_known("mobilenetv3_small_100", 100, preset="none")
    assert rough.mode == "full" and rough.epoch_seconds > quick.epoch_seconds
    assert timing.measure_forward_in_background(["mobilenetv3_small_100"]) == []


# -- runs in plain words ------------------------------------------------------------------------------

def test_preset_short_words():
    assert formatting.preset_short("head") == "new classifier only"
    assert formatting.preset_short("last:1") == "last group"
    assert formatting.preset_short("last:2") == "last 2 groups"
    assert formatting.preset_short("none") == "everything"
    assert formatting.preset_short("scratch") == "from scratch"
    assert formatting.preset_short("last:2", custom=True) == "last 2 groups, custom"
    assert formatting.preset_short("bogus") == "bogus" and formatting.preset_short(None) == "?"


def test_run_label_tells_runs_apart_and_prefers_the_title():
    when = time.mktime((2025, 3, 12, 14, 5, 0, 0, 0, -1))
    desc = {"run_id": "r", "data": "/photos/cats", "data_name": "cats", "model": "tf_efficientnet_lite0",
            "preset": "head", "created_at": when, "state": "finished", "best_val_accuracy": 0.925}
    assert formatting.run_label(desc) == "cats · EfficientNet-Lite0 · new classifier only · 12 Mar 14:05"
    other = {**desc, "data": "/photos/dogs", "data_name": "dogs", "model": "resnet18", "preset": "last:2"}
    assert formatting.run_label(other) == "dogs · ResNet-18 · last 2 groups · 12 Mar 14:05"
    assert formatting.run_label({**desc, "title": "First try"}) == "First try · 12 Mar 14:05"
    assert formatting.run_label(desc, details=True).endswith("12 Mar 14:05 · finished, best 92%")
    # an old description (no data_name) and an unknown model still give a label
    assert formatting.run_label({"run_id": "r", "data": "/x/birds", "model": "my_net", "preset": "none"}) == \
        "birds · my_net · everything · r"


def test_run_row_and_format_seconds():
    assert formatting.format_seconds(125) == "2 min" and formatting.format_seconds(None) == "?"
    assert formatting.format_seconds(5400) == "1.5 h"
    desc = {"run_id": "20250312-140500-resnet18-ab12", "data_name": "cats", "model": "resnet18",
            "preset": "none", "created_at": time.mktime((2025, 3, 12, 14, 5, 0, 0, 0, -1)), "state": "finished",
            "best_val_accuracy": 0.875, "seconds": 125.0, "epochs_done": 3, "epochs_planned": 10,
            "split": "random", "val_fraction": 0.2, "title": None}
    assert formatting.run_row(desc) == {
        "When": "12 Mar 14:05", "Title": "cats", "Data": "cats · 20% held out", "Model": "ResNet-18",
        "Layers": "everything", "Best accuracy": "87.5%", "Took": "2 min", "Epochs": "3 / 10", "State": "finished",
        "Run folder": "20250312-140500-resnet18-ab12"}
    row = formatting.run_row({**desc, "title": "Mine", "split": "folder", "seconds": None,
                              "best_val_accuracy": None, "epochs_done": None, "epochs_planned": None})
    assert (row["Title"], row["Data"], row["Took"], row["Best accuracy"], row["Epochs"]) == \
        ("Mine", "cats · own val/ folder", "", "", "")
    assert formatting.run_row({**desc, "seconds": 0.4})["Took"] == "< 1 s"   # fits the table's narrow column


def test_markdown_safe_shows_text_as_typed():
    assert formatting.markdown_safe("a *b* _c_ [d](e) :smile: $x$ #1") == \
        r"a \*b\* \_c\_ \[d\](e) \:smile\: \$x\$ \#1"
    assert formatting.markdown_safe("EfficientNet-Lite0 · 12 Mar") == "EfficientNet-Lite0 · 12 Mar"


def test_describe_and_label_from_a_real_run_folder(dirs):
    run = RunFolder.create(RunConfig(data=DataConfig(root=str(sample_dir())), freeze=FreezeConfig(preset="last:2")),
                           dirs / "runs")
    label = formatting.run_label(run.describe())
    assert label.startswith(f"{sample_dir().name} · EfficientNet-Lite0 · last 2 groups · ")
    run.rename("Sample, two groups")
    assert formatting.run_label(run.describe()).startswith("Sample, two groups · ")


def test_the_bar_only_moves_forward_through_the_stages(dirs, monkeypatch):
    """Checking, then reading (train and val as one pass), then the epochs: one bar that never restarts,
    with a time left from the first second when this computer has an estimate."""
    monkeypatch.setattr(live, "_expected", lambda run: {"check": 2.0, "read": 6.0, "train": 12.0})
    run = RunFolder.create(RunConfig(data=DataConfig(root=str(sample_dir())), train=TrainConfig(epochs=4)),
                           dirs / "runs")
    run.write_status("running", "Preparing the data and the model.")
    seen = [live.live_view(run.path).fraction]
    assert live.live_view(run.path).eta_seconds == pytest.approx(20.0, abs=1.0)   # before any event
    for stage, done, total in (("check", 30, 60), ("check", 60, 60), ("features", 20, 60), ("features", 60, 60)):
        run.append_event({"event": "on_prepare", "stage": stage, "done": done, "total": total, "time": time.time()})
        seen.append(live.live_view(run.path).fraction)
    run.append_event({"event": "on_fit_start", "info": {"epochs": 4}, "time": time.time()})
    run.append_event({"event": "on_batch_end", "step": 1, "logs": {"progress": 0.5}, "time": time.time()})
    seen.append(live.live_view(run.path).fraction)
    assert seen == sorted(seen) and seen[0] == 0.0
    assert seen[2] == pytest.approx(0.1) and seen[4] == pytest.approx(0.4) and seen[5] == pytest.approx(0.7)
    shares = [s["share"] for s in live.live_view(run.path).segments]
    assert shares == pytest.approx([0.1, 0.3, 0.6])


def test_a_damaged_run_says_so_in_the_runs_table():
    desc = {"run_id": "r", "data_name": "cats", "model": "resnet18", "preset": "head", "state": "finished",
            "damaged": "labels.json in r is damaged"}
    assert formatting.run_row(desc)["State"] == "damaged"
    assert formatting.run_row({**desc, "damaged": None})["State"] == "finished"


def test_display_picture_keeps_tiny_pictures_crisp_and_shrinks_big_ones():
    from PIL import Image

    tiny = Image.new("L", (28, 28))
    tiny.putpixel((0, 0), 255)
    big = previews.display_picture(tiny, 160)
    assert big.size == (140, 140)                                   # a whole factor (5x), not a blur
    assert set(big.crop((0, 0, 5, 5)).getdata()) == {255} and big.getpixel((5, 5)) == 0   # hard pixel edges
    assert previews.display_picture(Image.new("RGB", (4000, 3000)), 160).size == (160, 120)
    assert previews.display_picture(Image.new("RGB", (320, 200)), 420).size == (320, 200)  # shape kept
    assert tiny.size == (28, 28)                                    # the original is left as it was


def test_typed_folder_paths_are_for_this_computer_only_unless_allowed(tmp_path, monkeypatch):
    """A server the network can reach must not let every visitor read its folders (issue 12, item 10)."""
    from tl_core.errors import DataError

    monkeypatch.delenv("TL_FOLDER_PATHS", raising=False)
    assert workspace.folder_access("127.0.0.1").enabled and workspace.folder_access("localhost").enabled
    assert workspace.folder_access(None).enabled                       # Streamlit's default: this computer
    assert not workspace.folder_access("0.0.0.0").enabled and not workspace.folder_access("192.168.1.20").enabled
    with pytest.raises(DataError, match="switched off"):
        workspace.folder_access("0.0.0.0").check(str(tmp_path))

    allowed, other = tmp_path / "class-pictures", tmp_path / "private"
    (allowed / "lesson1").mkdir(parents=True)
    other.mkdir()
    (allowed / "sneaky").symlink_to(other)                            # a link out of the allowed folder
    monkeypatch.setenv("TL_FOLDER_PATHS", str(allowed))
    access = workspace.folder_access("0.0.0.0")
    assert access.enabled and access.roots == (allowed.resolve(),)
    assert access.check(str(allowed / "lesson1")) == (allowed / "lesson1").resolve()
    for outside in (other, allowed / "sneaky", allowed / ".." / "private", Path("/")):
        with pytest.raises(DataError, match="only be used from inside"):
            access.check(str(outside))
    with pytest.raises(DataError, match="There is no folder"):
        access.check(str(allowed / "missing"))
    with pytest.raises(DataError, match="There is no folder"):
        access.check("   ")

    monkeypatch.setenv("TL_FOLDER_PATHS", "off")
    assert not workspace.folder_access("127.0.0.1").enabled
    monkeypatch.setenv("TL_FOLDER_PATHS", "on")
    assert workspace.folder_access("0.0.0.0") == workspace.FolderAccess(True)
