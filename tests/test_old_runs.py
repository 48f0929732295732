"""Run folders written before tl_core was regrouped still load, redraw, evaluate, predict and export.

``fixtures/run_before_regroup`` holds the text files of a real run made by the code of commit
249215d (``tl train assets/sample --epochs 2 --image-size 64``), with the sample's path replaced by
``@SAMPLE@``. Its 13 MB weights are not stored: the test writes weights with the same keys and
shapes (the same timm network; only the values differ, which no loader looks at).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file

import tl_core
from tl_core.app.live import live_view
from tl_core.app.state import state_from_runs
from tl_core.data.sample import sample_dir
from tl_core.models import build_network
from tl_core.runs import RunFolder, list_runs

FIXTURE = Path(__file__).parent / "fixtures" / "run_before_regroup"
RUN_ID = "20261128-051903-tf_efficientnet_lite0-9bfb"


@pytest.fixture
def old_run(tmp_path) -> Path:
    run_dir = tmp_path / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    for f in FIXTURE.iterdir():
        text = f.read_text(encoding="utf-8")
        text = text.replace("@SAMPLE@", str(sample_dir())).replace("@RUN_DIR@", str(run_dir))
        (run_dir / f.name).write_text(text, encoding="utf-8")
    model = build_network("tf_efficientnet_lite0", 5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run_dir / "model.safetensors"),
              metadata={"epoch": "2", "val_accuracy": "0.900000"})
    return run_dir


def test_old_run_is_listed_and_redrawn(old_run):
    run = RunFolder.open(old_run)
    assert run.config().model.name == "tf_efficientnet_lite0" and run.config().train.epochs == 2
    assert run.labels() == ["bag", "sandal", "sneaker", "t-shirt", "trouser"]
    (desc,) = list_runs(old_run.parent)
    assert desc["state"] == "finished" and desc["best_val_accuracy"] == pytest.approx(0.9)
    assert [log["epoch"] for log in run.epoch_logs()] == [1, 2]
    view = live_view(old_run)
    assert view.state == "finished" and view.epoch == 2 and view.epochs == 2 and view.fraction == 1.0
    assert view.info["mode"] == "features" and view.result["best_epoch"] == 2
    assert len(view.batch_events) >= 2 and "2 of 2 epochs done" in view.progress_text()
    state = state_from_runs(list_runs(old_run.parent))
    assert state.run_dir == str(old_run) and state.model_name == "tf_efficientnet_lite0"


def test_old_run_evaluates_predicts_and_exports(old_run, tmp_path):
    report = tl_core.evaluate(old_run)                 # its validation pictures, from summary.json
    assert report.n == 40 and report.classes == ["bag", "sandal", "sneaker", "t-shirt", "trouser"]
    picture = next((sample_dir() / "bag").iterdir())
    (line,) = tl_core.predict(old_run, [picture])
    assert line["label"] in report.classes and 0.0 <= line["probability"] <= 1.0
    bundle = tl_core.export(old_run, "bundle", tmp_path / "old.zip")
    assert bundle.is_file() and bundle.stat().st_size > 1_000_000
