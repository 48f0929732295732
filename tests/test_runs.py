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
