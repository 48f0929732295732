"""A finished run's evaluation, bundle and likely label mistakes, prepared in the background (issue 11,
"No blind waits"; issue 13)."""
from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from tl_core.app import aftercare
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.sample import sample_dir
from tl_core.results.evaluate import load_evaluation


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One epoch on the sample at 64 px with the offline weights."""
    from tl_core.training.loop import train_run

    runs = tmp_path_factory.mktemp("aftercare-runs")
    config = RunConfig(data=DataConfig(root=str(sample_dir())), model=ModelConfig(weights="offline", image_size=64),
                       freeze=FreezeConfig(preset="head"), train=TrainConfig(epochs=1, seed=0))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tl-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = train_run(config, runs)
    assert result.status == "finished", result.message
    return Path(result.run_dir)


@pytest.fixture
def run(finished_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the run and an empty bundle cache, so each test starts with nothing prepared."""
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "runs" / finished_run.name
    shutil.copytree(finished_run, copy)
    (copy / "eval_val.json").unlink(missing_ok=True)
    return copy


def test_prepare_evaluates_and_makes_a_verified_bundle_once(run):
    assert not aftercare.evaluation_is_ready(run) and not aftercare.bundle_is_ready(run)
    assert aftercare.prepare(run) == {"evaluation": True, "bundle": True, "mistakes": True}
    assert aftercare.mistakes_are_ready(run)                      # label_issues.json (tests/test_label_mistakes.py)
    report = load_evaluation(run)
    assert report is not None and report.n > 0
    bundle = aftercare.bundle_cache_path(run)
    with zipfile.ZipFile(io.BytesIO(bundle.read_bytes())) as zf:
        names = zf.namelist()
    assert any(n.endswith("model.safetensors") for n in names) and any(n.endswith("predict.py") for n in names)
    made = bundle.stat().st_ino   # a new bundle is a new file (written aside, then moved in place)
    assert aftercare.bundle_bytes(run) == bundle.read_bytes()   # the download hands over the prepared file
    aftercare.prepare(run)
    assert bundle.stat().st_ino == made                         # nothing made twice


def test_new_weights_make_a_new_bundle_and_forget_the_old_one(run):
    aftercare.prepare(run)
    old = aftercare.bundle_cache_path(run)
    weights = run / "model.safetensors"
    # training saved better weights after the evaluation was made (set in the past, not the future:
    # an evaluation made within the next seconds must count as newer than these weights)
    now = time.time()
    os.utime(run / "eval_val.json", (now - 20, now - 20))
    os.utime(weights, (now - 10, now - 10))
    assert not aftercare.evaluation_is_ready(run) and not aftercare.bundle_is_ready(run)
    aftercare.prepare(run)
    new = aftercare.bundle_cache_path(run)
    assert new != old and new.is_file() and not old.exists()
    assert aftercare.evaluation_is_ready(run)


def test_nothing_is_prepared_while_a_model_trains(run):
    assert aftercare.prepare(run, busy=lambda: True) == {"evaluation": False, "bundle": False, "mistakes": False}
    assert not (run / "eval_val.json").exists()


def test_unfinished_runs_are_left_alone(run):
    status = run / "status.json"
    status.write_text(status.read_text().replace('"finished"', '"stopped"'))
    assert aftercare.prepare(run) == {"evaluation": False, "bundle": False, "mistakes": False}


def test_in_the_background_once_per_run_and_failures_stay_quiet(run, caplog):
    thread = aftercare.prepare_in_background(run)
    assert thread is not None
    assert aftercare.prepare_in_background(run) in (thread, None)   # never a second one for the same run
    thread.join(120)
    assert aftercare.evaluation_is_ready(run) and aftercare.bundle_is_ready(run)
    assert aftercare.prepare_in_background(run) is None              # all ready: nothing to start
    assert aftercare.running(run) is None

    broken = run.parent / "broken"
    shutil.copytree(run, broken)
    (broken / "eval_val.json").unlink()
    (broken / "model.safetensors").write_bytes(b"not weights")
    thread = aftercare.prepare_in_background(broken)
    thread.join(60)
    assert not aftercare.evaluation_is_ready(broken)                 # logged, not raised: the page explains
