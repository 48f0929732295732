"""Comparing runs honestly: accuracy intervals, exact tests, and the comparison the Train page draws."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tl_core.app import formatting
from tl_core.app.compare import compare_runs
from tl_core.app.plots import compare_curves_figure
from tl_core.data.sample import sample_dir
from tl_core.results.stats import accuracy_interval, compare_accuracies, mcnemar_p, two_proportion_p

FIXTURE = Path(__file__).parent / "fixtures" / "run_before_regroup"


# -- statistics ------------------------------------------------------------------------------------

def test_wilson_interval_known_values():
    low, high = accuracy_interval(9, 10)
    assert low == pytest.approx(0.5958, abs=1e-3) and high == pytest.approx(0.9821, abs=1e-3)
    assert accuracy_interval(0, 10)[0] == 0.0 and accuracy_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)
    assert accuracy_interval(10, 10)[1] == pytest.approx(1.0)
    assert accuracy_interval(0, 0) == (0.0, 1.0)
    small, large = accuracy_interval(27, 30), accuracy_interval(900, 1000)
    assert (small[1] - small[0]) > 3 * (large[1] - large[0])   # 30 pictures: a wide range


def test_exact_tests():
    assert mcnemar_p(0, 6) == pytest.approx(0.03125)           # 2 * (1/2)^6
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert two_proportion_p(50, 100, 50, 100) == pytest.approx(1.0)
    assert two_proportion_p(90, 100, 60, 100) < 1e-5
    assert 0.05 < two_proportion_p(9, 10, 7, 10) < 1.0


def test_verdict_sentences():
    tie = compare_accuracies("A", 27, 30, "B", 25, 30)
    assert not tie.real and "cannot be told apart" in tie.sentence and tie.better == "A"
    clear = compare_accuracies("A", 95, 100, "B", 60, 100)
    assert clear.real and clear.sentence.startswith("A is better")
    paired = compare_accuracies("A", 28, 30, "B", 22, 30, disagreements=(7, 1))
    assert paired.paired and "same pictures" in paired.sentence
    same = compare_accuracies("A", 5, 10, "B", 5, 10)
    assert same.better is None and "same accuracy" in same.sentence


def test_accuracy_is_shown_with_its_range():
    assert formatting.format_accuracy(0.9, 30) == "90.0% (74-97%)"
    assert formatting.format_accuracy(0.9) == "90.0%" and formatting.format_accuracy(None, 30) == ""


# -- comparing run folders -----------------------------------------------------------------------------

def _run(root: Path, name: str, best: float, lr: float | None, per_class: dict) -> Path:
    run = root / name
    shutil.copytree(FIXTURE, run)
    for f in run.iterdir():
        f.write_text(f.read_text().replace("@SAMPLE@", str(sample_dir())).replace("@RUN_DIR@", str(run)))
    config = json.loads((run / "config.json").read_text())
    config["train"]["lr"] = lr
    (run / "config.json").write_text(json.dumps(config))
    summary = json.loads((run / "summary.json").read_text())
    summary.update(best_val_accuracy=best, per_class_accuracy=per_class)
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "model.safetensors").write_bytes(b"")   # presence is all the table looks at
    return run


def test_compare_two_runs(tmp_path):
    a = _run(tmp_path, "20261128-051903-a", 0.95, None, {"bag": 1.0, "sandal": 0.9})
    b = _run(tmp_path, "20261128-051903-b", 0.60, 0.01, {"bag": 0.7, "sandal": 0.5})
    comp = compare_runs([a, b])
    assert [s.accuracy for s in comp.scores] == [0.95, 0.60]
    assert comp.scores[0].total == 40 and comp.scores[0].correct == 38
    assert comp.verdict is not None and comp.verdict.real and not comp.verdict.paired
    assert comp.verdict.better == comp.scores[0].label
    assert [row["Setting"] for row in comp.settings] == ["Learning rate"]
    assert set(comp.settings[0].values()) >= {"automatic", "0.01"}
    bag = next(row for row in comp.per_class if row["Category"] == "bag")
    assert sorted(v for k, v in bag.items() if k != "Category") == [0.7, 1.0]
    assert len(set(comp.labels.values())) == 2                       # labels never collide on a chart
    fig = compare_curves_figure(comp.curves)
    assert len([tr for tr in fig.data if tr.showlegend is not False]) == 4   # 2 runs x (loss, accuracy)


def test_runs_on_the_same_pictures_are_compared_picture_by_picture(tmp_path):
    a = _run(tmp_path, "20261128-051903-a", 0.9, None, {})
    b = _run(tmp_path, "20261128-051903-b", 0.8, None, {})
    for run, right in ((a, 9), (b, 8)):
        items = [{"path": f"p{i}.png", "true": "bag", "pred": "bag" if i < right else "sandal"} for i in range(10)]
        (run / "eval_val.json").write_text(json.dumps({"items": items}))
    comp = compare_runs([a, b])
    assert comp.verdict.paired and not comp.verdict.real   # one picture apart out of ten: luck
    assert "cannot be told apart" in comp.verdict.sentence


def test_train_page_compares_two_runs(tmp_path, monkeypatch):
    """The Train page's "Compare runs": the verdict sentence, the ranges, the settings that differ."""

    from test_app_pages import app_test, remember, texts

    runs = tmp_path / "runs"
    _run(runs, "20261128-051903-a", 0.95, None, {"bag": 1.0})
    _run(runs, "20261128-051904-b", 0.60, 0.01, {"bag": 0.7})
    monkeypatch.setenv("TL_RUNS_DIR", str(runs))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    remember(tmp_path / "workspace")
    at = app_test()
    at.switch_page("pages/4_Train.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Compare runs" in [s.value for s in at.subheader]
    assert any("is better" in s.value for s in at.success)
    assert len(at.multiselect(key="train_compare").value) == 2
    body = texts(at)
    assert "What was set differently" in body
    frames = [df.value for df in at.dataframe]
    assert any("95% range" in frame.columns for frame in frames)
    assert any("Learning rate" in list(frame.get("Setting", [])) for frame in frames)
    # narrow enough for a projector: the runs are "Run 1", "Run 2" in the tables, named in the score table
    assert any(list(frame.columns) == ["Setting", "Run 1", "Run 2"] for frame in frames)
    assert all(str(name).startswith(("Run 1: ", "Run 2: ")) for frame in frames if "95% range" in frame.columns
               for name in frame["Run"])
