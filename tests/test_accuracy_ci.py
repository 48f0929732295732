"""Honest accuracy (issue 13): every evaluation carries its 95% range (``accuracy_ci``), saved with
it; older saved evaluations without it still load and get it; the Train page's "Best accuracy"
shows it. A real run trained on pets photos (``../shared/datasets/pets``) is evaluated."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tl_core
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.results.evaluate import EvalReport, load_evaluation
from tl_core.results.stats import accuracy_interval, range_words

PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pets_run(tmp_path_factory) -> Path:
    """A "classifier only" run on the 80 pets photos of few/train (16 kept aside to check it)."""
    if not (PETS / "few").is_dir():
        pytest.skip(f"the pets photos are not at {PETS}")
    config = RunConfig(data=DataConfig(root=str(PETS / "few" / "train")),
                       model=ModelConfig(name="tf_efficientnet_lite0", weights="offline"),
                       freeze=FreezeConfig(preset="head"), train=TrainConfig(epochs=2, seed=0))
    result = tl_core.train(config, runs_dir=tmp_path_factory.mktemp("runs"))
    assert result.status == "finished", result.message
    return Path(result.run_dir)


@pytest.fixture
def pets_test_slice(tmp_path) -> Path:
    """40 pets photos the run never saw (20 per category, from few/test)."""
    for label in ("cat", "dog"):
        (tmp_path / "test" / label).mkdir(parents=True)
        for f in sorted((PETS / "few" / "test" / label).iterdir())[:20]:
            shutil.copy2(f, tmp_path / "test" / label / f.name)
    return tmp_path / "test"


def test_a_real_evaluation_carries_its_range_and_saves_it(pets_run, pets_test_slice):
    report = tl_core.evaluate(pets_run, pets_test_slice)
    assert report.n == 40
    low, high = report.accuracy_ci
    assert (low, high) == accuracy_interval(report.correct, 40)
    assert report.correct == round(report.accuracy * 40)
    assert 0 <= low <= report.accuracy <= high <= 1 and high - low > 0.1   # 40 pictures cannot pin it down
    out = report.to_dict()
    assert out["accuracy_ci"] == [low, high]
    json.dumps(out)
    saved = json.loads((pets_run / f"eval_{report.name}.json").read_text())
    assert saved["accuracy_ci"] == [low, high]
    assert load_evaluation(pets_run, report.name).accuracy_ci == (low, high)


def test_tl_evaluate_prints_the_range(pets_run):
    proc = subprocess.run([sys.executable, "-m", "tl_core", "evaluate", str(pets_run)], capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    low, high = out["accuracy_ci"]
    assert low <= out["accuracy"] <= high and out["n"] == 16


def test_an_old_saved_evaluation_without_the_range_still_loads(tmp_path):
    report = EvalReport.from_predictions(
        ["cat", "dog"], [{"path": f"{i}.jpg", "true": "cat" if i < 6 else "dog", "pred": "cat" if i < 5 else "dog",
                          "confidence": 0.9, "probs": [0.9, 0.1]} for i in range(10)], name="val")
    old = report.to_dict(include_items=True)
    del old["accuracy_ci"]                  # as written before the range existed
    (tmp_path / "eval_val.json").write_text(json.dumps(old))
    loaded = load_evaluation(tmp_path)
    assert loaded.accuracy == pytest.approx(0.9) and loaded.correct == 9 and loaded.n == 10
    assert loaded.accuracy_ci == accuracy_interval(9, 10)
    assert loaded.accuracy_ci[0] == pytest.approx(0.5958, abs=1e-4)   # Wilson: 9 of 10 is 60-98%
    assert loaded.to_dict()["accuracy_ci"] == list(accuracy_interval(9, 10))


def test_range_words():
    assert range_words(0.9, 30) == "95% range: 74-97%"
    assert range_words(1.0, 16) == "95% range: 81-100%"
    assert range_words(None, 30) == range_words(0.9, None) == range_words(0.9, 0) == ""


def test_train_page_best_accuracy_shows_its_range(pets_run, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TL_RUNS_DIR", str(pets_run.parent))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    session = tmp_path / "workspace" / "sessions" / "ci-session"
    session.mkdir(parents=True)
    (session / "ui_state.json").write_text(json.dumps({
        "data_root": str(PETS / "few" / "train"), "data_source": "path", "val_fraction": 0.2,
        "model_name": "tf_efficientnet_lite0", "freeze": {"preset": "head", "frozen_groups": None,
                                                          "layer_lr_decay": 1.0},
        "train": {}, "run_dir": str(pets_run)}))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["session"] = "ci-session"
    at.switch_page("pages/4_Train.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (best,) = [m for m in at.metric if m.label == "Best accuracy"]
    assert re.fullmatch(r"\d+\.\d%", best.value), best.value
    accuracy = float(best.value.rstrip("%")) / 100
    assert best.delta == range_words(accuracy, 16)
    assert best.delta.startswith("95% range: ")
