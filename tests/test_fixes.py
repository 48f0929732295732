"""Fix and retrain (issue 13): move a picture to another category or set it aside, in one step, with
undo and a log; nothing deleted; refusals in plain words; then the fix/undo/retrain loop on the
Results page (AppTest) with real photos."""
from __future__ import annotations

import hashlib
import re
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tl_core.data import fixes
from tl_core.data.fixes import FixError
from tl_core.data.sample import sample_dir
from tl_core.data.scan import scan_folder


def _png(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (shade, 255 - shade, 90)).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """cats/ (with a sub-folder) and dogs/, a few tiny pictures each."""
    root = tmp_path / "photos"
    for i in range(3):
        _png(root / "cats" / f"c{i}.png", 10 + i)
        _png(root / "dogs" / f"d{i}.png", 200 + i)
    _png(root / "cats" / "2021" / "beach.png", 50)
    return root


def _labels(root: Path) -> dict[str, str]:
    return {r.rel_path: r.label for r in scan_folder(root).records}


# -- move -------------------------------------------------------------------------------------------

def test_move_changes_only_the_category_folder_and_is_logged(photos):
    before = (photos / "cats" / "2021" / "beach.png").read_bytes()
    fix = fixes.move_picture(photos, photos / "cats" / "2021" / "beach.png", "dogs")
    assert (photos / "dogs" / "2021" / "beach.png").read_bytes() == before
    assert not (photos / "cats" / "2021" / "beach.png").exists()
    assert _labels(photos)["dogs/2021/beach.png"] == "dogs"
    assert (fix.action, fix.source, fix.target, fix.from_category, fix.to_category) == \
        ("move", "cats/2021/beach.png", "dogs/2021/beach.png", "cats", "dogs")
    assert fix.describe() == "Moved beach.png from cats to dogs"
    log = fixes.fixes_log_path(photos)
    assert log == photos.parent / "photos-fixes.jsonl"                 # beside the data, never scanned
    line = json.loads(log.read_text().splitlines()[0])
    assert line["action"] == "move" and line["source"] == "cats/2021/beach.png" and line["id"] == fix.id
    assert [f.id for f in fixes.list_fixes(photos)] == [fix.id]
    assert set(scan_folder(photos).classes) == {"cats", "dogs"}


def test_a_relative_path_works_too_and_a_split_folder_is_kept(tmp_path):
    root = tmp_path / "split"
    _png(root / "train" / "cat" / "a.png", 1)
    _png(root / "train" / "cat" / "b.png", 2)
    _png(root / "train" / "dog" / "c.png", 3)
    _png(root / "val" / "cat" / "d.png", 4)
    _png(root / "val" / "dog" / "e.png", 5)
    fixes.move_picture(root, "train/cat/a.png", "dog")
    assert (root / "train" / "dog" / "a.png").is_file()
    assert _labels(root)["train/dog/a.png"] == "dog"
    fixes.move_picture(root, root / "val" / "dog" / "e.png", "cat")
    assert (root / "val" / "cat" / "e.png").is_file()


def test_a_move_never_replaces_another_picture(photos):
    _png(photos / "dogs" / "c0.png", 99)
    theirs = (photos / "dogs" / "c0.png").read_bytes()
    fix = fixes.move_picture(photos, photos / "cats" / "c0.png", "dogs")
    assert fix.target == "dogs/c0 (2).png" and (photos / "dogs" / "c0 (2).png").is_file()
    assert (photos / "dogs" / "c0.png").read_bytes() == theirs
    fixes.undo(photos)
    assert (photos / "cats" / "c0.png").is_file() and (photos / "dogs" / "c0.png").read_bytes() == theirs


def test_a_new_category_only_when_asked_and_with_a_plain_name(photos):
    with pytest.raises(FixError, match="no category 'birds'.*cats, dogs"):
        fixes.move_picture(photos, photos / "cats" / "c1.png", "birds")
    assert (photos / "cats" / "c1.png").is_file()
    for bad in ("../outside", ".hidden", "a/b", ""):
        with pytest.raises(FixError, match="cannot be a category name"):
            fixes.move_picture(photos, photos / "cats" / "c1.png", bad, create=True)
    assert not (photos.parent / "outside").exists()
    fix = fixes.move_picture(photos, photos / "cats" / "c1.png", "birds", create=True)
    assert (photos / "birds" / "c1.png").is_file() and fix.created_folder == "birds"
    fixes.undo(photos)
    assert (photos / "cats" / "c1.png").is_file()
    assert not (photos / "birds").exists()         # the folder the move made (and only that) goes again


def test_moving_into_its_own_category_is_refused(photos):
    with pytest.raises(FixError, match="already in 'cats'"):
        fixes.move_picture(photos, photos / "cats" / "c1.png", "cats")


# -- set aside -----------------------------------------------------------------------------------------

def test_set_aside_goes_beside_the_data_and_undo_brings_it_back(photos):
    original = (photos / "cats" / "c2.png").read_bytes()
    fix = fixes.set_aside(photos, photos / "cats" / "c2.png")
    aside = photos.parent / "photos-set-aside" / "cats" / "c2.png"
    assert fixes.set_aside_dir(photos) == photos.parent / "photos-set-aside"
    assert aside.read_bytes() == original and not (photos / "cats" / "c2.png").exists()
    assert "cats/c2.png" not in _labels(photos)                        # training no longer sees it
    assert fix.describe() == "Set aside c2.png (was in cats)" and fix.to_category is None
    undone = fixes.undo_last(photos)
    assert undone.id == fix.id and undone.undone
    assert (photos / "cats" / "c2.png").read_bytes() == original and not aside.exists()
    assert fixes.list_fixes(photos) == []
    everything = fixes.list_fixes(photos, include_undone=True)
    assert [(f.id, f.undone) for f in everything] == [(fix.id, True)]
    actions = [json.loads(line)["action"] for line in fixes.fixes_log_path(photos).read_text().splitlines()]
    assert actions == ["set_aside", "undo"]                            # every step logged


# -- undo ----------------------------------------------------------------------------------------------

def test_undo_goes_back_one_step_at_a_time_or_a_chosen_one(photos):
    a = fixes.move_picture(photos, photos / "cats" / "c0.png", "dogs")
    b = fixes.set_aside(photos, photos / "dogs" / "d0.png")
    c = fixes.move_picture(photos, photos / "dogs" / "d1.png", "cats")
    assert fixes.undo(photos, a.id).id == a.id                          # not the last one
    assert (photos / "cats" / "c0.png").is_file()
    assert fixes.undo_last(photos).id == c.id
    assert fixes.undo_last(photos).id == b.id
    assert (photos / "dogs" / "d0.png").is_file() and (photos / "dogs" / "d1.png").is_file()
    with pytest.raises(FixError, match="no fix to undo"):
        fixes.undo_last(photos)
    with pytest.raises(FixError, match="no fix to undo"):
        fixes.undo(photos, a.id)


def test_undo_refuses_when_things_changed_outside(photos):
    fix = fixes.move_picture(photos, photos / "cats" / "c0.png", "dogs")
    _png(photos / "cats" / "c0.png", 77)                               # something new took its old place
    with pytest.raises(FixError, match="another file is now at"):
        fixes.undo(photos)
    (photos / "cats" / "c0.png").unlink()
    (photos / "dogs" / "c0.png").rename(photos.parent / "gone.png")   # moved away by hand
    with pytest.raises(FixError, match="no longer at"):
        fixes.undo(photos, fix.id)


def test_a_fix_whose_log_cannot_be_written_is_not_made(photos, monkeypatch):
    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fixes, "_write_lines", full_disk)
    with pytest.raises(FixError, match="not made.*No space left"):
        fixes.move_picture(photos, photos / "cats" / "c0.png", "dogs")
    assert (photos / "cats" / "c0.png").is_file() and not (photos / "dogs" / "c0.png").exists()


def test_a_damaged_log_line_does_not_hide_the_others(photos):
    fix = fixes.move_picture(photos, photos / "cats" / "c0.png", "dogs")
    log = fixes.fixes_log_path(photos)
    log.write_text("{half a line\n" + log.read_text() + "[1, 2]\n")
    assert [f.id for f in fixes.list_fixes(photos)] == [fix.id]
    fixes.undo(photos)
    assert (photos / "cats" / "c0.png").is_file()


# -- refusals ------------------------------------------------------------------------------------------

def test_only_pictures_inside_the_data_folder(photos, tmp_path):
    outside = _png(tmp_path / "elsewhere" / "x.png", 3)
    for picture in (outside, "../elsewhere/x.png", photos / ".." / "elsewhere" / "x.png", "/etc/passwd"):
        with pytest.raises(FixError, match="not inside the data folder"):
            fixes.move_picture(photos, picture, "dogs")
    (photos / "cats" / "link.png").symlink_to(outside)                 # a shortcut leading out
    with pytest.raises(FixError, match="not inside the data folder"):
        fixes.set_aside(photos, photos / "cats" / "link.png")
    assert outside.is_file() and (photos / "cats" / "link.png").is_symlink()
    with pytest.raises(FixError, match="not one of the pictures"):
        fixes.set_aside(photos, photos / "cats")                       # a folder, not a picture
    assert not fixes.set_aside_dir(photos).exists()


def test_a_missing_picture_is_said_plainly(photos):
    with pytest.raises(FixError, match="is not there any more"):
        fixes.move_picture(photos, photos / "cats" / "nope.png", "dogs")
    with pytest.raises(FixError, match="is not there any more"):
        fixes.set_aside(photos, "dogs/nope.png")


def test_the_bundled_sample_is_never_changed():
    picture = sorted((sample_dir() / "trouser").iterdir())[0]
    before = picture.read_bytes()
    reason = fixes.can_fix(sample_dir())
    assert reason and "sample" in reason and "copy" in reason
    with pytest.raises(FixError, match="sample pictures that come with Transfer Lab"):
        fixes.move_picture(sample_dir(), picture, "bag")
    with pytest.raises(FixError, match="copy the sample folder"):
        fixes.set_aside(sample_dir(), picture)
    assert picture.read_bytes() == before
    assert not fixes.fixes_log_path(sample_dir()).exists() and not fixes.set_aside_dir(sample_dir()).exists()


def test_a_read_only_folder_is_said_plainly(photos, monkeypatch):
    """(The tests may run as root, who may write anywhere: the permission answer is simulated.)"""
    real_access = os.access
    monkeypatch.setattr(fixes.os, "access", lambda p, mode: False if Path(p) == photos else real_access(p, mode))
    reason = fixes.can_fix(photos)
    assert reason and "read-only" in reason and "Copy the pictures" in reason
    with pytest.raises(FixError, match="read-only"):
        fixes.move_picture(photos, photos / "cats" / "c0.png", "dogs")
    assert (photos / "cats" / "c0.png").is_file()


def test_a_refused_rename_is_a_plain_message(photos, monkeypatch):
    def denied(*_a):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fixes.os, "rename", denied)
    with pytest.raises(FixError, match="read-only"):
        fixes.set_aside(photos, photos / "cats" / "c0.png")
    assert (photos / "cats" / "c0.png").is_file() and not fixes.fixes_log_path(photos).exists()


# -- the loop on the Results page ------------------------------------------------------------------------

def _key(path: str) -> str:
    """The Results page's widget key part for a picture (pages/5_Results.py: _key)."""
    return hashlib.sha1(str(path).encode()).hexdigest()[:12]


@pytest.fixture
def pets_run(tmp_path, monkeypatch):
    """A copy of pets/few/train with a dog photo planted in cat/, a finished 'classifier only' run on it
    (evaluated, its likely label mistakes found), the app's runs and workspace in tmp_path."""
    from test_label_mistakes import pets_with_a_planted_mistake, tiny_config, train
    from test_app_pages import remember

    import tl_core
    from tl_core.results.mistakes import find_label_issues

    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    root = pets_with_a_planted_mistake(tmp_path)
    run = train(tiny_config(root), tmp_path / "runs")
    tl_core.evaluate(run)
    find_label_issues(run)
    remember(tmp_path / "workspace", data_root=str(root), data_source="folder", run_dir=str(run))
    yield root, run
    from tl_core.app import jobs

    job = jobs.active_job()
    if job is not None:
        job.stop_event.set()
        job.thread.join(120)


def _run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _click(at, key: str):
    button = at.button(key=key)
    button.click()
    return _run(at)


def test_fix_undo_redo_and_retrain_from_the_results_page(pets_run):
    from test_app_pages import app

    from tl_core.app import jobs
    from tl_core.results.mistakes import load_label_issues
    from tl_core.runs import RunFolder, list_runs

    root, run = pets_run
    planted = root / "cat" / "planted_dog.jpg"
    issue = next(i for i in load_label_issues(run).issues if Path(i.path) == planted)
    k = _key(issue.path)

    at = app("pages/5_Results.py")
    assert "Likely label mistakes" in [s.value for s in at.subheader]
    assert any(re.search(r"^\d of 81 pictures look mislabelled", c.value) for c in at.caption)
    assert any("Accuracy **" in c.value and "95% sure" in c.value for c in at.caption)
    assert at.button(key=f"fix_lm_move_{k}").label == "Move to dog"

    _click(at, f"fix_lm_move_{k}")                                    # one click
    assert not planted.exists() and (root / "dog" / "planted_dog.jpg").is_file()
    said = "Moved planted\\_dog.jpg from cat to dog"                  # (markdown-escaped: shown as typed)
    assert any(said in s.value for s in at.success)
    assert any(said in m.value for m in at.markdown)                   # listed under Fix and retrain
    assert not [b for b in at.button if b.key == f"fix_lm_move_{k}"]

    _click(at, f"undo_lm_{k}")                                        # undo, where the picture was
    assert planted.is_file() and not (root / "dog" / "planted_dog.jpg").exists()
    assert at.button(key="results_retrain").disabled                  # nothing to retrain with

    _click(at, f"fix_lm_move_{k}")                                    # and again
    assert (root / "dog" / "planted_dog.jpg").is_file()
    log = [json.loads(line)["action"] for line in fixes.fixes_log_path(root).read_text().splitlines()]
    assert log == ["move", "undo", "move"]

    retrain = at.button(key="results_retrain")
    assert not retrain.disabled
    retrain.click()
    _run(at)
    job = jobs.REGISTRY.get(at.session_state["results_retrained"]["run"])
    job.thread.join(240)
    assert not job.thread.is_alive()
    new = RunFolder.open(job.run_dir)
    assert new.state == "finished" and new.path != run
    assert new.config().to_dict() == RunFolder.open(run).config().to_dict()   # the same settings
    summary = new.summary()
    assert summary["counts"]["dog"] + summary["val_counts"]["dog"] == 41     # the data no longer has the mistake
    assert summary["counts"]["cat"] + summary["val_counts"]["cat"] == 40
    assert summary["info"]["feature_cache_hit"] is True                       # no picture read through the network
    assert new.user()["title"] == "Retrained with 1 fix"
    _run(at)
    assert at.selectbox(key="results_run").value == str(new.path)             # Results now shows the new run
    words = " ".join(s.value for s in at.success)
    assert "Started a new run with the same settings on the fixed pictures" in words and "1 fix" in words
    assert "so it takes seconds" in words
    assert any(r["path"] == str(new.path) for r in list_runs(run.parent))


def test_the_list_is_prepared_in_the_background_when_missing(pets_run):
    from test_app_pages import app

    from tl_core.app import aftercare

    _root, run = pets_run
    (run / "label_issues.json").unlink()
    at = app("pages/5_Results.py")
    assert any("Looking for likely label mistakes in the background" in i.value for i in at.info)
    aftercare.wait_all(300)
    _run(at)
    assert (run / "label_issues.json").is_file()
    assert any("pictures look mislabelled" in c.value for c in at.caption)


def test_the_sample_is_shown_without_fix_buttons_and_says_why(pets_run, tmp_path):
    from test_app_pages import app, remember

    _root, run = pets_run
    copy = run.parent / "on-the-sample"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["data"]["root"] = str(sample_dir())
    (copy / "config.json").write_text(json.dumps(config))
    for name in ("eval_val.json", "label_issues.json"):       # as new as the weights: nothing recomputed
        os.utime(copy / name)
    remember(tmp_path / "workspace", run_dir=str(copy))
    at = app("pages/5_Results.py")
    assert at.selectbox(key="results_run").value == str(copy)
    assert not [b for b in at.button if (b.key or "").startswith("fix_")]
    assert any("sample pictures that come with Transfer Lab" in i.value for i in at.info)


def test_any_other_category_is_in_the_move_menu(fmnist_small, tmp_path, monkeypatch):
    """With more than two categories, the ones the model did not suggest are one menu away."""
    from test_app_pages import app, remember
    from test_label_mistakes import tiny_config, train

    import tl_core
    from tl_core.results.mistakes import find_label_issues

    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    root = tmp_path / "clothes"
    shutil.copytree(fmnist_small, root)
    run = train(tiny_config(root, epochs=1, size=64), tmp_path / "runs")
    report = tl_core.evaluate(run)
    find_label_issues(run)
    remember(tmp_path / "workspace", data_root=str(root), data_source="folder", run_dir=str(run))
    item = report.items[0]
    others = [c for c in report.classes if c != item["true"]]
    at = app("pages/5_Results.py")
    at.selectbox(key="results_true").set_value(item["true"])
    at.selectbox(key="results_pred").set_value(item["pred"])
    _run(at)
    k = _key(item["path"])
    target = next(c for c in others if c != item["pred"])
    _click(at, f"fix_cell_to_{_key(target)}_{k}")
    moved = root / target / Path(item["path"]).name
    assert moved.is_file() and not Path(item["path"]).exists()
    assert at.button(key=f"undo_cell_{k}")
    _click(at, f"undo_cell_{k}")
    assert Path(item["path"]).is_file() and not moved.exists()
