"""Plotly figures for the app, as pure functions of plain data.

Every function takes lists/dicts as they come out of the run folder (``RunFolder.epoch_logs()``,
``summary.json``, ``EvalReport.to_dict()``, ``FreezePlan.to_dict()``) and returns a
``go.Figure``; none reads files or touches Streamlit, so the same figure can be drawn live on the
Train page, redrawn after a restart, and tested without a browser.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
# same colours as the Layers page's legend: blue frozen, green trained, orange the new classifier
FROZEN_COLOR = "#1f77b4"
TRAINABLE_COLOR = "#2ca02c"
CLASSIFIER_COLOR = "#ff7f0e"
LAYOUT = dict(template="plotly_white", margin=dict(l=40, r=20, t=50, b=40),
              legend=dict(orientation="h", yanchor="bottom", y=1.08, xanchor="left", x=0))


def _num(value: Any) -> float | None:
    """A finite float or None (missing values and NaN are simply not drawn)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _human(n: Any) -> str:
    n = _num(n) or 0.0
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{int(n)}"


def _series(logs: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, log in enumerate(logs):
        y = _num(log.get(key))
        if y is None:
            continue
        x = _num(log.get("epoch"))
        xs.append(x if x is not None else i + 1)
        ys.append(y)
    return xs, ys


def _step_positions(batch_events: list[dict]) -> tuple[list[float], list[float]]:
    """Step losses placed on the epoch axis: a step in epoch ``e`` sits between ``e-1`` and ``e``,
    at its share of that epoch's steps (estimated from the previous epoch while one is running)."""
    rows = []
    for ev in batch_events:
        logs = ev.get("logs") if isinstance(ev.get("logs"), dict) else ev
        epoch = _num(ev.get("epoch", logs.get("epoch")))  # the engine puts it in logs
        loss, step = _num(logs.get("loss")), _num(ev.get("step", logs.get("step")))
        if loss is not None and step is not None and epoch is not None:
            rows.append((epoch, step, loss))
    if not rows:
        return [], []
    base = 1.0 if min(r[0] for r in rows) == 0 else 0.0  # accept 0-based epoch numbers too
    by_epoch: dict[float, list[tuple[float, float]]] = {}
    for epoch, step, loss in sorted(rows, key=lambda r: (r[0], r[1])):
        by_epoch.setdefault(epoch + base, []).append((step, loss))
    xs, ys = [], []
    prev_end, prev_span = 0.0, None
    epochs = sorted(by_epoch)
    for i, e in enumerate(epochs):
        steps = by_epoch[e]
        end = steps[-1][0]
        complete = i < len(epochs) - 1
        span = (end - prev_end) if complete or prev_span is None else prev_span
        span = span if span and span > 0 else max(1.0, end - prev_end)
        for step, loss in steps:
            xs.append((e - 1) + min(1.0, (step - prev_end) / span))
            ys.append(loss)
        prev_end, prev_span = end, span
    return xs, ys


def legend_below(fig: go.Figure) -> go.Figure:
    """The legend under the charts instead of above them: with presentation mode's bigger type the
    legend above ran into the chart titles."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.28, xanchor="left", x=0),
                      margin=dict(b=120), height=(fig.layout.height or 360) + 80)
    return fig


def training_curves(epoch_logs: list[dict], batch_events: list[dict] | None = None) -> go.Figure:
    """Loss (left) and accuracy (right) per epoch, train and validation, with the step-level
    training loss as a faint line: the gap between the two curves is what shows overfitting."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss (lower is better)", "Accuracy (higher is better)"),
                        horizontal_spacing=0.1)
    logs = [log for log in (epoch_logs or []) if isinstance(log, dict)]
    if batch_events:
        xs, ys = _step_positions([ev for ev in batch_events if isinstance(ev, dict)])
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="Training loss (each step)",
                                     line=dict(color=TRAIN_COLOR, width=1), opacity=0.3,
                                     hovertemplate="epoch %{x:.2f}<br>loss %{y:.4f}<extra></extra>"), row=1, col=1)
    # "checking": the pictures kept aside to check the model (validation), as the Data page says
    for key, name, color, col in (("train_loss", "Training loss", TRAIN_COLOR, 1),
                                  ("val_loss", "Checking loss", VAL_COLOR, 1),
                                  ("train_accuracy", "Training accuracy", TRAIN_COLOR, 2),
                                  ("val_accuracy", "Checking accuracy", VAL_COLOR, 2)):
        xs, ys = _series(logs, key)
        fmt = "%{y:.1%}" if col == 2 else "%{y:.4f}"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name,
                                 line=dict(color=color, width=2, dash="solid" if key.startswith("train") else "dot"),
                                 hovertemplate=f"epoch %{{x}}<br>{name.lower()} {fmt}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(title_text="passes over your pictures (epochs)", rangemode="tozero")
    fig.update_yaxes(title_text="loss", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    if not logs:
        fig.add_annotation(text="The curves appear after the first epoch (pass over your pictures).", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(**LAYOUT, height=360)
    return fig


def class_counts_chart(counts: dict[str, int], val_counts: dict | None = None) -> go.Figure:
    """Pictures per category (for training, and for checking stacked on top when given): imbalance
    is visible at a glance."""
    counts = dict(counts or {})
    classes = list(counts) + [c for c in (val_counts or {}) if c not in counts]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=classes, y=[counts.get(c, 0) for c in classes], name="For training",
                         marker_color=TRAIN_COLOR, text=[counts.get(c, 0) for c in classes], textposition="inside",
                         hovertemplate="%{x}: %{y} pictures for training<extra></extra>"))
    if val_counts:
        fig.add_trace(go.Bar(x=classes, y=[val_counts.get(c, 0) for c in classes], name="For checking",
                             marker_color=VAL_COLOR, text=[val_counts.get(c, 0) for c in classes],
                             textposition="inside",
                             hovertemplate="%{x}: %{y} pictures kept aside for checking<extra></extra>"))
    fig.update_layout(**LAYOUT, barmode="stack", height=320, xaxis_title="category", yaxis_title="pictures")
    fig.update_xaxes(type="category")
    return fig


def _confusion_parts(report_or_confusion: Any, classes: Sequence[str] | None) -> tuple[list[list[int]], list[str]]:
    obj = report_or_confusion
    if hasattr(obj, "confusion") and hasattr(obj, "classes"):  # an EvalReport
        matrix, names = obj.confusion, obj.classes
    elif isinstance(obj, dict):
        matrix, names = obj.get("confusion"), obj.get("classes")
    else:
        matrix, names = obj, None
    names = list(classes) if classes is not None else list(names or [])
    matrix = [[int(v) for v in row] for row in (matrix or [])]
    if not names:
        names = [str(i) for i in range(len(matrix))]
    if len(matrix) != len(names) or any(len(row) != len(names) for row in matrix):
        from tl_core.errors import TransferLabError

        raise TransferLabError(f"The confusion matrix must be {len(names)} x {len(names)}, one row and one column "
                               "per category.")
    return matrix, [str(c) for c in names]


def confusion_matrix_figure(report_or_confusion: Any, classes: Sequence[str] | None = None,
                            normalized: bool = False) -> go.Figure:
    """Rows = true class, columns = predicted class; each cell shows its count, the hover adds
    the share of that true class (row-normalised rate). ``normalized`` colours by that rate, which
    keeps a small class's mistakes visible next to a big class.

    Clicking/selecting a cell gives ``x`` (predicted) and ``y`` (true) labels: pass them to
    ``EvalReport.cell(y, x)`` to show the images behind it.
    """
    matrix, names = _confusion_parts(report_or_confusion, classes)
    rates = []
    for row in matrix:
        total = sum(row)
        rates.append([(v / total) if total else 0.0 for v in row])
    custom = [[[matrix[i][j], rates[i][j]] for j in range(len(names))] for i in range(len(names))]
    fig = go.Figure(go.Heatmap(
        z=rates if normalized else matrix, x=names, y=names, customdata=custom,
        text=[[str(v) for v in row] for row in matrix], texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1 if normalized else max([1] + [v for row in matrix for v in row]),
        colorbar=dict(title="share" if normalized else "pictures", tickformat=".0%" if normalized else None),
        hovertemplate="true category: %{y}<br>the model said: %{x}<br>%{customdata[0]} pictures<br>"
                      "%{customdata[1]:.1%} of the pictures of %{y}<extra></extra>"))
    fig.update_xaxes(title_text="what the model said", type="category", side="bottom")
    fig.update_yaxes(title_text="true category", type="category", autorange="reversed")
    size = max(320, min(900, 60 * len(names) + 160))
    fig.update_layout(template="plotly_white", margin=dict(l=40, r=20, t=30, b=40), height=size)
    return fig


def per_class_bars(per_class: dict) -> go.Figure:
    """Precision, recall and F1 side by side for each category, with the number of pictures, under
    plain names (the technical name in the hover)."""
    from tl_core.app.formatting import SCORE_WORDS

    names = list(per_class or {})
    fig = go.Figure()
    for key, color in (("precision", TRAIN_COLOR), ("recall", VAL_COLOR), ("f1", TRAINABLE_COLOR)):
        label, tech = SCORE_WORDS[key][0], SCORE_WORDS[key][1].split(":")[0]
        ys = [_num(per_class[c].get(key)) or 0.0 for c in names]
        support = [per_class[c].get("support", "?") for c in names]
        fig.add_trace(go.Bar(x=names, y=ys, name=label, marker_color=color, customdata=support,
                             text=[f"{y:.0%}" for y in ys], textposition="outside",
                             hovertemplate=f"%{{x}}<br>{label.lower()} ({tech}) %{{y:.1%}}<br>%{{customdata}} "
                                           "pictures<extra></extra>"))
    fig.update_layout(**LAYOUT, barmode="group", height=340)
    fig.update_xaxes(title_text="category", type="category")
    fig.update_yaxes(title_text="score", tickformat=".0%", range=[0, 1.12])
    return fig


def topk_bars(topk: list[dict]) -> go.Figure:
    """Horizontal probability bars, most likely category on top."""
    rows = [(str(t.get("label")), _num(t.get("probability")) or 0.0) for t in (topk or [])]
    rows.sort(key=lambda r: r[1])  # plotly draws the first bar at the bottom
    fig = go.Figure(go.Bar(x=[p for _, p in rows], y=[lab for lab, _ in rows], orientation="h",
                           marker_color=[VAL_COLOR if i == len(rows) - 1 else TRAIN_COLOR for i in range(len(rows))],
                           text=[f"{p:.1%}" for _, p in rows], textposition="auto",
                           hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text="how sure")
    fig.update_yaxes(type="category")
    fig.update_layout(template="plotly_white", margin=dict(l=20, r=20, t=20, b=40),
                      height=max(160, 40 * len(rows) + 80), showlegend=False)
    return fig


def layer_groups_figure(groups: list[dict]) -> go.Figure:
    """The model as a row of blocks from the input (left) to the classifier (right); the block
    height grows with the parameter count (log scale), colour says kept as it is (frozen), learns,
    or new. Groups are named in plain words (their technical label in the hover)."""
    from tl_core.app.formatting import group_title

    groups = [g for g in (groups or []) if isinstance(g, dict)]
    labels = [group_title(str(g.get("name") or ""), str(g.get("label") or g.get("name")),
                          str(g.get("description") or "")) for g in groups]
    fig = go.Figure()

    def kind(g: dict) -> str:
        if g.get("name") == "classifier":
            return "classifier"
        return "frozen" if g.get("frozen") else "trained"

    for key, name, color in (("frozen", "Kept as it is (frozen)", FROZEN_COLOR),
                             ("trained", "Learns from your pictures", TRAINABLE_COLOR),
                             ("classifier", "New classifier (always learns)", CLASSIFIER_COLOR)):
        sel = [i for i, g in enumerate(groups) if kind(g) == key]
        if not sel and key == "classifier":
            continue
        fig.add_trace(go.Bar(
            x=[labels[i] for i in sel], y=[max(1, int(_num(groups[i].get("num_params")) or 0)) for i in sel],
            name=name, marker_color=color, marker_line=dict(color="#333", width=1),
            text=[_human(groups[i].get("num_params")) for i in sel], textposition="outside",
            customdata=[[groups[i].get("label") or groups[i].get("name"), groups[i].get("description", "")]
                        for i in sel],
            hovertemplate="%{x} (%{customdata[0]})<br>%{text} numbers (parameters)<br>%{customdata[1]}"
                          "<extra></extra>"))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels,
                     title_text="picture  →  answer")
    fig.update_yaxes(type="log", title_text="size (log scale)")
    trainable = sum(int(_num(g.get("num_params")) or 0) for g in groups if not g.get("frozen"))
    total = sum(int(_num(g.get("num_params")) or 0) for g in groups)
    fig.update_layout(**LAYOUT, barmode="overlay", bargap=0.15, height=340,
                      title=dict(text=f"Learns: {_human(trainable)} of {_human(total)} numbers (parameters)",
                                 x=0, y=0.98))
    return fig


__all__ = ["training_curves", "class_counts_chart", "confusion_matrix_figure", "per_class_bars", "topk_bars",
           "layer_groups_figure"]


RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def compare_curves_figure(curves: dict[str, list[dict]]) -> go.Figure:
    """Validation loss (left) and accuracy (right) of several runs on the same axes, one colour
    per run (training accuracy dotted, so a growing gap shows which run memorises)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Checking loss (lower is better)",
                                                        "Accuracy (higher is better)"), horizontal_spacing=0.1)
    for i, (label, logs) in enumerate(curves.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        logs = [log for log in (logs or []) if isinstance(log, dict)]
        for key, col, dash, suffix in (("val_loss", 1, "solid", "checking loss"),
                                       ("val_accuracy", 2, "solid", "checking accuracy"),
                                       ("train_accuracy", 2, "dot", "training accuracy")):
            xs, ys = _series(logs, key)
            fmt = "%{y:.1%}" if col == 2 else "%{y:.4f}"
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if dash == "solid" else "lines",
                                     name=f"{label}: {suffix}", legendgroup=label,
                                     showlegend=key != "train_accuracy",
                                     line=dict(color=color, width=2, dash=dash),
                                     hovertemplate=f"{label}<br>epoch %{{x}}<br>{suffix} {fmt}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="passes over your pictures (epochs)", rangemode="tozero")
    fig.update_yaxes(title_text="loss", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_layout(**{**LAYOUT, "legend": dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0)},
                      height=420)
    return fig


# -- the Lab ------------------------------------------------------------------------------------
# Axis titles in plain words (issue 14); every point's hover says what the number means. With
# ``presentation=True`` (a projector): bigger type, thicker lines, darker colours, a taller chart.

LAB_ACCURACY = "correct on pictures it never saw"
LAB_PRETRAINED = "#0b4f9c"      # dark blue: from ImageNet weights
LAB_SCRATCH = "#c2410c"         # dark orange: from random weights
LAB_TRAIN = "#6b7280"           # grey: on the pictures it learned from


def _lab_layout(fig: go.Figure, presentation: bool, height: int = 380, title: str | None = None) -> go.Figure:
    size = 20 if presentation else 13
    fig.update_layout(**{**LAYOUT, "legend": dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0,
                                                  font=dict(size=size))},
                      height=560 if presentation else height, font=dict(size=size, color="#111111"),
                      hoverlabel=dict(font_size=size), title=dict(text=title, x=0, font=dict(size=size + 2))
                      if title else None)
    if presentation:
        fig.update_traces(selector=dict(type="scatter"), line=dict(width=4), marker=dict(size=12))
        fig.update_xaxes(showgrid=True, gridcolor="#bbbbbb", linecolor="#111111", tickfont=dict(size=size))
        fig.update_yaxes(showgrid=True, gridcolor="#bbbbbb", linecolor="#111111", tickfont=dict(size=size))
    return fig


def _ci(point: dict) -> tuple[float, float, float]:
    """(accuracy, distance down to the range's low end, up to its high end) for error bars."""
    acc = _num(point.get("accuracy")) or 0.0
    ci = point.get("accuracy_ci") or [acc, acc]
    return acc, max(0.0, acc - (_num(ci[0]) or acc)), max(0.0, (_num(ci[1]) or acc) - acc)


def lab_scratch_figure(results: dict, presentation: bool = False) -> go.Figure:
    """Pretrained and from scratch on the same axes: accuracy on the checking pictures against the
    seconds it took, one point per pass. The pretrained curve is up and left: better, sooner."""
    fig = go.Figure()
    for key, name, color in (("pretrained", "From ImageNet weights", LAB_PRETRAINED),
                             ("scratch", "From random weights", LAB_SCRATCH)):
        arm = results.get(key) or {}
        curve = [c for c in arm.get("curve") or [] if isinstance(c, dict)]
        xs = [_num(c.get("elapsed_seconds")) for c in curve]
        ys = [_num(c.get("val_accuracy")) for c in curve]
        n = arm.get("val_pictures") or "the"
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name, line=dict(color=color, width=3),
            customdata=[c.get("epoch") for c in curve],
            hovertemplate=(f"<b>{name}</b><br>after pass %{{customdata}}, %{{x:.0f}} s in: right on %{{y:.0%}} of the "
                           f"{n} pictures kept aside to check it<extra></extra>")))
    fig.update_xaxes(title_text="seconds of training (reading the pictures included)", rangemode="tozero")
    fig.update_yaxes(title_text=LAB_ACCURACY, tickformat=".0%", range=[0, 1.02])
    return _lab_layout(fig, presentation)


def lab_data_size_figure(results: dict, presentation: bool = False) -> go.Figure:
    """Accuracy against pictures per category: the mean of the repeats with its 95% range, each repeat
    as a faint dot, and the from-scratch curve when there is one."""
    fig = go.Figure()
    series = (("points", "From ImageNet weights", LAB_PRETRAINED), ("scratch_points", "From random weights",
                                                                     LAB_SCRATCH))
    for key, name, color in series:
        pts = [p for p in results.get(key) or [] if isinstance(p, dict)]
        if not pts:
            continue
        xs = [_num(p.get("pictures_per_category")) for p in pts]
        accs, lows, highs = zip(*(_ci(p) for p in pts))
        n = pts[0].get("val_pictures") or "the"
        fig.add_trace(go.Scatter(
            x=xs, y=list(accs), mode="lines+markers", name=name, line=dict(color=color, width=3),
            error_y=dict(type="data", symmetric=False, array=list(highs), arrayminus=list(lows), color=color,
                         thickness=1.5, width=6),
            customdata=[[f"{p.get('fraction', 0):.0%}", len(p.get("repeats") or []),
                         f"{(p.get('accuracy_ci') or [0, 0])[0]:.0%}-{(p.get('accuracy_ci') or [0, 0])[1]:.0%}"]
                        for p in pts],
            hovertemplate=(f"<b>{name}</b><br>%{{x:g}} pictures per category (%{{customdata[0]}} of them)<br>"
                           f"right on %{{y:.0%}} of the {n} pictures kept aside (mean of %{{customdata[1]}} "
                           "runs)<br>95% range %{customdata[2]}: the true accuracy is probably in there<extra></extra>")))
        if key == "points":
            rx, ry = [], []
            for p, x in zip(pts, xs):
                for rep in p.get("repeats") or []:
                    if _num(rep.get("accuracy")) is not None:
                        rx.append(x)
                        ry.append(_num(rep.get("accuracy")))
            if len(ry) > len(pts):
                fig.add_trace(go.Scatter(
                    x=rx, y=ry, mode="markers", name="Each run (its own pick of pictures)",
                    marker=dict(color=color, opacity=0.35, size=8),
                    hovertemplate="one run: %{x:g} pictures per category, right on %{y:.0%}<extra></extra>"))
    fig.update_xaxes(title_text="pictures per category", rangemode="tozero")
    fig.update_yaxes(title_text=LAB_ACCURACY, tickformat=".0%", range=[0, 1.05])
    return _lab_layout(fig, presentation)


def lab_layers_figure(results: dict, presentation: bool = False) -> go.Figure:
    """For each setting, accuracy on the pictures it learned from next to accuracy on the checking
    pictures: the gap between the two bars is overfitting."""
    rows = [r for r in results.get("results") or [] if isinstance(r, dict)]
    names = [f"{r.get('preset')}: {r.get('learns', '')}" for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=names, y=[_num(r.get("train_accuracy")) for r in rows], name="On the pictures it learned from",
        marker_color=LAB_TRAIN,
        hovertemplate="%{x}<br>right on %{y:.0%} of the pictures it learned from (while learning)<extra></extra>"))
    accs, lows, highs = zip(*(_ci(r) for r in rows)) if rows else ((), (), ())
    fig.add_trace(go.Bar(
        x=names, y=list(accs), name="On pictures it never saw", marker_color=LAB_PRETRAINED,
        error_y=dict(type="data", symmetric=False, array=list(highs), arrayminus=list(lows), color="#111111"),
        customdata=[[r.get("val_pictures"), _num(r.get("gap"))] for r in rows],
        hovertemplate=("%{x}<br>right on %{y:.0%} of the %{customdata[0]} pictures kept aside to check it<br>"
                       "gap to the pictures it learned from: %{customdata[1]:.0%} (a large gap is overfitting)"
                       "<extra></extra>")))
    fig.update_xaxes(title_text="which layers learn", type="category")
    fig.update_yaxes(title_text="correct", tickformat=".0%", range=[0, 1.08])
    fig.update_layout(barmode="group")
    return _lab_layout(fig, presentation)


def lab_seconds_figure(results: dict, label_key: str, presentation: bool = False) -> go.Figure:
    """How long each run of a layers or models experiment took, as bars."""
    rows = [r for r in results.get("results") or [] if isinstance(r, dict)]
    names = [str(r.get(label_key)) for r in rows]
    fig = go.Figure(go.Bar(
        x=names, y=[_num(r.get("seconds")) for r in rows], marker_color=LAB_TRAIN,
        text=[f"{(_num(r.get('seconds')) or 0):.0f} s" for r in rows], textposition="outside",
        hovertemplate="%{x}<br>%{y:.0f} seconds, reading the pictures included<extra></extra>"))
    fig.update_xaxes(title_text="run", type="category")
    fig.update_yaxes(title_text="seconds it took", rangemode="tozero")
    fig.update_layout(showlegend=False)
    return _lab_layout(fig, presentation, height=300)


def lab_models_figure(results: dict, presentation: bool = False) -> go.Figure:
    """Each model as a point: accuracy on the checking pictures against the seconds it took (bigger
    marker: more weights). Up and left is better."""
    rows = [r for r in results.get("results") or [] if isinstance(r, dict)]
    fig = go.Figure()
    for i, r in enumerate(rows):
        acc, low, high = _ci(r)
        params = _num(r.get("params_m")) or 1.0
        fig.add_trace(go.Scatter(
            x=[_num(r.get("seconds"))], y=[acc], mode="markers+text", name=str(r.get("title")),
            text=[str(r.get("title"))], textposition="top center",
            marker=dict(size=10 + 4 * math.sqrt(params), color=RUN_COLORS[i % len(RUN_COLORS)]),
            error_y=dict(type="data", symmetric=False, array=[high], arrayminus=[low]),
            customdata=[[r.get("val_pictures"), params, r.get("size_mb")]],
            hovertemplate=(f"<b>{r.get('title')}</b><br>right on %{{y:.0%}} of the %{{customdata[0]}} pictures kept "
                           "aside<br>took %{x:.0f} s; %{customdata[1]:.1f} million weights (%{customdata[2]} MB saved)"
                           "<extra></extra>")))
    fig.update_xaxes(title_text="seconds it took (reading the pictures included)", rangemode="tozero")
    fig.update_yaxes(title_text=LAB_ACCURACY, tickformat=".0%", range=[0, 1.08])
    return _lab_layout(fig, presentation)
