"""The Lab (issue 14): the `tl lab` JSON contracts, one feature pass for the whole data-size experiment
(forward passes counted), conclusions that follow the numbers, Stop and restarts, plain errors before any
folder exists, and pretrained beating scratch on real photos.

Trainings are tiny (the bundled 200-picture sample or the 80 pet photos, small images, 1-3 passes, fixed
seeds) and run in-process through `tl_core.cli.main`, so the numbers checked are the command line's own."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tl_core.cli import main
from tl_core.data.sample import sample_dir
from tl_core.lab import ExperimentFolder, list_experiments
from tl_core.lab.words import category_trend, tell_apart, wilson

SAMPLE = str(sample_dir())
PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets" / "few"
TINY = ["--weights", "offline", "--epochs", "1", "--seed", "0"]


def lab(capsys, *args) -> tuple[int, dict, str]:
    """``tl lab ...`` in this process: (exit code, the last stdout line as JSON, all of stdout)."""
    code = main(["lab", *map(str, args)])
    out = capsys.readouterr().out
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return code, json.loads(lines[-1]), out


@pytest.fixture
def exp_dir(tmp_path) -> Path:
    return tmp_path / "experiments"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty feature cache: the feature pass really happens in this test (the converted offline
    weights are made again, once, from the bundled package)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TL_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def forward_count(monkeypatch) -> dict:
    """Pictures that go through the first layer of any network tl_core builds with weights (the feature
    pass of the experiment and of every training run)."""
    import tl_core.models.weights as weights

    count = {"pictures": 0, "networks": 0}
    real = weights.build_network

    def counting(*args, **kwargs):
        model = real(*args, **kwargs)
        if not kwargs.get("on_meta_device"):
            count["networks"] += 1
            stem = getattr(model, "conv_stem", None) or next(m for m in model.modules() if m is not model)
            stem.register_forward_pre_hook(lambda _m, inputs: count.__setitem__("pictures",
                                                                                 count["pictures"] + len(inputs[0])))
        return model

    monkeypatch.setattr(weights, "build_network", counting)
    return count


# -- plain errors, exit code 2, nothing created --------------------------------------------------------

@pytest.fixture(scope="module")
def one_category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one-category")
    (root / "bags").mkdir()
    for p in sorted((sample_dir() / "bag").iterdir())[:5]:
        (root / "bags" / p.name).write_bytes(p.read_bytes())
    return root


@pytest.mark.parametrize("args,needle", [
    (["layers", SAMPLE, "--presets", "head,sideways"], "Unknown freeze preset"),
    (["layers", SAMPLE, "--presets", "last:40"], "layer groups"),
    (["models", SAMPLE, "--models", "tf_efficientnet_lite0,not_a_model"], "Unknown model"),
    (["scratch", SAMPLE, "--model", "not_a_model"], "Unknown model"),
    (["models", SAMPLE, "--models", "resnet18", "--weights", "offline"], "no weights ready offline"),
    (["data-size", SAMPLE, "--fractions", "0,0.5"], "more than 0 and at most 1"),
    (["data-size", SAMPLE, "--fractions", "0.5,1.5"], "more than 0 and at most 1"),
    (["data-size", SAMPLE, "--fractions", "half"], "not a share"),
    (["data-size", SAMPLE, "--repeats", "0"], "Repeats"),
    (["scratch", SAMPLE, "--epochs", "0"], "Epochs"),
    (["scratch", "/no/such/folder"], "does not exist"),
])
def test_bad_inputs_are_plain_errors_with_exit_2_and_no_folder(args, needle, exp_dir, capsys):
    code = main(["lab", *args, "--experiments-dir", str(exp_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("Error:") and needle.lower() in err.lower() and "Traceback" not in err
    assert not exp_dir.exists()


@pytest.mark.parametrize("kind", ["scratch", "data-size", "layers", "models"])
def test_a_folder_with_one_category_is_refused_before_any_folder(kind, one_category, exp_dir, capsys):
    code = main(["lab", kind, str(one_category), "--experiments-dir", str(exp_dir), "--weights", "offline"])
    err = capsys.readouterr().err
    assert code == 2 and "2 categories" in err, err
    assert not exp_dir.exists()


def test_an_unknown_experiment_is_a_usage_error_with_exit_2(exp_dir, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["lab", "sideways", SAMPLE, "--experiments-dir", str(exp_dir)])
    assert stopped.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not exp_dir.exists()


# -- data-size: the contract, the same held-out pictures, one feature pass -----------------------------

def test_data_size_contract_same_checking_pictures_and_one_feature_pass(exp_dir, fresh_cache, forward_count, capsys):
    code, out, printed = lab(capsys, "data-size", SAMPLE, *TINY, "--fractions", "0.25,1", "--repeats", "2",
                             "--experiments-dir", exp_dir)
    assert code == 0, printed
    assert out["experiment"] == "data-size" and out["status"] == "finished"
    assert Path(out["experiment_dir"]).parent == exp_dir
    assert [p["fraction"] for p in out["points"]] == [0.25, 1.0]
    for point in out["points"]:
        assert set(point) >= {"fraction", "per_class", "accuracy", "accuracy_ci", "pictures_per_category"}
        lo, hi = point["accuracy_ci"]
        assert 0 <= lo <= point["accuracy"] <= hi <= 1
        assert all(lo <= r["accuracy"] <= hi for r in point["repeats"])   # the range covers every repeat
        assert sorted(point["per_class"]) == ["bag", "sandal", "sneaker", "t-shirt", "trouser"]
        assert len(point["repeats"]) == 2
    assert out["points"][0]["pictures_per_category"] == 8 and out["points"][1]["pictures_per_category"] == 32
    assert isinstance(out["conclusion"], str) and 2 <= out["conclusion"].count(". ") + 1 <= 3
    assert {c["verdict"] for c in out["categories"]} <= {"likely to help", "levelling off", "near the top",
                                                          "cannot tell"}

    # one forward pass over the 200 pictures for all four runs: every run found its features cached
    assert out["features_computed_once"] is True and out["pictures_through_network"] == 200
    assert forward_count["pictures"] == 200, forward_count

    # the experiment folder holds its settings, results and every run it made
    folder = Path(out["experiment_dir"])
    for name in ("experiment.json", "status.json", "results.json", "parts.jsonl"):
        assert (folder / name).is_file(), name
    runs = sorted(p for p in (folder / "runs").iterdir() if (p / "config.json").is_file())
    assert len(runs) == 4
    # the same 40 held-out pictures (the same originals, in the same order) checked every run
    held_out = set()
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        held_out.add(tuple(r["path"].split("/val/", 1)[1] for r in summary["val_records"]))
    assert len(held_out) == 1 and len(next(iter(held_out))) == 40
    assert json.loads((folder / "results.json").read_text())["points"] == out["points"]


def test_models_experiment_computes_one_feature_pass_per_model(fmnist_small, exp_dir, fresh_cache, forward_count,
                                                              capsys):
    code, out, printed = lab(capsys, "models", fmnist_small, *TINY, "--image-size", "64", "--models",
                             "tf_efficientnet_lite0,tf_efficientnet_lite1", "--experiments-dir", exp_dir)
    assert code == 0, printed
    assert [r["model"] for r in out["results"]] == ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
    for r in out["results"]:
        assert set(r) >= {"model", "title", "accuracy", "accuracy_ci", "seconds", "params_m", "size_mb", "run_dir"}
        assert r["seconds"] > 0 and r["size_mb"] > 0
    # each model: its own features, computed once (training's own pass also sizes up one picture of each
    # of its two lists first, to see whether all the features fit in memory)
    assert forward_count["pictures"] == 2 * (60 + 2)
    assert out["conclusion"]


def test_layers_contract(fmnist_small, exp_dir, capsys):
    code, out, printed = lab(capsys, "layers", fmnist_small, *TINY, "--image-size", "64", "--presets", "head,last:1",
                             "--experiments-dir", exp_dir)
    assert code == 0, printed
    assert [r["preset"] for r in out["results"]] == ["head", "last:1"]
    for r in out["results"]:
        assert set(r) >= {"preset", "learns", "accuracy", "accuracy_ci", "train_accuracy", "gap", "seconds"}
    assert out["results"][0]["trainable_params"] < out["results"][1]["trainable_params"]
    assert out["conclusion"]


def test_scratch_contract(fmnist_small, exp_dir, capsys):
    code, out, printed = lab(capsys, "scratch", fmnist_small, *TINY, "--image-size", "32", "--experiments-dir",
                             exp_dir)
    assert code == 0, printed
    for arm in ("pretrained", "scratch"):
        assert set(out[arm]) >= {"accuracy", "accuracy_ci", "seconds"}
        assert out[arm]["accuracy_ci"][0] <= out[arm]["accuracy"] <= out[arm]["accuracy_ci"][1]
        assert len(out[arm]["curve"]) == 1
    assert out["scratch"]["trainable_params"] > out["pretrained"]["trainable_params"]
    assert out["conclusion"].count(".") >= 2
    printed_lines = printed.strip().splitlines()
    assert printed_lines[-2] == out["conclusion"]       # said in words just before the JSON


def test_the_best_weights_copy_only_what_training_changes():
    """Twelve classifier-only runs must not copy 3.4 M frozen numbers at every improved epoch: only
    the trainable parameters and the statistics of modules in train mode are copied; the kept state is
    still complete and right (training.callbacks.BestEpoch)."""
    import torch
    from torch import nn

    from tl_core.models.freezing import set_train_mode
    from tl_core.training.callbacks import BestEpoch, changing_state_names

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3), nn.BatchNorm1d(3, affine=False))
    for p in list(model[0].parameters()) + list(model[1].parameters()):
        p.requires_grad_(False)
    set_train_mode(model)
    assert changing_state_names(model) == {"2.weight", "2.bias", "3.running_mean", "3.running_var",
                                           "3.num_batches_tracked"}
    best = BestEpoch()
    assert best.update(1, 1.0, 0.5, model)
    kept = {k: v.clone() for k, v in best.state.items()}
    with torch.no_grad():
        model[2].weight.add_(1.0)
        model(torch.randn(5, 4))   # BatchNorm statistics of the module in train mode move
    assert torch.equal(best.state["2.weight"], kept["2.weight"])           # a copy: the change is not in it
    assert torch.equal(best.state["3.running_mean"], kept["3.running_mean"])
    assert set(best.state) == set(model.state_dict())
    model.load_state_dict(best.state)
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())


# -- Stop keeps the finished runs; a restart redraws from the folder -----------------------------------

def test_progress_moves_forward_and_stop_keeps_finished_runs(fmnist_small, exp_dir):
    import tl_core
    from tl_core.lab import DataSizeExperiment

    stop = threading.Event()
    seen = []

    def progress(p) -> None:
        seen.append(p)
        if p.parts_done >= 1:
            stop.set()   # Stop, as the page's button does, once the first run has finished

    created = tl_core.create_experiment(DataSizeExperiment(str(fmnist_small), weights="offline", epochs=1,
                                                           fractions="0.5,1", repeats=2), exp_dir)
    results = created.run(stop, progress)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1
    assert {p.parts_total for p in seen} == {4} and seen[-1].parts_done == 1
    assert results["status"] == "stopped" and "Stopped by you after 1 of 4" in results["message"]
    assert results["runs_done"] == 1 and len(results["points"]) == 1 and results["points"][0]["fraction"] == 0.5
    assert results["conclusion"]
    folder = ExperimentFolder.open(created.path)
    assert folder.status()["state"] == "stopped"
    assert folder.results() == json.loads(json.dumps(results))
    [row] = list_experiments(exp_dir)
    assert row["state"] == "stopped" and row["kind"] == "data-size" and row["conclusion"] == results["conclusion"]


def test_time_left_follows_the_speed_so_far():
    from tl_core.lab.runner import expected_work, time_left

    assert time_left(0.5, 10, 100) is None and time_left(20, 1, 100) is None   # too early to say
    assert time_left(10, 25, 100) == pytest.approx(30)                           # a quarter in 10 s: 30 s left
    assert time_left(40, 100, 100) == 0
    # a from-scratch run is expected to cost far more than a classifier-only run on the same pictures
    assert sum(expected_work("scratch", 160, 40, 3)) > 5 * sum(expected_work("head", 160, 40, 3))
    assert expected_work("head", 160, 40, 3, features_ready=True)[0] < expected_work("head", 160, 40, 3)[0]


def test_an_experiment_whose_process_died_reads_as_interrupted(tmp_path):
    import subprocess
    import sys

    folder = ExperimentFolder.create("layers", {"data_dir": "x"}, tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status = json.loads((folder.path / "status.json").read_text())
    (folder.path / "status.json").write_text(json.dumps({**status, "pid": int(gone.stdout)}))
    assert folder.status()["state"] == "stopped" and folder.status()["interrupted"]
    (folder.path / "parts.jsonl").write_text('{"key": "a", "status": "finished"}\n{"key": "b", "sta')
    assert [p["key"] for p in folder.parts()] == ["a"]    # a line cut short by the crash is skipped


# -- conclusions follow the numbers -----------------------------------------------------------------------

def test_overlapping_ranges_cannot_be_told_apart():
    # the example: 30 checking pictures, 90% against 93%
    clear, sentence = tell_apart("model A", 0.90, wilson(0.90, 30), "model B", 0.93, wilson(0.93, 30), 30)
    assert not clear and "cannot tell apart" in sentence and "only 30 pictures" in sentence
    assert sentence.startswith("Model B scored higher (93% against 90%)")
    clear, sentence = tell_apart("the pretrained start", 0.95, wilson(0.95, 200), "the random start", 0.40,
                                 wilson(0.40, 200), 200)
    assert clear and "clearly better" in sentence and "cannot" not in sentence


def test_scratch_conclusion_follows_the_numbers():
    from tl_core.lab.scratch import conclusion

    def arm(acc, n, seconds, params):
        return {"accuracy": acc, "accuracy_ci": wilson(acc, n), "seconds": seconds, "val_pictures": n,
                "trainable_params": params}

    text = conclusion(arm(0.95, 40, 5, 6405), arm(0.30, 40, 60, 3_000_000), 3)
    assert "clearly better" in text and "12 times as long" in text and "95%" in text and "30%" in text
    text = conclusion(arm(0.60, 10, 5, 6405), arm(0.50, 10, 6, 3_000_000), 3)
    assert "cannot tell apart" in text
    assert "Only the run from ImageNet weights finished" in conclusion(arm(0.9, 40, 5, 6405), None, 3)


def test_data_size_conclusion_and_categories_follow_the_numbers():
    from tl_core.lab.data_size import conclusion

    def point(x, acc, n=40):
        return {"pictures_per_category": x, "accuracy": acc, "accuracy_ci": wilson(acc, n), "val_pictures": n}

    flat = conclusion([point(4, 0.88), point(8, 0.90), point(16, 0.91)])
    assert "cannot tell apart the smallest and the largest" in flat and "levelling off" in flat
    rising = conclusion([point(4, 0.30, 400), point(8, 0.55, 400), point(16, 0.80, 400)])
    assert "clearly helped" in rising and "likely to help further" in rising
    assert "hint, not proof" in conclusion([point(4, 0.6, 20), point(8, 0.7, 20)])
    assert len(flat.split(". ")) == 3

    assert category_trend([0.5, 0.7], 30)[0] == "likely to help"
    assert category_trend([0.7, 0.72], 30)[0] == "levelling off"
    assert category_trend([0.9, 1.0], 30)[0] == "near the top"
    verdict, sentence = category_trend([0.5, 0.7], 8)
    assert "rough guide" in sentence and "only 8" in sentence
    assert category_trend([0.5], 30)[0] == "cannot tell"


def test_layers_and_models_conclusions_follow_the_numbers():
    from tl_core.lab import layers, models

    def row(preset, learns, acc, train, seconds, n=40):
        return {"preset": preset, "learns": learns, "accuracy": acc, "accuracy_ci": wilson(acc, n),
                "train_accuracy": train, "gap": train - acc, "seconds": seconds, "val_pictures": n}

    text = layers.conclusion([row("head", "only the new classifier", 0.90, 0.92, 3),
                              row("none", "every layer", 0.80, 1.0, 40)])
    assert text.startswith("Letting only the new classifier learn did best: 90%")
    assert "overfitting" in text and "cannot tell apart" in text

    def model(title, acc, seconds, params, n=40):
        return {"title": title, "accuracy": acc, "accuracy_ci": wilson(acc, n), "seconds": seconds,
                "params_m": params, "val_pictures": n}

    text = models.conclusion([model("Big", 0.93, 30, 6.1), model("Small", 0.90, 10, 4.7)])
    assert text.startswith("Big was the most accurate") and "cannot tell apart" in text
    assert "Small took 10 s against 30 s" in text and "lighter model" in text


# -- real photos: a pretrained start beats random weights ------------------------------------------------

@pytest.mark.skipif(not PETS.is_dir(), reason="the shared pets photos are not on this machine")
def test_pretrained_beats_scratch_on_real_photos(exp_dir, capsys):
    """80 cat and dog photos (half kept aside to check with), 128 px, 10 passes: 12 s on a quiet 2-core
    machine, so it is in the fast tier. Measured: 92% against 50% (seed 0), 95% against 52% (seed 1)."""
    code, out, printed = lab(capsys, "scratch", PETS, "--weights", "offline", "--epochs", "10", "--seed", "0",
                             "--image-size", "128", "--val-fraction", "0.5", "--experiments-dir", exp_dir)
    assert code == 0, printed
    pre, scratch = out["pretrained"], out["scratch"]
    assert out["val_pictures"] == 40
    assert pre["accuracy"] >= 0.8 and pre["accuracy"] > scratch["accuracy"] + 0.15, (pre["accuracy"],
                                                                                     scratch["accuracy"])
    clear = pre["accuracy_ci"][0] > scratch["accuracy_ci"][1]
    assert ("clearly better" in out["conclusion"]) == clear and ("cannot tell apart" in out["conclusion"]) != clear
    assert scratch["trainable_params"] > 1000 * pre["trainable_params"]
