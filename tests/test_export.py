"""Exports reproduce the model: ONNX and TorchScript within 1e-4 of PyTorch on real photos, and
the bundle's predict.py gives the same answers as load_run_model."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig
from tl_core.errors import TransferLabError
from tl_core.results.export import (EXPORT_FORMATS, ONNX_OPSET, PARITY_TOLERANCE, bundle_zip_bytes, check_onnx,
                            check_torchscript, export_bundle, export_onnx, export_run, export_torchscript,
                            model_card, onnx_bytes, parity, torchscript_bytes)
from tl_core.models.freezing import make_freeze_plan
from tl_core.results.inference import load_run_model
from tl_core.models.preprocess import Preprocessing
from tl_core.runs import RunFolder

CLASSES = ["china", "flower", "pattern"]


def real_photos(folder: Path) -> list[Path]:
    """scikit-learn's two bundled photos (427 x 640 JPEGs), plus crops of them and generated pictures."""
    datasets = pytest.importorskip("sklearn.datasets")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("china.jpg", "flower.jpg"):
        arr = datasets.load_sample_image(name)
        p = folder / name
        Image.fromarray(arr).save(p, quality=95)
        paths.append(p)
        crop = folder / f"crop_{name.replace('.jpg', '.png')}"
        Image.fromarray(arr[50:300, 100:500]).save(crop)
        paths.append(crop)
    rng = np.random.default_rng(1)
    for i in range(3):
        yy, xx = np.mgrid[0:180, 0:240]
        arr = np.stack([(xx * (i + 1)) % 256, (yy * 2) % 256, rng.integers(0, 256, (180, 240))], -1).astype(np.uint8)
        p = folder / f"generated_{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def make_run(tmp_path: Path, name: str = "test_efficientnet", train_steps: int = 4) -> tuple[RunFolder, list[Path]]:
    """A run folder as the engine writes it, with a briefly trained model (so predictions differ)."""
    photos = real_photos(tmp_path / "photos")
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=len(CLASSES))
    prep = Preprocessing.for_model(model)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    x = prep.to_input([Image.open(p).convert("RGB") for p in photos])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(train_steps):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    cfg = RunConfig(data=DataConfig(root=str(tmp_path / "photos")), model=ModelConfig(name=name),
                    freeze=FreezeConfig(preset="none"), name="export test")
    run = RunFolder.create(cfg, runs_dir=tmp_path / "runs")
    run.save_labels(CLASSES)
    run.save_preprocessing(prep.to_dict())
    run.save_weights(model.state_dict())
    run.save_summary({
        "classes": CLASSES, "counts": {"china": 40, "flower": 12, "pattern": 300},
        "val_counts": {"china": 10, "flower": 3, "pattern": 75},
        "freeze": make_freeze_plan(model, FreezeConfig(preset="last:1")).to_dict(),
        "train": {"epochs": 3, "batch_size": 8, "lr": 0.001, "schedule": "cosine", "augment": "light"},
        "best_val_accuracy": 0.875, "best_epoch": 2, "imbalance_ratio": 25.0,
        "problems": [{"kind": "leakage", "path": str(photos[0]), "message": "The same photo is in training and "
                      "validation.", "fix": "Remove one copy.", "severity": "warning"}],
        "val_records": [{"path": p.name, "label": CLASSES[min(i // 2, 2)]} for i, p in enumerate(photos)],
    })
    run.write_status("finished", "Done.")
    return run, photos


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("export"))


def _images(paths):
    return [Image.open(p).convert("RGB") for p in paths]


def test_onnx_parity_on_real_photos(trained, tmp_path):
    run, photos = trained
    report: dict = {}
    path = export_onnx(run.path, tmp_path / "m.onnx", report=report)
    assert path.is_file() and report["opset"] == ONNX_OPSET
    assert report["max_abs_diff"] <= PARITY_TOLERANCE and report["images"] >= 6   # 4 val photos + generated
    check = check_onnx(path, run.path, _images(photos))   # all 7 photos: a batch size never exported with
    print(f"ONNX opset {report['opset']}: export check logits {report['max_abs_diff']:.2e}, "
          f"probabilities {report['max_prob_diff']:.2e}; 7 photos logits {check['max_abs_diff']:.2e}")
    assert check["ok"] and check["max_abs_diff"] <= 1e-4 and check["max_prob_diff"] <= 1e-4
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["labels"]) == CLASSES and json.loads(meta["preprocessing"])["size"] == 160
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [ONNX_OPSET]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    loaded = load_run_model(run.path)
    x = loaded.preprocessing.to_input(_images(photos[:1]))
    probs = torch.softmax(torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]), 1)
    assert torch.allclose(probs, loaded.predict_proba(_images(photos[:1])), atol=1e-5)


def test_torchscript_parity_on_real_photos(trained, tmp_path):
    run, photos = trained
    report: dict = {}
    path = export_torchscript(run.path, tmp_path / "m.pt", report=report)
    check = check_torchscript(path, run.path, _images(photos))
    print(f"TorchScript: export check {report['max_abs_diff']:.2e}, photos {check['max_abs_diff']:.2e}")
    assert report["max_abs_diff"] <= PARITY_TOLERANCE and check["max_abs_diff"] <= 1e-4 and check["ok"]
    extra = {"labels.json": "", "preprocessing.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still supported
        torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["labels.json"]) == CLASSES


def test_bundle_predict_script_matches_load_run_model(trained, tmp_path):
    run, photos = trained
    bundle = export_bundle(run.path, tmp_path / "bundle")
    for f in ("model.safetensors", "labels.json", "preprocessing.json", "predict.py", "MODEL_CARD.md", "config.json"):
        assert (bundle / f).is_file(), f
    prep = json.loads((bundle / "preprocessing.json").read_text())
    for key in ("size", "mean", "std", "interpolation", "crop_pct", "crop", "model"):
        assert key in prep
    # the bundle reloads like a run (what `tl predict BUNDLE` does) ...
    original, reloaded = load_run_model(run.path), load_run_model(bundle)
    images = _images(photos)
    ref = original.predict_proba(images)
    assert torch.equal(reloaded.predict_proba(images), ref)
    # ... and predict.py, run on its own in a fresh interpreter, gives what `tl predict` gives
    # (tl_core's loader + load_run_model), also for photos that need care when decoding
    folder = tmp_path / "to_predict"
    folder.mkdir()
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    china = Image.open(photos[0]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": phone photos are stored sideways
    china.resize((3000, 2000), Image.BICUBIC).save(folder / "big_rotated.jpg", quality=90, exif=exif)
    rgba = Image.open(photos[1]).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, : rgba.width // 2] = 0  # transparent half: white, not black
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "cutout.png")
    china.convert("L").save(folder / "grey.jpg")
    Image.fromarray((np.asarray(china.convert("L"), np.uint16) * 257)).save(folder / "sixteen_bit.png")
    proc = subprocess.run([sys.executable, str(bundle / "predict.py"), str(folder), "--top-k", "2"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    by_name = {Path(d["image"]).name: d for d in lines}
    files = sorted(folder.iterdir())
    assert len(by_name) == len(files) == len(photos) + 4
    from tl_core.data.images import load_image

    expected = original.predict_proba([load_image(f) for f in files])
    for f, row in zip(files, expected):
        got = by_name[f.name]
        assert got["label"] == CLASSES[int(row.argmax())], f.name
        assert got["probability"] == pytest.approx(float(row.max()), abs=1e-5), f.name
        assert len(got["top"]) == 2 and got["top"][0]["label"] == got["label"]
    assert len({d["label"] for d in lines}) >= 2, "the test model should not give one answer for everything"


def test_bundle_reloads_in_tl_predict(trained, tmp_path, capsys):
    run, photos = trained
    bundle = export_bundle(run.path, tmp_path / "bundle")
    from tl_core.cli import main

    assert main(["predict", str(bundle), str(photos[0]), str(photos[2])]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    expected = load_run_model(run.path).predict_proba(_images([photos[0], photos[2]]))
    assert [d["label"] for d in out] == [CLASSES[int(r.argmax())] for r in expected]


def test_export_run_dispatch_zip_and_bytes(trained, tmp_path):
    run, _ = trained
    z = export_run(run.path, "safetensors", tmp_path / "out" / "my-model.zip")
    with zipfile.ZipFile(z) as zf:
        names = set(zf.namelist())
    assert {"my-model/model.safetensors", "my-model/predict.py", "my-model/MODEL_CARD.md"} <= names
    folder = export_run(run.path, "bundle", tmp_path / "folder")
    assert (folder / "config.json").is_file()
    (tmp_path / "dir").mkdir()
    assert export_run(run.path, "TorchScript", tmp_path / "dir").name == "model.pt"
    data = bundle_zip_bytes(run.path)
    assert data[:2] == b"PK"
    assert torchscript_bytes(run.path)[:2] == b"PK"   # TorchScript files are zip archives too
    assert set(EXPORT_FORMATS) == {"bundle", "safetensors", "onnx", "torchscript"}


def test_onnx_bytes_is_a_valid_model(trained):
    import onnx

    run, _ = trained
    proto = onnx.load_from_string(onnx_bytes(run.path))
    assert proto.graph.input[0].name == "input"
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param  # a named (free) batch dimension


def test_vit_exports_match(tmp_path):
    run, photos = make_run(tmp_path, name="test_vit", train_steps=1)
    r1: dict = {}
    r2: dict = {}
    export_onnx(run.path, tmp_path / "v.onnx", report=r1)
    export_torchscript(run.path, tmp_path / "v.pt", report=r2)
    print(f"ViT ONNX {r1['max_abs_diff']:.2e}, TorchScript {r2['max_abs_diff']:.2e}")
    assert r1["ok"] and r2["ok"]
    assert r1["max_abs_diff"] <= 1e-4 and r2["max_abs_diff"] <= 1e-4


def test_parity_rule():
    ref = np.array([[0.5, -0.2, 30.0]], np.float32)
    assert parity(ref.copy(), ref)["ok"]
    assert parity(ref + np.array([[5e-5, 0, 2e-3]], np.float32), ref)["ok"]        # 2e-3 on 30: 7e-5 relative
    assert not parity(ref + np.array([[3e-4, 0, 0]], np.float32), ref)["ok"]       # 3e-4 on a logit below 1
    assert not parity(ref[:, ::-1].copy(), ref)["ok"]                                # another model entirely


def test_a_wrong_onnx_file_is_refused(trained, tmp_path, monkeypatch):
    """The check really runs: an exporter that writes a different model makes the export fail."""
    import tl_core.results.export as ex

    run, _ = trained
    real = ex._torch_onnx_export

    def sabotaged(model, example, path):
        other = timm.create_model("test_efficientnet", num_classes=len(CLASSES)).eval()
        return real(other, example, path)

    monkeypatch.setattr(ex, "_torch_onnx_export", sabotaged)
    with pytest.raises(TransferLabError, match="does not reproduce"):
        export_onnx(run.path, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists() and not list(tmp_path.glob("*.tmp"))


def test_onnx_falls_back_to_the_new_exporter(trained, tmp_path, monkeypatch):
    """torch deprecates the TorchScript-based exporter; without it the dynamo one (opset 18) is used."""
    run, photos = trained
    real = torch.onnx.export

    def no_legacy(*args, **kwargs):
        if not kwargs.get("dynamo", True):
            raise RuntimeError("the legacy exporter is gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_legacy)
    report: dict = {}
    export_onnx(run.path, tmp_path / "new.onnx", report=report)
    assert report["opset"] == 18 and report["ok"] and report["max_abs_diff"] <= 1e-4


def test_model_card_says_what_matters(trained):
    run, _ = trained
    card = model_card(run.path)
    for text in ("china", "flower", "pattern", "test_efficientnet", "| 40 |", "Frozen", "87.5%",
                 f"opset {ONNX_OPSET}", "same photo is in training and validation", "Remove one copy",
                 "Known limits", "Few examples", "flower"):
        assert text in card, text
    assert "Imbalance" in card  # imbalance ratio 25


def test_plain_errors(trained, tmp_path):
    run, _ = trained
    with pytest.raises(TransferLabError, match="Choose one of"):
        export_run(run.path, "tflite", tmp_path / "x")
    with pytest.raises(TransferLabError):
        export_run(tmp_path / "nowhere", "onnx", tmp_path / "x.onnx")
    empty = RunFolder.create(RunConfig(data=DataConfig(root=str(tmp_path))), runs_dir=tmp_path / "runs2")
    with pytest.raises(TransferLabError, match="no saved weights"):
        export_run(empty.path, "bundle", tmp_path / "b")
    with pytest.raises(TransferLabError, match="run folder itself"):
        export_bundle(run.path, run.path)


def test_bundle_does_not_carry_local_paths(trained, tmp_path):
    """A bundle is handed to other people: no user name or folder layout in its files."""
    run, photos = trained
    local = str(photos[0].parent)          # .../pytest-of-root/.../photos
    folder = export_bundle(run.path, tmp_path / "shared")
    for f in sorted(folder.iterdir()):
        if f.suffix in (".json", ".md", ".py"):
            assert local not in f.read_text(encoding="utf-8"), f.name
    cfg = RunConfig.load(folder / "config.json")
    assert cfg.data.root == "photos" and cfg.model.name == "test_efficientnet"
    assert load_run_model(folder).classes == CLASSES   # still a run folder


def test_shareable_config_cuts_every_path_to_its_last_part(tmp_path):
    from tl_core.results.export import shareable_config

    cfg = RunConfig(data=DataConfig(root="/home/ana/Pictures/birds", test_root="C:\\Users\\ana\\birds-test"),
                    model=ModelConfig(name="test_efficientnet", weights="/home/ana/Downloads/my-weights.safetensors"),
                    freeze=FreezeConfig(preset="head"))
    cfg.train.cache_dir = "/home/ana/.cache/tl"
    run = RunFolder.create(cfg, runs_dir=tmp_path / "runs")
    shared = shareable_config(run.path)
    assert (shared.data.root, shared.data.test_root) == ("birds", "birds-test")
    assert shared.model.weights == "my-weights.safetensors" and shared.train.cache_dir is None
    assert "ana" not in shared.to_json()
    assert RunConfig.load(run.path / "config.json").data.root == "/home/ana/Pictures/birds"  # run untouched
    plain = RunConfig(data=DataConfig(root="relative-folder"), model=ModelConfig(name="test_efficientnet"))
    run2 = RunFolder.create(plain, runs_dir=tmp_path / "runs")
    assert shareable_config(run2.path).model.weights == "auto"


def test_model_card_states_the_split_actually_used(trained, tmp_path):
    import shutil

    run, _ = trained
    card = model_card(run.path)  # an older summary without "split": a random 20% (the numbers agree)
    assert "Split: 352 pictures to learn from, 88 to check with (20% kept aside at random, per category, copies " \
           "kept together). Split seed: 0." in card
    own = tmp_path / run.path.name
    shutil.copytree(run.path, own)
    summary = json.loads((own / "summary.json").read_text())
    summary.update(counts={"china": 6, "flower": 6, "pattern": 233}, val_counts={"china": 4, "flower": 4, "pattern": 145},
                   split={"kind": "folder", "val_fraction": None, "from_train": False, "train": 245, "val": 153})
    (own / "summary.json").write_text(json.dumps(summary))
    card = model_card(own)
    assert "Split: 245 pictures to learn from, 153 to check with (the folder's own val/ folder)." in card
    assert "20%" not in card and "Split seed" not in card
