"""Damaged or tampered run folders and bundles (issue 12, items 3, 4 and 5).

One real run is trained once (the bundled sample, offline weights, 1 epoch); each case copies it,
damages one file, and checks that predict, evaluate and export refuse it with one plain error that
names the file (CLI: exit 2, "Error: ...", never "Unexpected error", never NaN or null in the JSON),
that run lists show it as damaged instead of failing, that nothing is ever fetched from the network,
and that a bundle is only exported once its own predict.py answers as the run does.
"""
from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

import tl_core
from tl_core.cli import main
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.sample import sample_dir
from tl_core.errors import ExportError, RunError, TransferLabError
from tl_core.results.export import export_bundle, export_run, verify_bundle
from tl_core.results.inference import load_run_model
from tl_core.runs import RunFolder, check_run, list_runs
from tl_core.runs.contents import CROP_MODES, CROP_PCT_RANGE, IMAGE_SIZE_RANGE, INTERPOLATIONS, MEAN_RANGE, STD_RANGE


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One finished run on the sample (1 epoch, head, offline weights), never touched by a test."""
    from tl_core.training.loop import train_run

    runs = tmp_path_factory.mktemp("hardening-runs")
    config = RunConfig(data=DataConfig(root=str(sample_dir())), model=ModelConfig(weights="offline"),
                       freeze=FreezeConfig(preset="head"), train=TrainConfig(epochs=1, seed=0))
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's per-test dirs
        mp.setenv("TL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tl-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = train_run(config, runs)
    assert result.status == "finished", result.message
    return Path(result.run_dir)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A copy of the trained run, in a runs folder of its own, to damage."""
    target = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, target)
    return target


def picture() -> Path:
    return sorted((sample_dir() / "bag").iterdir())[0]


# -- the damage, one file each ----------------------------------------------------------------------

def _json(name: str, value) -> Callable[[Path], None]:
    def write(run: Path) -> None:
        (run / name).write_text(json.dumps(value), encoding="utf-8")
    return write


def _prep(**changes) -> Callable[[Path], None]:
    def write(run: Path) -> None:
        prep = json.loads((run / "preprocessing.json").read_text())
        for key, value in changes.items():
            if value is _DROP:
                prep.pop(key)
            else:
                prep[key] = value
        (run / "preprocessing.json").write_text(json.dumps(prep))
    return write


def _model_name(name: str) -> Callable[[Path], None]:
    def write(run: Path) -> None:
        cfg = json.loads((run / "config.json").read_text())
        cfg["model"]["name"] = name
        (run / "config.json").write_text(json.dumps(cfg))
    return write


def _truncate(run: Path) -> None:
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])


def _random_bytes(run: Path) -> None:
    rng = random.Random(0)
    (run / "model.safetensors").write_bytes(bytes(rng.randrange(256) for _ in range(100_000)))


def _nan_weights(run: Path) -> None:
    state = load_file(str(run / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(run / "model.safetensors"))


def _other_label_count(run: Path) -> None:
    labels = json.loads((run / "labels.json").read_text())
    (run / "labels.json").write_text(json.dumps(labels[:-1]))


_DROP = object()

# id -> (damage, the file the message must name)
LOADING_CASES = {
    "weights-truncated": (_truncate, "model.safetensors"),
    "weights-random-bytes": (_random_bytes, "model.safetensors"),
    "weights-nan": (_nan_weights, "model.safetensors"),
    "prep-no-mean": (_prep(mean=_DROP), "preprocessing.json"),
    "prep-size-0": (_prep(size=0), "preprocessing.json"),
    "prep-size-negative": (_prep(size=-5), "preprocessing.json"),
    "prep-size-text": (_prep(size="abc"), "preprocessing.json"),
    "prep-size-3000": (_prep(size=3000), "preprocessing.json"),
    "prep-interpolation-unknown": (_prep(interpolation="sideways"), "preprocessing.json"),
    "prep-mean-wrong-length": (_prep(mean=[0.5, 0.5]), "preprocessing.json"),
    "prep-std-zeros": (_prep(std=[0, 0, 0]), "preprocessing.json"),
    "prep-crop-pct-tiny": (_prep(crop_pct=0.001), "preprocessing.json"),
    "prep-not-an-object": (_json("preprocessing.json", [224]), "preprocessing.json"),
    "labels-42": (_json("labels.json", 42), "labels.json"),
    "labels-nulls": (_json("labels.json", [None, None]), "labels.json"),
    "labels-numbers": (_json("labels.json", [1, 2]), "labels.json"),
    "labels-text": (_json("labels.json", "ab"), "labels.json"),
    "labels-wrong-count": (_other_label_count, "model.safetensors"),
    "model-unknown": (_model_name("no_such_model"), "config.json"),
    "model-not-in-catalogue": (_model_name("resnet34"), "config.json"),
    "model-hub": (_model_name("hf-hub:timm/resnet18.a1_in1k"), "config.json"),
}


def _damaged(run_copy: Path, case: str) -> str:
    damage, named = LOADING_CASES[case]
    damage(run_copy)
    return named


def _plain(message: str, named: str) -> None:
    assert named in message, message
    assert "Traceback" not in message and "Unexpected error" not in message, message
    assert len(message) < 700, message


# -- item 4: loading refuses every damaged file plainly -----------------------------------------------

@pytest.mark.parametrize("case", LOADING_CASES)
def test_loading_a_damaged_run_names_the_file(run_copy, case):
    named = _damaged(run_copy, case)
    with pytest.raises(RunError) as err:
        check_run(run_copy)
    _plain(str(err.value), named)
    with pytest.raises(RunError, match=named.replace(".", r"\.")):
        load_run_model(run_copy)


@pytest.mark.parametrize("case", LOADING_CASES)
def test_cli_predict_evaluate_export_refuse_plainly(run_copy, case, tmp_path, capsys):
    named = _damaged(run_copy, case)
    commands = (["predict", str(run_copy), str(picture())],
                ["evaluate", str(run_copy)],
                ["export", str(run_copy), "--format", "bundle", "--out", str(tmp_path / "bundle")])
    for argv in commands:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("Error: "), (argv, captured.err)
        _plain(captured.err, named)
        assert "NaN" not in captured.out and "null" not in captured.out, captured.out
    assert not (tmp_path / "bundle").exists()
    assert not list(tmp_path.glob(".bundle*")), list(tmp_path.iterdir())


@pytest.mark.parametrize("case", LOADING_CASES)
def test_run_lists_show_a_damaged_run_as_damaged(run_copy, case, capsys):
    named = _damaged(run_copy, case)
    (desc,) = list_runs(run_copy.parent)
    if case not in ("weights-nan", "labels-wrong-count"):  # these two need the tensors: loading says so
        assert desc["damaged"] and named in desc["damaged"], desc
    assert main(["runs", "--runs-dir", str(run_copy.parent)]) == 0
    json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_sound_run_loads_and_is_not_damaged(trained_run, capsys):
    checked = check_run(trained_run)
    assert checked.model_name == "tf_efficientnet_lite0" and len(checked.classes) == 5
    assert list_runs(trained_run.parent)[0]["damaged"] is None
    assert main(["predict", str(trained_run), str(picture())]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["label"] in checked.classes and 0 < line["probability"] <= 1


@pytest.mark.parametrize("size", [64, 64.0, 1024])
def test_preprocessing_within_the_training_bounds_still_loads(run_copy, size):
    """Older runs (size 64, written as a float by hand) and the largest size training accepts."""
    _prep(size=size, interpolation="bilinear")(run_copy)
    assert load_run_model(run_copy).preprocessing.size == int(size)


def test_bounds_match_what_training_accepts():
    from tl_core.errors import ConfigError

    lo, hi = IMAGE_SIZE_RANGE
    ModelConfig(image_size=lo), ModelConfig(image_size=hi)
    for outside in (lo - 1, hi + 1):
        with pytest.raises(ConfigError):
            ModelConfig(image_size=outside)


def test_a_nan_answer_is_refused_not_printed(trained_run, monkeypatch):
    """Belt and braces behind the checks: a model that answers NaN raises instead of printing it."""
    loaded = load_run_model(trained_run)
    monkeypatch.setattr(loaded, "model", lambda x: torch.full((len(x), len(loaded.classes)), float("nan")))
    from PIL import Image

    with pytest.raises(RunError, match="not a number"):
        loaded.top_k(Image.open(picture()).convert("RGB"))


# -- item 4: status.json and metrics.jsonl ------------------------------------------------------------

def test_status_that_is_not_an_object_shows_as_damaged(run_copy, tmp_path, capsys):
    (run_copy / "status.json").write_text("[1]")
    status = RunFolder(run_copy).status()
    assert status["state"] == "failed" and status["damaged"] and "status.json" in status["message"]
    (desc,) = list_runs(run_copy.parent)
    assert desc["state"] == "failed" and "status.json" in desc["damaged"]
    assert main(["runs", "--runs-dir", str(run_copy.parent)]) == 0
    capsys.readouterr()
    # the model itself is sound: it still predicts and exports, and the status can be written again
    assert main(["predict", str(run_copy), str(picture())]) == 0
    assert main(["export", str(run_copy), "--format", "bundle", "--out", str(tmp_path / "b")]) == 0
    assert "Training state" not in (tmp_path / "b" / "MODEL_CARD.md").read_text()
    RunFolder(run_copy).write_status("stopped", "Stopped by hand.")
    assert RunFolder(run_copy).status()["state"] == "stopped"


def test_metrics_with_invalid_utf8_skip_the_bad_line(run_copy, tmp_path, capsys):
    good = RunFolder(run_copy).epoch_logs()
    with open(run_copy / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"event": "on_epoch_end", "epoch": 2, "logs": {"note": "\xff\xfe"}}\n')
        fh.write(b"[1]\n")
        fh.write(b'{"event": "on_epoch_end", "epoch": "two", "logs": 5}\n')
    assert RunFolder(run_copy).epoch_logs() == good and len(good) == 1
    from tl_core.app.live import live_view

    assert live_view(run_copy).epoch == 1
    assert main(["export", str(run_copy), "--format", "bundle", "--out", str(tmp_path / "b")]) == 0
    assert main(["runs", "--runs-dir", str(run_copy.parent)]) == 0


def test_other_damaged_small_files_are_plain(run_copy, capsys):
    """summary.json, user.json and config.json of the wrong kind: lists go on, loading names the file."""
    (run_copy / "summary.json").write_text('["not", "facts"]')
    (run_copy / "user.json").write_text("7")
    (desc,) = list_runs(run_copy.parent)
    assert desc["state"] == "finished" and desc["title"] is None
    assert main(["evaluate", str(run_copy)]) == 2
    assert "summary.json" in capsys.readouterr().err
    (run_copy / "config.json").write_text('{"data": {"root": "x"}, "train": {"epochs": "many"}}')
    with pytest.raises(RunError, match=r"config\.json"):
        load_run_model(run_copy)
    (desc,) = list_runs(run_copy.parent)
    assert "config.json" in desc["damaged"]


# -- item 5: never the network, never a name outside the catalogue --------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection is recorded and refused; downloads are not turned off."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("the network is off for this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TL_OFFLINE", raising=False)
    return attempts


@pytest.mark.parametrize("name", ["hf-hub:timm/resnet18.a1_in1k", "local-dir:/tmp/model", "timm/resnet18.a1_in1k",
                                  "vit_giant_patch14_224"])
def test_a_run_never_loads_a_model_from_elsewhere(run_copy, name, no_network, capsys):
    _model_name(name)(run_copy)
    assert main(["predict", str(run_copy), str(picture())]) == 2
    assert "config.json" in capsys.readouterr().err
    assert no_network == []


def test_a_bundle_that_names_the_hub_is_refused_by_tl_and_its_predict_script(run_copy, tmp_path, no_network, capsys):
    bundle = export_bundle(run_copy, tmp_path / "bundle")
    prep = json.loads((bundle / "preprocessing.json").read_text())
    prep["model"] = "hf-hub:timm/resnet18.a1_in1k"
    (bundle / "preprocessing.json").write_text(json.dumps(prep))
    assert main(["predict", str(bundle), str(picture())]) == 2
    assert "preprocessing.json" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, str(bundle / "predict.py"), str(picture())], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "0",
                                                       "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert proc.returncode == 2 and "not one of Transfer Lab's models" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert no_network == []


def test_build_network_refuses_hub_names():
    from tl_core.errors import ConfigError
    from tl_core.models.builder import build_network

    with pytest.raises(ConfigError, match="catalogue"):
        build_network("hf-hub:timm/resnet18.a1_in1k", 2, on_meta_device=True)


def test_predict_script_knows_the_catalogue_and_the_bounds():
    """The standalone predict.py cannot import tl_core: its copies of the rules must not drift."""
    import importlib.util

    from tl_core.results.templates import TEMPLATES_DIR

    spec = importlib.util.spec_from_file_location("predict_template", TEMPLATES_DIR / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.CATALOGUE) == {m.pretrained_tag for m in tl_core.catalogue()}
    assert (module.IMAGE_SIZE_RANGE, module.MEAN_RANGE, module.STD_RANGE, module.CROP_PCT_RANGE) == \
        (IMAGE_SIZE_RANGE, MEAN_RANGE, STD_RANGE, CROP_PCT_RANGE)
    assert tuple(module.INTERPOLATIONS) == INTERPOLATIONS and tuple(module.CROP_MODES) == CROP_MODES


# -- item 3: a bundle counts as exported only once its own predict.py answers as the run does ----------

@pytest.mark.parametrize("case", ["weights-truncated", "labels-wrong-count", "prep-no-mean", "model-unknown"])
def test_export_from_a_broken_run_leaves_nothing(run_copy, case, tmp_path):
    named = _damaged(run_copy, case)
    for out in (tmp_path / "new" / "bundle", tmp_path / "model.zip"):
        with pytest.raises(TransferLabError, match=named.replace(".", r"\.")):
            export_run(run_copy, "bundle", out)
        assert not out.exists()
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_bundle_that_answers_differently_is_not_exported(run_copy, tmp_path, monkeypatch):
    """The check really runs the bundle's predict.py: a script that computes something else fails it."""
    import tl_core.results.export as ex
    from tl_core.results.templates import template_text

    broken = template_text("predict.py").replace("batch.to(torch.float32) * scale - shift",
                                                 "batch.to(torch.float32) * scale")
    assert broken != template_text("predict.py")
    monkeypatch.setattr(ex, "model_card", lambda run_dir: "card")  # quicker; not what is checked
    import tl_core.results.templates as templates

    monkeypatch.setattr(templates, "template_text", lambda name: broken)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="does not reproduce"):
        export_bundle(run_copy, existing)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "runs"]


def test_a_sound_bundle_is_verified_and_loads_everywhere(trained_run, tmp_path):
    bundle = export_bundle(trained_run, tmp_path / "bundle")
    line = verify_bundle(bundle, load_run_model(trained_run))
    assert line["label"] in check_run(trained_run).classes
    assert check_run(bundle).model_name == "tf_efficientnet_lite0"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    export_bundle(trained_run, existing)
    assert {"notes.txt", "predict.py", "model.safetensors"} <= {p.name for p in existing.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
