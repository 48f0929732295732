"""Time estimates a teacher can plan a lesson on: robust to passing load, priced with the user's own
pictures, remembered per computer and corrected by the real runs on it (tl_core.training.estimate)."""
from __future__ import annotations

import json
import shutil

import pytest

import tl_core
from tl_core.cli import main
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.sample import sample_dir
from tl_core.training import estimate

MODEL = "tf_efficientnet_lite0"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """Measurements and the run history live in TL_CACHE_DIR: each test gets its own."""
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    estimate.clear_cache()
    yield tmp_path / "cache"
    estimate.clear_cache()


def _config(root, preset="head", epochs=3, size=64) -> RunConfig:
    return RunConfig(data=DataConfig(root=str(root)), model=ModelConfig(MODEL, image_size=size),
                     freeze=FreezeConfig(preset=preset), train=TrainConfig(epochs=epochs))


def test_timing_takes_the_best_of_several_runs(monkeypatch):
    """A burst of other work slows one run down; the estimate must not follow it."""
    import torch

    durations = iter([5.0, 0.9, 0.1, 0.3])   # warm-up, then three runs, one disturbed
    clock = {"now": 0.0}

    def fake_fn():
        clock["now"] += next(durations)

    monkeypatch.setattr(estimate.time, "perf_counter", lambda: clock["now"])
    assert estimate._timed(fake_fn, torch.device("cpu"), 3) == pytest.approx(0.1)


def test_planned_split_follows_the_folder(tmp_path):
    flat_train, flat_val, paths = estimate.planned_split(str(sample_dir()), 0.2)
    assert (flat_train, flat_val) == (160, 40) and len(paths) == 200
    own = tmp_path / "own"
    for split, n in (("train", 6), ("val", 3)):
        for label in ("bag", "sandal"):
            (own / split / label).mkdir(parents=True)
            for src in sorted((sample_dir() / label).iterdir())[:n]:
                shutil.copy(src, own / split / label / src.name)
    assert estimate.planned_split(str(own), 0.2)[:2] == (12, 6)   # the folder's own val/, not 20%


def test_reading_cost_comes_from_the_users_pictures(tmp_path):
    pngs = sorted(str(p) for p in (sample_dir() / "bag").iterdir())[:5]
    small = estimate.sample_read_seconds(pngs)
    assert 0 < small < 0.5
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    assert estimate.sample_read_seconds([str(broken)]) == estimate.DECODE_SECONDS_PER_IMAGE
    assert estimate.sample_read_seconds([]) == estimate.DECODE_SECONDS_PER_IMAGE


def test_estimate_is_measured_once_per_computer(fresh_cache):
    config = _config(sample_dir())
    assert estimate.estimate(config, measure_now=False) is None       # a page never waits
    first = estimate.estimate(config)
    assert first.n_train == 160 and first.n_val == 40 and first.mode == "features"
    assert first.prepare_seconds > 0 and first.epoch_seconds > 0 and first.runs_used == 0
    saved = json.loads((fresh_cache / estimate.TIMINGS_FILE).read_text())
    assert any(MODEL in key and '"head"' in key for key in saved["measurements"])
    estimate._CACHE.clear()                                           # a new server process
    again = estimate.estimate(config, measure_now=False)
    assert again is not None and again.measurement == first.measurement
    assert tl_core.estimate(config).measurement == first.measurement  # the public API is the same function


def test_real_runs_correct_later_estimates(fresh_cache):
    config = _config(sample_dir())
    formula = estimate.estimate(config)
    estimate.record_run(config, formula.mode, 160, 40, prepare_seconds=formula.prepare_seconds * 3,
                        epoch_seconds=[9.0, formula.epoch_seconds * 2, formula.epoch_seconds * 2],
                        read_seconds=formula.read_seconds)
    corrected = estimate.estimate(config)
    assert corrected.runs_used == 1
    assert corrected.epoch_seconds == pytest.approx(2 * formula.epoch_seconds, rel=1e-6)  # first epoch left out
    assert corrected.prepare_seconds == pytest.approx(3 * formula.prepare_seconds, rel=1e-6)
    # another setting is not corrected by it, and a run far off the formula is clamped
    assert estimate.estimate(_config(sample_dir(), preset="last:1")).runs_used == 0
    estimate.record_run(config, formula.mode, 160, 40, prepare_seconds=None,
                        epoch_seconds=[formula.epoch_seconds * 1000], read_seconds=formula.read_seconds)
    assert estimate.calibration(formula.measurement, estimate._history_key(config, formula.mode))[1] <= \
        estimate.FACTOR_RANGE[1]


def test_a_damaged_timings_file_is_ignored(fresh_cache):
    fresh_cache.mkdir(parents=True, exist_ok=True)
    (fresh_cache / estimate.TIMINGS_FILE).write_text("{not json")
    assert estimate.run_history() == []
    assert estimate.estimate(_config(sample_dir())).runs_used == 0   # and it is rewritten whole


def test_cli_estimate_contract_and_training_refines_it(fresh_cache, tmp_path, capsys):
    args = ["estimate", str(sample_dir()), "--model", MODEL, "--freeze", "head", "--epochs", "3",
            "--image-size", "64"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("prepare_seconds", "epoch_seconds", "total_seconds", "n_train", "n_val", "runs_used"):
        assert key in out
    assert out["total_seconds"] == pytest.approx(out["prepare_seconds"] + 3 * out["epoch_seconds"])
    assert out["runs_used"] == 0
    assert main(["train", str(sample_dir()), "--model", MODEL, "--epochs", "3", "--image-size", "64",
                 "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    capsys.readouterr()
    (record,) = estimate.run_history()
    assert record["model"] == MODEL and record["n_train"] == 160 and record["epoch_seconds"] > 0
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs_used"] == 1


def test_cli_estimate_plain_errors(fresh_cache, tmp_path, capsys):
    assert main(["estimate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["estimate", str(sample_dir()), "--model", "not_a_model"]) == 2
    assert "Unknown model" in capsys.readouterr().err
