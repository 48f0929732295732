"""Metrics against hand-computed numbers, and evaluation of a real (tiny) run folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tl_core.config import DataConfig, ModelConfig, RunConfig
from tl_core.errors import TransferLabError
from tl_core.results.evaluate import (EvalReport, compute_metrics, evaluate_records, evaluate_run, list_evaluations,
                              load_evaluation, scan_class_folders)
from tl_core.results.inference import load_run_model
from tl_core.models.preprocess import Preprocessing
from tl_core.runs import RunFolder

CLASSES = ["cat", "dog", "bird", "fish"]
#            cat cat cat dog dog bird bird
Y_TRUE = [0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 1, 1, 0, 0, 1]


def test_compute_metrics_by_hand():
    m = compute_metrics(Y_TRUE, Y_PRED, CLASSES)
    # rows = true class, columns = predicted class (cat, dog, bird, fish)
    assert m["confusion"] == [[2, 1, 0, 0],
                              [1, 1, 0, 0],
                              [1, 1, 0, 0],
                              [0, 0, 0, 0]]
    assert m["n"] == 7
    assert m["accuracy"] == pytest.approx(3 / 7)
    pc = m["per_class"]
    # cat: predicted 4 times, 2 right; 3 cats, 2 found
    assert pc["cat"]["precision"] == pytest.approx(2 / 4)
    assert pc["cat"]["recall"] == pytest.approx(2 / 3)
    assert pc["cat"]["f1"] == pytest.approx(4 / 7)          # 2 * 1/2 * 2/3 / (1/2 + 2/3)
    assert pc["cat"]["support"] == 3
    # dog: predicted 3 times, 1 right; 2 dogs, 1 found
    assert pc["dog"]["precision"] == pytest.approx(1 / 3)
    assert pc["dog"]["recall"] == pytest.approx(1 / 2)
    assert pc["dog"]["f1"] == pytest.approx(2 / 5)
    # bird: never predicted -> precision 0, not NaN
    assert pc["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0}
    # fish: no images and no predictions -> zeros, and left out of balanced accuracy
    assert pc["fish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)   # 7/18
    assert m["confusion_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0, 0])
    assert m["confusion_normalized"][2] == pytest.approx([0.5, 0.5, 0, 0])
    assert m["confusion_normalized"][3] == [0.0, 0.0, 0.0, 0.0]
    assert all(np.isfinite(v) for c in pc.values() for v in c.values())
    json.dumps(m)  # plain JSON, no NaN, no numpy types


def test_compute_metrics_agrees_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    t, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    p[t == 4] = 0  # class 4 gets no predictions
    p[p == 4] = 1
    m = compute_metrics(t, p, list("abcde"))
    prec, rec, f1, sup = sk.precision_recall_fscore_support(t, p, labels=range(5), zero_division=0)
    assert [m["per_class"][c]["precision"] for c in "abcde"] == pytest.approx(prec)
    assert [m["per_class"][c]["recall"] for c in "abcde"] == pytest.approx(rec)
    assert [m["per_class"][c]["f1"] for c in "abcde"] == pytest.approx(f1)
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(t, p))
    assert m["confusion"] == sk.confusion_matrix(t, p, labels=range(5)).tolist()


@pytest.mark.parametrize("t,p,classes", [([0, 1], [0], ["a", "b"]), ([], [], ["a"]), ([0, 2], [0, 1], ["a", "b"]),
                                         ([0], [0], [])])
def test_compute_metrics_bad_input_is_plain(t, p, classes):
    with pytest.raises(TransferLabError):
        compute_metrics(t, p, classes)


def _report() -> EvalReport:
    items = [{"path": f"{i}.jpg", "true": CLASSES[t], "pred": CLASSES[p], "confidence": c}
             for i, (t, p, c) in enumerate(zip(Y_TRUE, Y_PRED, [0.9, 0.8, 0.7, 0.6, 0.95, 0.55, 0.85]))]
    return EvalReport.from_predictions(CLASSES, items)


def test_report_cells_and_most_confident_wrong():
    r = _report()
    assert r.n == 7 and r.accuracy == pytest.approx(3 / 7)
    assert [it["path"] for it in r.cell("cat", "dog")] == ["2.jpg"]
    assert [it["path"] for it in r.cell(0, 0)] == ["0.jpg", "1.jpg"]   # indices work, most confident first
    assert r.cell("fish", "fish") == []
    wrong = r.most_confident_wrong(k=3)
    assert [it["path"] for it in wrong] == ["4.jpg", "6.jpg", "2.jpg"]  # 0.95, 0.85, 0.7
    assert all(it["true"] != it["pred"] for it in r.most_confident_wrong())
    with pytest.raises(TransferLabError):
        r.cell("horse", "cat")
    data = r.to_dict()   # compact: what the CLI prints
    for key in ("accuracy", "balanced_accuracy", "per_class", "confusion", "classes", "n"):
        assert key in data
    assert "items" not in data and data["most_confident_wrong"][0]["path"] == "4.jpg"
    again = EvalReport.from_dict(json.loads(json.dumps(r.to_dict(include_items=True))))
    assert again.confusion == r.confusion and again.items == r.items and again.n == 7


# ----------------------------------------------------------------------------------------------
def _image(color, size=(48, 40)) -> Image.Image:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[...] = color
    arr[::4] = 255 - np.asarray(color, np.uint8)  # some structure
    return Image.fromarray(arr)


@pytest.fixture()
def run_and_data(tmp_path: Path):
    classes = ["red", "green", "blue"]
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3)
    run = RunFolder.create(RunConfig(data=DataConfig(root=str(tmp_path / "data")),
                                     model=ModelConfig(name="test_efficientnet")), runs_dir=tmp_path / "runs")
    run.save_labels(classes)
    run.save_preprocessing(Preprocessing.for_model(model, image_size=64).to_dict())
    run.save_weights(model.state_dict())
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}
    val = []
    for c in classes:
        (tmp_path / "data" / c / "sub").mkdir(parents=True)
        for i in range(3):
            p = tmp_path / "data" / c / ("sub" if i == 2 else "") / f"{c}{i}.png"
            _image(tuple(int(v * (0.6 + 0.2 * i)) for v in colors[c])).save(p)
            val.append({"path": str(p.relative_to(tmp_path / "data")), "label": c})
    (tmp_path / "data" / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "data" / "red" / "notes.txt").write_text("ignored")
    run.save_summary({"classes": classes, "val_records": val})
    return run, tmp_path / "data"


def test_evaluate_records_skips_unreadable_and_is_consistent(run_and_data):
    run, data = run_and_data
    loaded = load_run_model(run.path)
    records = scan_class_folders(data)
    assert len(records) == 10 and {lab for _, lab in records} == {"red", "green", "blue"}
    seen = []
    report = evaluate_records(loaded, records, progress=lambda d, t: seen.append((d, t)), batch_size=4)
    assert report.n == 9 and len(report.items) == 9
    assert [s["path"] for s in report.skipped] == [str(data / "red" / "broken.jpg")]
    assert seen[-1] == (10, 10) and len(seen) == 3
    # the report's numbers are the items' numbers
    assert report.accuracy == pytest.approx(np.mean([it["true"] == it["pred"] for it in report.items]))
    assert sum(map(sum, report.confusion)) == 9
    for it in report.items:
        assert it["confidence"] == pytest.approx(max(it["probs"]), abs=1e-6)
        assert sum(it["probs"]) == pytest.approx(1.0, abs=1e-4)
    # same predictions as predicting directly
    direct = loaded.predict_proba([Image.open(report.items[0]["path"]).convert("RGB")])[0]
    assert report.items[0]["probs"] == pytest.approx(direct.tolist(), abs=1e-5)
    # labels as indices and as tuples/dicts/objects are all accepted
    by_index = evaluate_records(loaded, [(p, ["red", "green", "blue"].index(lab)) for p, lab in records[:3]])
    by_dict = evaluate_records(loaded, [{"path": p, "label": lab} for p, lab in records[:3]])
    assert by_index.confusion == by_dict.confusion


def test_evaluate_run_validation_and_test_folder(run_and_data, tmp_path):
    run, data = run_and_data
    val = evaluate_run(run.path)          # val_records, relative paths resolved against data.root
    assert val.name == "val" and val.n == 9
    test = evaluate_run(run.path, str(data))
    assert test.n == 9 and test.name.startswith("test-") and len(test.skipped) == 1
    assert list_evaluations(run.path)[0] == "val" and len(list_evaluations(run.path)) == 2
    saved = load_evaluation(run.path, "val")
    assert saved is not None and saved.confusion == val.confusion and len(saved.items) == 9
    assert json.loads((run.path / "eval_val.json").read_text())["accuracy"] == val.accuracy


def test_evaluate_run_plain_errors(run_and_data, tmp_path):
    run, data = run_and_data
    (data / "horse").mkdir()
    _image((1, 2, 3)).save(data / "horse" / "h.png")
    with pytest.raises(TransferLabError, match="horse"):
        evaluate_run(run.path, str(data))
    with pytest.raises(TransferLabError):
        evaluate_run(run.path, str(tmp_path / "missing"))
    flat = tmp_path / "flat"
    flat.mkdir()
    _image((1, 2, 3)).save(flat / "a.png")
    with pytest.raises(TransferLabError, match="folder per c"):
        evaluate_run(run.path, str(flat))
    run.save_summary({"val_records": []})
    with pytest.raises(TransferLabError, match="test folder"):
        evaluate_run(run.path)


def test_evaluate_run_predicts_under_the_cpu_allocator_setting(run_and_data, monkeypatch):
    """Batch evaluation frees large activations like training does (1000 test images took 31.6 s
    without the setting, 12.7 s with it on 2 cores), so it runs under tl_core.runtime.allocator too."""
    import platform

    import tl_core.results.evaluate as evaluate_mod
    from tl_core.runtime.allocator import tuning_active

    run, _ = run_and_data
    seen = []
    real = evaluate_mod.evaluate_records

    def spy(*args, **kwargs):
        seen.append(tuning_active())
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "evaluate_records", spy)
    evaluate_run(run.path)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert seen == [glibc] and not tuning_active()
