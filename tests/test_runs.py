import json
import os

import pytest
import torch

from tl_core.config import DataConfig, RunConfig
from tl_core.errors import RunError
from tl_core.runs import RunFolder, list_runs


def _cfg():
    return RunConfig(data=DataConfig(root="/data"))


def test_create_and_read_back(tmp_path):
    run = RunFolder.create(_cfg(), tmp_path)
    assert run.status()["state"] == "queued"
    assert run.config() == _cfg()
    run.save_labels(["a", "b"])
    run.save_preprocessing({"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3})
    run.save_weights({"w": torch.ones(2, 2)}, {"epoch": "1"})
    assert run.labels() == ["a", "b"]
    assert torch.equal(run.load_state_dict()["w"], torch.ones(2, 2))
    run.append_event({"event": "on_epoch_end", "epoch": 1, "logs": {"val_accuracy": 0.5}})
    run.append_event({"event": "on_warning", "kind": "x", "message": "m"})
    assert run.epoch_logs() == [{"val_accuracy": 0.5, "epoch": 1}]
    assert [e["event"] for e in run.events()] == ["on_epoch_end", "on_warning"]


def test_half_written_event_line_is_skipped(tmp_path):
    run = RunFolder.create(_cfg(), tmp_path)
    run.append_event({"event": "on_epoch_end", "epoch": 1, "logs": {}})
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"event": "on_epoch_end", "ep')
    assert len(run.events()) == 1


def test_dead_process_running_run_is_reported_interrupted(tmp_path):
    run = RunFolder.create(_cfg(), tmp_path)
    run.write_status("running", "Epoch 1")
    status = json.loads((run.path / "status.json").read_text())
    status["pid"] = 2 ** 22 + 12345  # no such process
    (run.path / "status.json").write_text(json.dumps(status))
    st = run.status()
    assert st["state"] == "failed" and st["interrupted"] and "Interrupted" in st["message"]


def test_list_runs_newest_first_and_tolerates_damage(tmp_path):
    a = RunFolder.create(_cfg(), tmp_path, run_id="a")
    b = RunFolder.create(_cfg(), tmp_path, run_id="b")
    (b.path / "status.json").write_text("{not json")
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert {r["run_id"] for r in runs} == {"a", "b"}
    assert next(r for r in runs if r["run_id"] == "b")["state"] == "failed"
    assert list_runs(tmp_path / "missing") == []


def test_errors_are_plain(tmp_path):
    with pytest.raises(RunError, match="not a Transfer Lab run folder"):
        RunFolder.open(tmp_path)
    run = RunFolder.create(_cfg(), tmp_path, run_id="x")
    with pytest.raises(RunError, match="already exists"):
        RunFolder.create(_cfg(), tmp_path, run_id="x")
    with pytest.raises(RunError, match="no saved weights"):
        run.load_state_dict()
    with pytest.raises(RunError, match="no labels"):
        run.labels()


# -- what a table needs, title and note, trash -------------------------------------------------------

import time  # noqa: E402

from tl_core.runs import empty_trash, list_trash, restore_run, trash_run  # noqa: E402


def _finished(runs_dir, run_id="r1", root="/data/cats", seconds=125.0, acc=0.9, **status):
    """A finished run folder written the way training writes it, without training."""
    from tl_core.config import FreezeConfig, ModelConfig, TrainConfig

    run = RunFolder.create(RunConfig(data=DataConfig(root=root, val_fraction=0.25),
                                     model=ModelConfig(name="resnet18"), freeze=FreezeConfig(preset="last:2"),
                                     train=TrainConfig(epochs=4)), runs_dir, run_id=run_id)
    run.write_status("running", "Training started.", epoch=0, epochs=4)
    run.write_status("finished", "Training finished.", epoch=3, best_val_accuracy=acc)
    raw = json.loads((run.path / "status.json").read_text())
    raw.update(started_at=1_700_000_000.0, finished_at=1_700_000_000.0 + seconds, **status)
    (run.path / "status.json").write_text(json.dumps(raw))
    return run


def test_describe_has_what_a_runs_table_needs(tmp_path):
    run = _finished(tmp_path)
    run.save_summary({"best_val_accuracy": 0.9, "train_seconds": 100.0,
                      "val_records": [{"path": "/data/cats/a/1.png", "label": "a"}]})
    d = run.describe()
    assert (d["data"], d["data_name"], d["model"], d["preset"]) == ("/data/cats", "cats", "resnet18", "last:2")
    assert d["best_val_accuracy"] == 0.9 and d["seconds"] == pytest.approx(125.0)
    assert (d["epochs_done"], d["epochs_planned"]) == (3, 4)
    assert d["split"] == "random" and d["val_fraction"] == 0.25 and d["custom_layers"] is False
    assert d["title"] is None and d["note"] is None and d["active"] is False
    assert isinstance(d["created_at"], float)
    # the keys other code already used are all still there
    for key in ("run_id", "path", "state", "message", "model", "preset", "data", "created_at", "best_val_accuracy",
                "epochs_done", "has_weights"):
        assert key in d
    # the split recorded in summary.json wins; a run in its folder's own val/ says "folder"
    run.save_summary({"split": {"kind": "folder"}})
    assert run.describe()["split"] == "folder"
    other = _finished(tmp_path, "r2")
    other.save_summary({"val_records": [{"path": "/data/cats/val/a/1.png", "label": "a"}]})
    assert other.describe()["split"] == "folder"


def test_describe_takes_time_from_the_summary_and_tolerates_damage(tmp_path):
    run = RunFolder.create(_cfg(), tmp_path, run_id="old")
    raw = json.loads((run.path / "status.json").read_text())
    raw = {"state": "finished", "message": "done"}  # an old status: no times, no created_at
    (run.path / "status.json").write_text(json.dumps(raw))
    run.save_summary({"train_seconds": 42.5, "epochs_done": 2})
    d = run.describe()
    assert d["seconds"] == 42.5 and d["epochs_done"] == 2 and d["split"] is None
    assert d["created_at"] == pytest.approx((run.path / "config.json").stat().st_mtime)  # still sortable
    (run.path / "user.json").write_text("{broken")
    (run.path / "summary.json").write_text("{broken")
    d = run.describe()
    assert d["title"] is None and d["seconds"] is None


def test_rename_and_note_are_kept_in_user_json(tmp_path):
    run = RunFolder.create(_cfg(), tmp_path, run_id="x")
    assert not (run.path / "user.json").exists()
    assert run.rename("  Cats, first try \t") == "Cats, first try"
    assert run.set_note("Only the classifier.\r\nTry more layers next.") == "Only the classifier.\nTry more layers next."
    assert json.loads((run.path / "user.json").read_text()) == {
        "title": "Cats, first try", "note": "Only the classifier.\nTry more layers next."}
    assert list_runs(tmp_path)[0]["title"] == "Cats, first try"
    run.rename("Renamed")
    assert run.user() == {"title": "Renamed", "note": "Only the classifier.\nTry more layers next."}
    assert run.rename("   ") is None and run.set_note(None) is None  # empty clears
    assert run.user() == {"title": None, "note": None}
    assert json.loads((run.path / "user.json").read_text()) == {}
    assert not list(run.path.glob(".user.json*"))  # written atomically, no temporary left


@pytest.mark.parametrize("title, words", [
    (42, "must be text"), ("two\nlines", "one line"), ("x" * 81, "at most 80 characters"),
    ("bell\x07", "control characters")])
def test_bad_titles_are_refused_plainly(tmp_path, title, words):
    run = RunFolder.create(_cfg(), tmp_path, run_id="x")
    run.rename("kept")
    with pytest.raises(RunError, match=words):
        run.rename(title)
    assert run.user()["title"] == "kept"


def test_bad_notes_are_refused_plainly(tmp_path):
    run = RunFolder.create(_cfg(), tmp_path, run_id="x")
    with pytest.raises(RunError, match="at most 2000 characters"):
        run.set_note("n" * 2001)
    with pytest.raises(RunError, match="must be text"):
        run.set_note(["a", "list"])
    with pytest.raises(RunError, match="control characters"):
        run.set_note("nul\x00")
    assert run.set_note("tabs\tand\nlines are fine") == "tabs\tand\nlines are fine"
    import shutil

    shutil.rmtree(run.path)
    with pytest.raises(RunError, match="not a Transfer Lab run folder"):
        run.set_note("gone")


def test_trash_restore_and_list_trash(tmp_path):
    run = _finished(tmp_path, "keep-me")
    run.rename("Mine")
    trashed = trash_run(run.path)
    assert trashed.parent == tmp_path / ".trash" and trashed.name.endswith("__keep-me")
    assert not run.path.exists() and (trashed / "user.json").is_file()
    assert list_runs(tmp_path) == []  # the trash is not a run
    (entry,) = list_trash(tmp_path)
    assert entry["run_id"] == "keep-me" and entry["trash_path"] == str(trashed) and entry["title"] == "Mine"
    assert entry["trashed_at"] == pytest.approx(time.time(), abs=120)
    with pytest.raises(RunError, match="already in the trash"):
        trash_run(trashed)
    back = restore_run(trashed)
    assert back == run.path and RunFolder.open(back).user()["title"] == "Mine"
    assert [r["run_id"] for r in list_runs(tmp_path)] == ["keep-me"] and list_trash(tmp_path) == []
    with pytest.raises(RunError, match="not a run in the trash"):
        restore_run(trashed)


def test_trash_twice_and_restore_refused_when_the_name_is_taken(tmp_path):
    first = trash_run(_finished(tmp_path, "same").path)
    second = trash_run(_finished(tmp_path, "same").path)  # a new run of the same name, trashed the same second
    assert first != second and len(list_trash(tmp_path)) == 2
    restore_run(second)
    with pytest.raises(RunError, match="already"):
        restore_run(first)
    assert first.is_dir()  # refused: nothing moved


def test_trash_refuses_active_runs_and_non_runs(tmp_path):
    queued = RunFolder.create(_cfg(), tmp_path, run_id="queued")  # this process is alive: really queued
    with pytest.raises(RunError, match="waiting to start; stop it first"):
        trash_run(queued.path)
    queued.write_status("running", "Epoch 1")
    with pytest.raises(RunError, match="training; stop it first"):
        trash_run(queued.path)
    assert queued.path.is_dir()
    with pytest.raises(RunError, match="not a Transfer Lab run folder"):
        trash_run(tmp_path / "nothing")
    # an interrupted run (its process is gone) can go
    raw = json.loads((queued.path / "status.json").read_text())
    raw["pid"] = 2 ** 22 + 12345
    (queued.path / "status.json").write_text(json.dumps(raw))
    assert trash_run(queued.path).is_dir()


def test_empty_trash_only_removes_old_enough_trashed_runs(tmp_path):
    old = trash_run(_finished(tmp_path, "old").path)
    new = trash_run(_finished(tmp_path, "new").path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() - 40 * 86400))
    old = old.rename(old.parent / f"{stamp}__old")
    kept = _finished(tmp_path, "kept")
    assert empty_trash(tmp_path, older_than_days=30) == ["old"]
    assert not old.exists() and new.is_dir() and kept.path.is_dir()
    with pytest.raises(RunError, match="number of days"):
        empty_trash(tmp_path, older_than_days=-1)
    assert empty_trash(tmp_path) == ["new"]
    assert list_trash(tmp_path) == [] and [r["run_id"] for r in list_runs(tmp_path)] == ["kept"]
    assert empty_trash(tmp_path / "missing") == []
