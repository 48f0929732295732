"""The headless contract (README, "The command line"), end to end through real `python -m tl_core` processes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def tl(*args, cwd=None, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("TL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "tl_core", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def last_json(proc):
    lines = [l for l in proc.stdout.strip().splitlines() if l.strip()]
    assert lines, proc.stderr
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def trained(fmnist_small, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cli-runs")
    proc = tl("train", fmnist_small, "--model", "tf_efficientnet_lite0", "--weights", "offline", "--freeze", "head",
              "--epochs", "2", "--runs-dir", runs, "--seed", "3", "--image-size", "64")
    assert proc.returncode == 0, proc.stderr
    return proc


def test_train_contract(trained):
    out = last_json(trained)
    for key in ("run_dir", "status", "val_accuracy", "train_seconds"):
        assert key in out
    assert out["status"] == "finished" and 0 <= out["val_accuracy"] <= 1
    assert "epoch 2/2" in trained.stdout
    run = Path(out["run_dir"])
    for name in ("config.json", "status.json", "metrics.jsonl", "model.safetensors", "labels.json",
                 "preprocessing.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 3


def test_evaluate_predict_export(trained, fmnist_small, tmp_path):
    run_dir = last_json(trained)["run_dir"]
    ev = tl("evaluate", run_dir, fmnist_small)
    assert ev.returncode == 0, ev.stderr
    report = last_json(ev)
    assert 0 <= report["accuracy"] <= 1 and set(report["per_class"]) == {"bag", "sneaker", "t-shirt", "trouser"}

    images = sorted((fmnist_small / "trouser").iterdir())[:2]
    pr = tl("predict", run_dir, *images)
    assert pr.returncode == 0, pr.stderr
    lines = [json.loads(l) for l in pr.stdout.strip().splitlines()]
    assert [l["image"] for l in lines] == [str(p) for p in images]
    for line in lines:
        probs = [t["probability"] for t in line["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001

    for fmt, out in (("safetensors", tmp_path / "bundle"), ("onnx", tmp_path / "m.onnx"),
                     ("torchscript", tmp_path / "m.pt")):
        ex = tl("export", run_dir, "--format", fmt, "--out", out)
        assert ex.returncode == 0, (fmt, ex.stderr)
        assert Path(last_json(ex)["path"]).exists()
    # the exported bundle works as a run folder for predict
    again = tl("predict", tmp_path / "bundle", images[0])
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["label"] == lines[0]["label"]


def test_check_contract(tmp_path):
    data = tmp_path / "data"
    (data / "cats").mkdir(parents=True)
    (data / "dogs").mkdir()
    from PIL import Image
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 80, 10, 10)).save(data / "cats" / f"{i}.png")
        Image.new("RGB", (20, 20), (10, i * 80, 200)).save(data / "dogs" / f"{i}.png")
    (data / "dogs" / "broken.jpg").write_bytes(b"")
    proc = tl("check", data)
    assert proc.returncode == 0, proc.stderr
    out = last_json(proc)
    assert out["images"] == 6 and out["classes"] == ["cats", "dogs"]
    broken = [p for p in out["problems"] if p["path"].endswith("broken.jpg")]
    assert broken and all({"kind", "path", "message"} <= set(p) for p in out["problems"])


@pytest.mark.parametrize("args,needle", [
    (("train", "/no/such/folder", "--epochs", "1"), ""),
    (("check", "/no/such/folder"), "folder"),
    (("evaluate", "/no/such/run"), "run folder"),
    (("predict", "/no/such/run", "x.png"), "run folder"),
    (("train", ".", "--freeze", "sideways"), "preset"),
    (("train", ".", "--model", "not_a_model", "--epochs", "1"), "Unknown model"),
])
def test_errors_are_plain_and_nonzero(args, needle, tmp_path):
    proc = tl(*args, "--runs-dir", tmp_path) if args[0] == "train" else tl(*args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("Error:") or "Error:" in proc.stderr
    assert needle.lower() in proc.stderr.lower()


def test_predict_reports_unreadable_image(trained, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    proc = tl("predict", last_json(trained)["run_dir"], bad)
    assert proc.returncode == 1
    assert json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert "Traceback" not in proc.stderr
