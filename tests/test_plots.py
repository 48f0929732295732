"""Every figure builds from plain data and has the traces and axes the pages rely on."""
from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from tl_core.errors import TransferLabError
from tl_core.results.evaluate import EvalReport
from tl_core.app.plots import (class_counts_chart, confusion_matrix_figure, layer_groups_figure, per_class_bars,
                           topk_bars, training_curves)

EPOCHS = [
    {"epoch": 1, "train_loss": 1.2, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.6, "lr": 1e-3},
    {"epoch": 2, "train_loss": 0.8, "train_accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.65, "lr": 8e-4},
    {"epoch": 3, "train_loss": 0.5, "train_accuracy": 0.85, "val_loss": float("nan"), "val_accuracy": None},
]
BATCHES = [{"event": "on_batch_end", "step": s, "epoch": 1 + (s - 1) // 10, "logs": {"loss": 2.0 / s, "lr": 1e-3}}
           for s in range(5, 31, 5)] + [{"event": "on_batch_end", "step": 35, "epoch": 4, "logs": {"loss": 0.3}}]


def _names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data]


def test_training_curves():
    fig = training_curves(EPOCHS, BATCHES)
    assert isinstance(fig, go.Figure)
    assert _names(fig) == ["Training loss (each step)", "Training loss", "Checking loss", "Training accuracy",
                           "Checking accuracy"]
    step, train_loss, val_loss, train_acc, val_acc = fig.data
    assert step.opacity < 0.5                        # faint
    assert list(train_loss.x) == [1, 2, 3] and list(train_loss.y) == [1.2, 0.8, 0.5]
    assert list(val_loss.x) == [1, 2] and list(val_acc.y) == [0.6, 0.65]   # NaN / None are not drawn
    assert train_loss.xaxis == "x" and train_acc.xaxis == "x2"           # two subplots
    # steps sit inside their epoch: epoch 1 = (0, 1], epoch 4 (running) estimated from epoch 3's length
    assert list(step.x) == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert fig.layout.yaxis2.tickformat == ".0%"
    json.loads(fig.to_json())


def test_training_curves_engine_event_format():
    """The engine writes the epoch inside ``logs`` (with ``progress``), as in a real metrics.jsonl."""
    batches = [{"event": "on_batch_end", "time": 1.0, "step": 3, "logs": {"epoch": 1, "loss": 1.3, "progress": 0.5}},
               {"event": "on_batch_end", "time": 2.0, "step": 5, "logs": {"epoch": 2, "loss": 0.97, "progress": 0.8}},
               {"event": "on_batch_end", "time": 3.0, "step": 6, "logs": {"epoch": 2, "loss": 0.69, "progress": 1.0}}]
    step = training_curves(EPOCHS[:2], batches).data[0]
    assert list(step.y) == [1.3, 0.97, 0.69]
    assert list(step.x) == pytest.approx([1.0, 1 + 2 / 3, 2.0])


def test_training_curves_empty_and_without_batches():
    fig = training_curves([])
    assert len(fig.data) == 4 and all(len(t.x) == 0 for t in fig.data)
    assert any("first epoch" in a.text for a in fig.layout.annotations)
    assert len(training_curves(EPOCHS, None).data) == 4


def test_class_counts_chart():
    fig = class_counts_chart({"cat": 30, "dog": 5}, {"cat": 8, "dog": 1, "bird": 2})
    assert _names(fig) == ["For training", "For checking"] and fig.layout.barmode == "stack"
    assert list(fig.data[0].x) == ["cat", "dog", "bird"] and list(fig.data[0].y) == [30, 5, 0]
    assert list(fig.data[1].y) == [8, 1, 2]
    assert len(class_counts_chart({"a": 1}).data) == 1


def test_confusion_matrix_figure_counts_and_rates():
    cm = [[2, 1, 0], [1, 1, 0], [0, 0, 0]]
    fig = confusion_matrix_figure(cm, ["cat", "dog", "bird"])
    (hm,) = fig.data
    assert isinstance(hm, go.Heatmap)
    assert [list(r) for r in hm.z] == cm and [list(r) for r in hm.text] == [["2", "1", "0"], ["1", "1", "0"],
                                                                             ["0", "0", "0"]]
    assert hm.customdata[0][0][1] == pytest.approx(2 / 3) and hm.customdata[2][0][1] == 0   # row-normalised rate
    assert "true" in hm.hovertemplate and "%" in hm.hovertemplate
    assert list(hm.x) == ["cat", "dog", "bird"] and fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.xaxis.title.text == "what the model said" and fig.layout.yaxis.title.text == "true category"
    norm = confusion_matrix_figure(cm, ["cat", "dog", "bird"], normalized=True)
    assert norm.data[0].z[1][0] == pytest.approx(0.5) and norm.data[0].zmax == 1
    # from a report or its JSON, classes taken from it
    items = [{"path": "a", "true": "x", "pred": "y", "confidence": 0.9}, {"path": "b", "true": "y", "pred": "y",
                                                                          "confidence": 0.8}]
    rep = EvalReport.from_predictions(["x", "y"], items)
    for src in (rep, rep.to_dict()):
        f = confusion_matrix_figure(src)
        assert [list(r) for r in f.data[0].z] == [[0, 1], [0, 1]] and list(f.data[0].y) == ["x", "y"]
    with pytest.raises(TransferLabError):
        confusion_matrix_figure([[1, 2]], ["a", "b"])


def test_per_class_bars():
    fig = per_class_bars({"cat": {"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3},
                          "bird": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}})
    assert _names(fig) == ["Right when it says so", "Pictures it found", "Overall score"]
    assert fig.layout.barmode == "group"
    assert list(fig.data[1].y) == pytest.approx([2 / 3, 0.0]) and list(fig.data[0].x) == ["cat", "bird"]
    assert list(fig.data[0].customdata) == [3, 2]


def test_topk_bars():
    fig = topk_bars([{"label": "cat", "probability": 0.7}, {"label": "dog", "probability": 0.2},
                     {"label": "bird", "probability": 0.1}])
    (bar,) = fig.data
    assert bar.orientation == "h" and list(bar.y) == ["bird", "dog", "cat"]   # most likely drawn on top
    assert list(bar.x) == [0.1, 0.2, 0.7] and list(fig.layout.xaxis.range) == [0, 1]
    assert len(topk_bars([]).data[0].x) == 0


def test_layer_groups_figure():
    groups = [{"name": "stem", "label": "Stem", "num_params": 1000, "frozen": True},
              {"name": "stage_1", "label": "Stage 1", "num_params": 250_000, "frozen": True},
              {"name": "final", "label": "Final layers", "num_params": 1_200_000, "frozen": False},
              {"name": "classifier", "label": "New classifier", "num_params": 3843, "frozen": False}]
    fig = layer_groups_figure(groups)
    frozen, trained, new = fig.data
    assert frozen.name.startswith("Kept") and trained.name.startswith("Learns")
    assert new.name.startswith("New classifier")
    assert list(frozen.x) == ["Stem", "Stage 1"] and list(trained.x) == ["Final layers"]
    assert list(new.x) == ["New classifier"]
    assert list(fig.layout.xaxis.categoryarray) == ["Stem", "Stage 1", "Final layers", "New classifier"]
    assert list(trained.text) == ["1.2M"] and list(new.text) == ["3.8k"] and fig.layout.yaxis.type == "log"
    assert len({frozen.marker.color, trained.marker.color, new.marker.color}) == 3
    assert "1.2M of 1.5M" in fig.layout.title.text


def test_layer_groups_from_a_real_freeze_plan():
    timm = pytest.importorskip("timm")
    from tl_core.config import FreezeConfig
    from tl_core.models.freezing import make_freeze_plan

    plan = make_freeze_plan(timm.create_model("test_efficientnet", num_classes=2), FreezeConfig(preset="last:1"))
    fig = layer_groups_figure(plan.to_dict()["groups"])
    assert sum(len(t.x) for t in fig.data) == len(plan.groups)
    assert len(fig.data[1].x) == 1 and len(fig.data[2].x) == 1   # last group trained, plus the classifier


def test_charts_say_category_and_plain_words():
    """Issue 11: the text says "category", so do the charts; the technical names stay in the hovers."""
    figs = [training_curves(EPOCHS, BATCHES), class_counts_chart({"cat": 3}, {"cat": 1}),
            confusion_matrix_figure([[1, 0], [0, 1]], ["cat", "dog"]),
            per_class_bars({"cat": {"precision": 1, "recall": 1, "f1": 1, "support": 1}}),
            topk_bars([{"label": "cat", "probability": 0.9}])]
    for fig in figs:
        words = [fig.layout[axis].title.text or "" for axis in ("xaxis", "yaxis", "xaxis2", "yaxis2")
                 if axis in fig.layout] + [t.name or "" for t in fig.data]
        text = " ".join(words).lower()
        for jargon in ("class", "validation", "precision", "recall", "f1"):
            assert jargon not in text.split() and f"{jargon} " not in text, (jargon, words)
    bars = per_class_bars({"cat": {"precision": 0.5, "recall": 1, "f1": 0.67, "support": 2}})
    assert "Precision" in bars.data[0].hovertemplate and "F1" in bars.data[2].hovertemplate


def test_layer_groups_figure_names_groups_in_plain_words():
    groups = [{"name": "stem", "label": "Stem", "num_params": 10, "frozen": True,
               "description": "The first layers: they see raw pixels."},
              {"name": "stage_1", "label": "Stage 1", "num_params": 20, "frozen": True,
               "description": "Early layers: simple shapes and patterns."},
              {"name": "classifier", "label": "New classifier", "num_params": 5, "frozen": False,
               "description": "The new output layer."}]
    fig = layer_groups_figure(groups)
    assert list(fig.layout.xaxis.categoryarray) == ["First layers", "Early layers 1", "New classifier"]
    assert fig.data[0].customdata[0][0] == "Stem"   # the technical label, in the hover


def test_legend_below_moves_the_legend_under_the_charts_and_makes_room():
    from tl_core.app.plots import legend_below, training_curves

    fig = training_curves([{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "train_accuracy": 0.5,
                            "val_accuracy": 0.6}, {"epoch": 2, "train_loss": 0.8, "val_loss": 0.7,
                                                   "train_accuracy": 0.6, "val_accuracy": 0.7}])
    before = fig.layout.height or 360
    legend_below(fig)
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"
    assert fig.layout.height == before + 80 and fig.layout.margin.b == 120
