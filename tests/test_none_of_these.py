""""None of these" and "unsure" (issue 13): a cats-and-dogs model trained on real pets photos says
"none of these" for Fashion-MNIST clothes and scikit-learn's sample photos, rarely for pets it has
not seen; the bundle's predict.py, ONNX and TorchScript give the same answers as ``tl predict``;
older runs are calibrated on first use; damaged calibrations are prepared again or explained.

One 'head' run on pets/few/train (128 px, offline weights, seed 0, 8 epochs) serves the module.
The full measurement (400 pets test photos, 300 Fashion-MNIST pictures) is the slow test at the end.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tl_core
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.images import load_image
from tl_core.results import novelty as nov
from tl_core.results.inference import load_run_model

PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets" / "few"


def _pets_test(step: int = 1) -> list[Path]:
    return sorted(PETS.glob("test/*/*.jpg"))[::step]


def _fashion(n: int) -> list[Image.Image]:
    from tl_core.data.sample import fashion_mnist_available, load_fashion_mnist

    if not fashion_mnist_available():
        pytest.fail("dataset-fashion-mnist is not installed; `make test` installs it")
    images, _ = load_fashion_mnist("test")
    step = len(images) // n
    return [Image.fromarray(a, "L").convert("RGB") for a in images[::step][:n]]


def _sklearn_photos() -> list[Image.Image]:
    """scikit-learn's two sample photos (a temple, a flower) and four quarter crops of each."""
    datasets = pytest.importorskip("sklearn.datasets")
    out = []
    for arr in datasets.load_sample_images().images:
        photo = Image.fromarray(arr)
        w, h = photo.size
        out.append(photo)
        out += [photo.crop((x, y, x + w // 2, y + h // 2)) for x in (0, w // 2) for y in (0, h // 2)]
    return out


def _rate(answers: list[dict]) -> float:
    return sum(1 for a in answers if a["none_of_these"]) / len(answers)


@pytest.fixture(scope="module")
def pets_run(tmp_path_factory) -> Path:
    if not PETS.is_dir():
        pytest.skip(f"the pets photos are not at {PETS}")
    config = RunConfig(data=DataConfig(root=str(PETS / "train")),
                       model=ModelConfig("tf_efficientnet_lite0", weights="offline", image_size=128),
                       freeze=FreezeConfig("head"), train=TrainConfig(epochs=8, seed=0))
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's per-test folders
        mp.setenv("TL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tl-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = tl_core.train(config, tmp_path_factory.mktemp("pets-runs"))
    assert result.status == "finished", result.message
    return Path(result.run_dir)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, pets_run) -> Path:
    """Pictures of all kinds in one folder: 10 pets test photos, 6 Fashion-MNIST, 2 scikit-learn photos."""
    folder = tmp_path_factory.mktemp("mixed")
    for p in _pets_test(40):
        shutil.copyfile(p, folder / f"{p.parent.name}_{p.name}")
    for i, im in enumerate(_fashion(6)):
        im.save(folder / f"fashion_{i}.png")
    for i, im in enumerate(_sklearn_photos()[::5]):
        im.save(folder / f"sklearn_{i}.jpg", quality=95)
    return folder


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# -- the calibration ----------------------------------------------------------------------------------

def test_training_leaves_a_small_calibration_in_the_run_folder(pets_run):
    rule = json.loads((pets_run / nov.NOVELTY_FILE).read_text())
    facts = rule["calibration"]
    print(f"calibration: threshold {rule['threshold']:.4f}, temperature {rule['temperature']:.3f}, {facts}")
    assert facts["feature_space"] == "frozen pretrained"
    assert facts["validation_pictures"] == 16 and facts["training_pictures_left_out"] == 64
    assert facts["calibration_rejected"] <= nov.REJECT_RATE
    assert facts["validation_rejected"] <= 1 / 16 + 1e-9   # at most one of the 16 validation photos
    assert rule["neighbours"] == nov.NEIGHBOURS and rule["unsure_margin"] == nov.UNSURE_MARGIN
    assert (pets_run / nov.NOVELTY_TENSORS).stat().st_size < 1_000_000
    loaded = load_run_model(pets_run)
    assert loaded.novelty() is not None and loaded.novelty_problem is None


def test_other_domain_pictures_are_none_of_these(pets_run):
    loaded = load_run_model(pets_run)
    fashion, photos = loaded.answers(_fashion(60)), loaded.answers(_sklearn_photos())
    print(f"none of these: Fashion-MNIST {_rate(fashion):.1%} of 60, scikit-learn photos {_rate(photos):.1%} "
          f"of {len(photos)}")
    assert _rate(fashion) >= 0.9
    assert _rate(photos) >= 0.9


def test_pets_it_has_not_seen_are_mostly_known(pets_run):
    loaded = load_run_model(pets_run)
    answers = loaded.answers([load_image(p) for p in _pets_test(5)])   # 80 of the 400
    print(f"none of these on 80 pets test photos: {_rate(answers):.1%}")
    assert _rate(answers) <= 0.10


def test_the_answer_keeps_the_model_probabilities(pets_run):
    """The extra forward path (features, then the classifier) is the model's own: same probabilities."""
    loaded = load_run_model(pets_run)
    images = [load_image(p) for p in _pets_test(100)]
    answers = loaded.answers(images, k=2)
    probs = loaded.predict_proba(images)
    for a, row in zip(answers, probs):
        assert a["probability"] == float(row.max()) and a["label"] == loaded.classes[int(row.argmax())]
        assert isinstance(a["none_of_these"], bool) and isinstance(a["unsure"], bool)


# -- tl predict and the public API --------------------------------------------------------------------

def test_predict_lines_say_none_of_these_and_unsure(pets_run, mixed_folder, capsys):
    from tl_core.cli import main

    files = sorted(mixed_folder.iterdir())
    lines = list(tl_core.predict(pets_run, files[:3]))
    assert all({"label", "probability", "top", "none_of_these", "unsure"} <= set(d) for d in lines)
    assert main(["predict", str(pets_run), *map(str, files)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_kind = {kind: [d["none_of_these"] for d in out if Path(d["image"]).name.startswith(kind)]
               for kind in ("cat", "dog", "fashion", "sklearn")}
    assert all(by_kind["fashion"]) and all(by_kind["sklearn"]), by_kind
    assert sum(by_kind["cat"] + by_kind["dog"]) <= 1, by_kind   # about 5% of real pets are flagged too
    assert all(isinstance(d["unsure"], bool) for d in out)


# -- exports give the same answers --------------------------------------------------------------------

def _tl_predict(run: Path, files: list[Path], capsys) -> dict[str, dict]:
    from tl_core.cli import main

    assert main(["predict", str(run), *map(str, files)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return {Path(d["image"]).name: d for d in lines}


def test_bundle_predict_py_agrees_with_tl_predict(pets_run, mixed_folder, tmp_path, capsys):
    from tl_core.results.export import export_bundle

    bundle = export_bundle(pets_run, tmp_path / "bundle")
    assert (bundle / nov.NOVELTY_FILE).is_file() and (bundle / nov.NOVELTY_TENSORS).is_file()
    card = (bundle / "MODEL_CARD.md").read_text()
    rule = json.loads((bundle / nov.NOVELTY_FILE).read_text())
    assert "None of these" in card and repr(rule["threshold"]) in card and repr(rule["temperature"]) in card
    # predict.py on its own, in a fresh interpreter (torch, timm and Pillow only)
    proc = subprocess.run([sys.executable, str(bundle / "predict.py"), str(mixed_folder), "--top-k", "2"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    script = {Path(d["image"]).name: d for d in map(json.loads, proc.stdout.splitlines())}
    app = _tl_predict(pets_run, sorted(mixed_folder.iterdir()), capsys)
    assert set(script) == set(app) and len(app) == 18
    for name, d in app.items():
        assert (script[name]["none_of_these"], script[name]["unsure"]) == (d["none_of_these"], d["unsure"]), name
        assert script[name]["label"] == d["label"], name
    flags = [d["none_of_these"] for d in app.values()]
    assert any(flags) and not all(flags)   # the mix really tests both answers
    again = _tl_predict(bundle, sorted(mixed_folder.iterdir()), capsys)   # the bundle is a run folder too
    assert {k: (v["none_of_these"], v["unsure"]) for k, v in again.items()} == \
           {k: (v["none_of_these"], v["unsure"]) for k, v in app.items()}


def _rule_applied(outputs: list[np.ndarray], rule: dict) -> list[tuple[bool, bool]]:
    """The model card's rule, written out as a developer would with the ONNX/TorchScript outputs."""
    logits, _features, fam = outputs
    z = logits / rule["temperature"]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p = np.sort(p / p.sum(axis=1, keepdims=True), axis=1)[:, ::-1]
    return [(bool(f < rule["threshold"]), bool(row[0] - row[1] < rule["unsure_margin"])) for f, row in zip(fam, p)]


def test_onnx_and_torchscript_outputs_give_the_same_answers(pets_run, mixed_folder, tmp_path):
    import onnx
    import onnxruntime as ort

    from tl_core.results.export import export_onnx, export_torchscript

    loaded = load_run_model(pets_run)
    files = sorted(mixed_folder.iterdir())
    images = [load_image(f) for f in files]
    expected = [(a["none_of_these"], a["unsure"]) for a in loaded.answers(images)]
    x = loaded.preprocessing.to_input(images, "cpu").numpy()

    onnx_path = export_onnx(pets_run, tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "features", "familiarity"]
    assert _rule_applied(sess.run(None, {"input": x}), json.loads(meta["novelty"])) == expected

    ts_path = export_torchscript(pets_run, tmp_path / "m.pt")
    extra = {"novelty.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(ts_path), _extra_files=extra)
    with torch.inference_mode():
        outs = [t.numpy() for t in scripted(torch.from_numpy(x))]
    assert _rule_applied(outs, json.loads(extra["novelty.json"])) == expected


# -- older runs and damaged files ---------------------------------------------------------------------

def test_an_older_run_is_calibrated_on_first_use(pets_run, tmp_path):
    old = _copy_run(pets_run, tmp_path / "old-run")
    made_in_training = json.loads((old / nov.NOVELTY_FILE).read_text())
    for name in (nov.NOVELTY_FILE, nov.NOVELTY_TENSORS):
        (old / name).unlink()
    said: list[str] = []
    loaded = load_run_model(old)
    loaded.say = said.append
    answer = loaded.answer(load_image(_pets_test(100)[0]))
    assert answer["none_of_these"] is False and any("Preparing" in s for s in said), said
    again = json.loads((old / nov.NOVELTY_FILE).read_text())
    assert again["threshold"] == pytest.approx(made_in_training["threshold"], abs=1e-4)
    assert again["temperature"] == pytest.approx(made_in_training["temperature"], rel=0.05)
    assert load_run_model(old).novelty() is not None   # the next load reads it, prepares nothing


@pytest.mark.parametrize("damage", ["json", pytest.param("tensors", marks=pytest.mark.slow),
                                    pytest.param("other_weights", marks=pytest.mark.slow)])
def test_a_damaged_calibration_is_prepared_again(pets_run, tmp_path, damage):
    run = _copy_run(pets_run, tmp_path / "run")
    if damage == "json":
        (run / nov.NOVELTY_FILE).write_text('{"format": 1, "thresh')
    elif damage == "tensors":
        data = (run / nov.NOVELTY_TENSORS).read_bytes()
        (run / nov.NOVELTY_TENSORS).write_bytes(data[: len(data) // 2])
    else:
        rule = json.loads((run / nov.NOVELTY_FILE).read_text())
        (run / nov.NOVELTY_FILE).write_text(json.dumps(dict(rule, weights_fingerprint="0" * 64)))
    said: list[str] = []
    loaded = load_run_model(run)
    loaded.say = said.append
    assert loaded.answer(load_image(_pets_test(100)[1]))["none_of_these"] is False
    words = {"json": "damaged", "tensors": "damaged", "other_weights": "other weights"}[damage]
    assert any(words in s and "Preparing it again" in s for s in said), said
    assert load_run_model(run).novelty() is not None   # repaired on disk


def test_without_its_pictures_a_run_still_answers_and_says_why(pets_run, tmp_path):
    run = _copy_run(pets_run, tmp_path / "moved")
    (run / nov.NOVELTY_FILE).write_text("not json")
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["root"] = str(tmp_path / "pictures-gone")
    (run / "config.json").write_text(json.dumps(cfg))
    said: list[str] = []
    loaded = load_run_model(run)
    loaded.say = said.append
    answer = loaded.answer(load_image(_pets_test(100)[2]))
    assert answer["none_of_these"] is None and isinstance(answer["unsure"], bool)
    assert "cannot say “none of these”" in loaded.novelty_problem and "pictures-gone" in loaded.novelty_problem
    assert "Traceback" not in " ".join(said)


def _bundle_script(bundle: Path):
    """The bundle's predict.py as a module, run in this process (its users run it on its own)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundle_predict", bundle / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bundle_with_a_damaged_calibration_answers_without_it(pets_run, tmp_path, capsys):
    from tl_core.results.export import export_bundle

    bundle = export_bundle(pets_run, tmp_path / "bundle")
    (bundle / nov.NOVELTY_TENSORS).write_bytes(b"\0" * 64)
    photo = _pets_test(100)[3]
    capsys.readouterr()
    assert _bundle_script(bundle).main([str(photo), "--bundle", str(bundle)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["none_of_these"] is None
    assert "novelty.safetensors" in err and "Traceback" not in err
    assert list(_tl_predict(bundle, [photo], capsys).values())[0]["none_of_these"] is None


# -- other kinds of runs ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("preset", ["last:1", "none"])
def test_runs_that_train_the_backbone_are_calibrated_in_their_own_space(fmnist_small, tmp_path, preset):
    """'last:1' trains from cached activations in the middle of the network, 'none' from the pictures:
    both calibrate at the end of training, on the validation pictures only (the training pictures'
    features were fitted to), and the lazy preparation from the pictures finds the same line."""
    config = RunConfig(data=DataConfig(root=str(fmnist_small)),
                       model=ModelConfig("tf_efficientnet_lite0", weights="offline", image_size=64),
                       freeze=FreezeConfig(preset), train=TrainConfig(epochs=1, seed=0, augment="none"))
    result = tl_core.train(config, tmp_path / "runs")
    assert result.status == "finished", result.message
    run = Path(result.run_dir)
    rule = json.loads((run / nov.NOVELTY_FILE).read_text())
    assert rule["calibration"]["feature_space"] == "trained"
    assert rule["calibration"]["training_pictures_left_out"] == 0
    assert rule["calibration"]["validation_rejected"] <= nov.REJECT_RATE
    for name in (nov.NOVELTY_FILE, nov.NOVELTY_TENSORS):
        (run / name).unlink()
    loaded = load_run_model(run)
    loaded.say = lambda _text: None
    assert loaded.novelty() is not None
    assert loaded.novelty().threshold == pytest.approx(rule["threshold"], abs=1e-3)


# -- the rule's parts -------------------------------------------------------------------------------------

def _same_logits(name: str, size: int | None = None) -> None:
    from tl_core.models.builder import build_network
    from tl_core.models.preprocess import Preprocessing

    model = build_network(name, 3).eval()
    x = torch.rand(2, 3, *[size or Preprocessing.for_model(model).size] * 2)
    with torch.inference_mode():
        features, logits = nov.features_and_logits(model, x)
        assert torch.equal(logits, model(x)), name
    assert features.shape == (2, model.get_classifier().in_features), name


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv3_small_100", "convnext_atto", "regnety_008",
                                  "resnet18", "test_vit"])
def test_features_and_logits_are_the_model_own(name):
    """One of each family the catalogue holds (ViT: timm's small test one)."""
    _same_logits(name, None if "vit" in name else 64)


@pytest.mark.slow
def test_features_and_logits_are_the_model_own_for_the_whole_catalogue():
    from tl_core.models.catalogue import catalogue

    for info in catalogue():
        _same_logits(info.name)


def test_calibration_rejects_at_most_five_percent_of_its_pictures():
    gen = torch.Generator().manual_seed(0)
    train, val = torch.randn(200, 16, generator=gen), torch.randn(40, 16, generator=gen)
    labels = torch.arange(200) % 2
    data = nov.CalibrationData(train, labels, val, torch.randn(40, 2, generator=gen), torch.arange(40) % 2, True)
    rule = nov.calibrate(data)
    assert rule.facts["calibration_rejected"] <= nov.REJECT_RATE
    assert rule.facts["validation_rejected"] <= 0.1
    assert rule.none_of_these(train[:5]).tolist() == [False] * 5   # a training picture is its own neighbour


def test_temperature_and_unsure():
    logits = torch.tensor([[2.0, 0.0], [0.1, 0.0], [0.0, 3.0]])
    assert nov.unsure(logits).tolist() == [False, True, False]          # p1 - p2: 0.76, 0.05, 0.91
    assert nov.unsure(logits, temperature=10.0).tolist() == [True, True, True]
    assert nov.fit_temperature(torch.empty(0, 2), torch.empty(0, dtype=torch.long)) == 1.0
    right = torch.tensor([[0.5, 0.0]] * 50 + [[0.0, 0.5]] * 50)          # always right, timid: T < 1
    assert nov.fit_temperature(right, torch.tensor([0] * 50 + [1] * 50)) < 0.5
    wrong = torch.tensor([[5.0, 0.0]] * 30 + [[0.0, 5.0]] * 30)         # over-confident half the time: T > 1
    assert nov.fit_temperature(wrong, torch.tensor([0, 1] * 30)) > 2
    few = torch.tensor([[0.5, 0.0], [0.0, 0.5]])                         # two pictures: the prior holds T near 1
    assert 0.5 < nov.fit_temperature(few, torch.tensor([0, 1])) < 1


def test_references_are_picked_per_category_and_always_the_same():
    labels = torch.tensor([0] * 3000 + [1] * 100 + [2] * 1)
    picked = nov.pick_references(labels, 1024)
    assert torch.equal(picked, nov.pick_references(labels, 1024))
    counts = torch.bincount(labels[picked], minlength=3).tolist()
    assert counts[2] == 1 and 25 <= counts[1] <= 40 and sum(counts) <= 1030


# -- the Try page ---------------------------------------------------------------------------------------

def test_try_page_says_none_of_these_in_plain_words(pets_run, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TL_RUNS_DIR", str(pets_run.parent))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    session = tmp_path / "workspace" / "sessions" / "none-of-these"
    session.mkdir(parents=True)
    (session / "ui_state.json").write_text(json.dumps({"data_root": str(PETS / "train"), "run_dir": str(pets_run)}))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=300)
    at.query_params["session"] = "none-of-these"
    at.switch_page("pages/6_Try_and_export.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    fashion = Path(tmp_path / "coat.png")
    _fashion(1)[0].save(fashion)
    at.file_uploader(key="try_upload").set_value(("coat.png", fashion.read_bytes(), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("looks like none of the categories it learned" in w.value for w in at.warning)
    assert at.get("plotly_chart") or at.dataframe, "the bars are still shown"


# -- the measurement (slow) -------------------------------------------------------------------------------

@pytest.mark.slow
def test_measured_rejection_rates(pets_run):
    """The numbers for the issue: all 400 pets test photos, 300 Fashion-MNIST pictures, the 10
    scikit-learn pictures, and the validation rate from the calibration."""
    loaded = load_run_model(pets_run)
    pets = loaded.answers([load_image(p) for p in _pets_test()])
    fashion, photos = loaded.answers(_fashion(300)), loaded.answers(_sklearn_photos())
    facts = loaded.novelty().facts
    right = [a["label"] == p.parent.name for a, p in zip(pets, _pets_test())]
    print(f"\nnone of these: pets test {_rate(pets):.1%} of {len(pets)} (accuracy {np.mean(right):.1%}), "
          f"Fashion-MNIST {_rate(fashion):.1%} of {len(fashion)}, scikit-learn {_rate(photos):.1%} of "
          f"{len(photos)}; validation {facts['validation_rejected']:.1%} of {facts['validation_pictures']}; "
          f"unsure: pets {np.mean([a['unsure'] for a in pets]):.1%}, among the wrong ones "
          f"{np.mean([a['unsure'] for a, ok in zip(pets, right) if not ok]):.1%}")
    assert len(pets) == 400 and _rate(pets) <= 0.10
    assert _rate(fashion) >= 0.95 and _rate(photos) >= 0.9
