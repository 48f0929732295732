"""Train: good defaults, Start and Stop, and the run drawn live while it trains in the background.

Training runs in a thread owned by the server (tl_core.app.jobs), never inside this script: the other
pages stay usable, a refresh or a second tab finds the same run, and everything is in the run
folder, which this page polls once a second.
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from pages._shared import require_app, current_run_dir, figure, guard, header, need_data, save, ui, view_run
from tl_core.app import jobs
from tl_core.config import AUGMENTS, BALANCE_MODES, DEFAULT_LR, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.runs import list_runs
from tl_core.app.formatting import format_seconds, run_label
from tl_core.app.live import live_view
from tl_core.app.workspace import runs_dir
from tl_core.runs.events import stage_label, warning_title

require_app(__file__)

header("Train", "Show the model your pictures again and again (each pass is an **epoch**) until it "
       "recognises your categories. The defaults work well: just press **Start training**.")

state = ui()
DEFAULTS = dataclasses.asdict(TrainConfig())
WARN_ICON = {"overfitting": ":material/psychology:", "loss_not_falling": ":material/trending_down:", "nan": ":material/error:", "early_stop": ":material/stop:",
             "unreadable": ":material/image:", "no_feature_cache": ":material/slow_motion_video:"}


def remember(**values) -> None:
    """Keep only the settings that differ from the defaults."""
    train = dict(state.train or {})
    for k, v in values.items():
        if v == DEFAULTS.get(k):
            train.pop(k, None)
        else:
            train[k] = v
    if train != (state.train or {}):
        state.train = train
        save()


def settings() -> TrainConfig | None:
    current = state.train_config()
    epochs = st.number_input("Epochs (passes over your pictures)", 1, 200, value=int(current.epochs), step=1,
                             key="train_epochs",
                       help="More epochs can help a bit; training stops early by itself when it stops improving.")
    with st.expander("Advanced settings"):
        a, b = st.columns(2)
        with a:
            sizes = [4, 8, 16, 32, 64, 128, 256]
            bs = current.batch_size if current.batch_size in sizes else 32
            batch_size = st.selectbox("Batch size (pictures per step)", sizes, index=sizes.index(bs),
                                      key="train_batch_size")
            auto_lr = st.checkbox("Choose the learning rate for me", value=current.lr is None, key="train_auto_lr")
            kind = state.freeze_config().kind
            lr = None
            if not auto_lr:
                lr = st.number_input("Learning rate", min_value=1e-6, max_value=1.0, format="%.5f",
                                     value=float(current.lr or DEFAULT_LR[kind]), key="train_lr",
                                     help="How big each correction step is. Too big and training breaks down; "
                                          "too small and it learns slowly.")
            else:
                st.caption(f"Learning rate for this layer setting: {DEFAULT_LR[kind]:g}")
            augment = st.selectbox("Augmentation (random flips, crops and colour changes)", list(AUGMENTS),
                                   index=list(AUGMENTS).index(current.augment), key="train_augment",
                                   help="Shows slightly changed copies of your pictures so the model does not "
                                        "memorise them. Not used when only the classifier trains (the frozen "
                                        "features are computed once).")
        with b:
            label_smoothing = st.slider("Label smoothing", 0.0, 0.3, value=float(current.label_smoothing), step=0.05,
                                        key="train_label_smoothing",
                                        help="Keeps the model from being over-confident.")
            early = st.toggle("Stop early when it stops improving", value=current.early_stopping_patience is not None,
                              key="train_early")
            patience = None
            if early:
                patience = st.number_input("Patience (epochs without improvement)", 1, 50,
                                           value=int(current.early_stopping_patience or 5), key="train_patience")
            balance = st.selectbox("Balance categories of different sizes", list(BALANCE_MODES),
                                   index=list(BALANCE_MODES).index(current.balance), key="train_balance",
                                   help="auto: weigh rare categories more when one category is 3 times bigger "
                                        "than another.")
            seed = st.number_input("Random seed", 0, 2**31 - 1, value=int(current.seed), key="train_seed",
                                   help="The same seed and settings give the same model.")
    values = dict(epochs=int(epochs), batch_size=int(batch_size), lr=lr, augment=augment,
                  label_smoothing=float(label_smoothing), early_stopping_patience=patience, balance=balance,
                  seed=int(seed))
    with guard():
        config = state.train_config(**values)
        remember(**values)
        return config
    return None


def draw(view) -> None:
    """Everything about one run, from its folder."""
    if view.prepare is not None and view.active:
        p = view.prepare
        total = max(int(p.get("total") or 0), 1)
        st.progress(min(int(p.get("done") or 0) / total, 1.0),
                    text=f"Preparing: {stage_label(p.get('stage'))} "
                         f"({p.get('done', 0)} of {p.get('total', 0)})")
    elif view.active and view.info is None:
        st.progress(0.0, text="Preparing the pictures and the model…")
    else:
        st.progress(view.fraction, text=view.progress_text())

    last = view.epoch_logs[-1] if view.epoch_logs else {}
    best = last.get("best_val_accuracy")
    if view.state == "finished":
        has_best = isinstance(best, (int, float)) and best >= 0
        st.success(f"{view.message} Best validation accuracy: {best:.1%}." if has_best else view.message,
                   icon=":material/celebration:")
        st.page_link("pages/5_Results.py", label="See the results", icon=":material/bar_chart:")
    elif view.state == "stopped":
        st.info(view.message or "Stopped.", icon=":material/stop:")
    elif view.state == "failed":
        st.error(view.message or "Training failed.", icon=":material/warning:")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Epoch", f"{view.epoch} / {view.epochs}" if view.epochs else "–")
    m2.metric("Best validation accuracy", f"{best:.1%}" if isinstance(best, (int, float)) and best >= 0 else "–")
    m3.metric("Speed", f"{view.images_per_sec:,.0f} img/s" if view.images_per_sec else "–")
    if view.active:
        m4.metric("Time left", format_seconds(view.eta_seconds) if view.eta_seconds is not None else "–")
    else:
        m4.metric("Took", format_seconds(view.elapsed_seconds))

    fig = figure("training_curves", view.epoch_logs, view.batch_events)
    if fig is not None:
        st.plotly_chart(fig, key="train_curves")

    for w in view.warnings:
        kind = w.get("kind", "")
        title = warning_title(kind)
        box = st.info if kind in ("early_stop", "no_feature_cache") else st.warning
        box(f"**{title}.** {w.get('message', '')}", icon=WARN_ICON.get(kind, ":material/warning:"))

    if view.info and view.info.get("mode"):
        d = view.info
        st.caption(f"{d.get('train_images')} pictures to learn from, {d.get('val_images')} to check with · "
                   f"{d.get('device', {}).get('name', '')} · "
                   f"{'fast path: frozen features computed once' if d.get('mode') == 'features' else 'full model each step'}"
                   f" · weights: {d.get('weights', '')}")


@st.fragment(run_every=1.0)
def live(run_dir: str) -> None:
    """Redrawn every second while the run trains; a full rerun when it ends (buttons change)."""
    try:
        view = live_view(run_dir)
    except TransferLabError as err:
        st.error(str(err))
        return
    draw(view)
    if not view.active:
        st.rerun(scope="app")


def all_runs(current: str | None) -> None:
    """The table of every run on disk; redrawn every 2 s while a run trains (its state and epochs move)."""
    runs = list_runs(runs_dir())
    if runs:
        st.subheader("All runs")
        st.caption("Every run is kept on disk, with its curves and best weights.")
        rows = [{"When": run_label(r).split(" · ")[0], "Model": r.get("model"), "Layers": r.get("preset"),
                 "State": r.get("state"),
                 "Best accuracy": (f"{r['best_val_accuracy']:.1%}"
                                   if isinstance(r.get("best_val_accuracy"), (int, float))
                                   and r["best_val_accuracy"] >= 0 else ""),
                 "Epochs": r.get("epochs_done"), "Run folder": r["run_id"]} for r in runs]
        event = st.dataframe(rows, hide_index=True, on_select="rerun", selection_mode="single-row",
                             key=f"train_runs_{len(runs)}")
        picked_rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
        if picked_rows:
            picked = runs[picked_rows[0]]["path"]
            if picked != st.session_state.get("train_runs_last") and picked != current:
                st.session_state["train_runs_last"] = picked
                view_run(picked)
                st.rerun()
        st.caption("Click a row to look at that run; the Results and Try pages follow your choice.")


with guard():
    run_dir = current_run_dir()
    active_job = jobs.active_job()
    view = live_view(run_dir) if run_dir else None
    root = need_data() if not (view and view.active) else state.data_root

    if root is not None or (view and view.active):
        st.subheader("Settings")
        model_cfg, freeze_cfg = state.model_config(), state.freeze_config()
        st.caption(f"Model **{model_cfg.name}** · layers: **{freeze_cfg.preset}**"
                   f"{' (custom)' if freeze_cfg.frozen_groups is not None else ''} · "
                   f"{int(state.val_fraction * 100)}% of the pictures kept aside to check")
        train_cfg = settings()

        c1, c2, _ = st.columns([1, 1, 3])
        with c1:
            start = st.button("Start training", type="primary", key="train_start", icon=":material/play_arrow:",
                              disabled=active_job is not None or train_cfg is None or root is None)
        with c2:
            stop = st.button("Stop", key="train_stop", icon=":material/stop:", disabled=not (view and view.active))
        if active_job is not None and not start:
            st.caption("A model is training. You can look at the other pages meanwhile; it keeps going.")

        if start and train_cfg is not None:
            with guard():
                config = RunConfig(data=state.data_config(), model=model_cfg, freeze=freeze_cfg, train=train_cfg)
                job = jobs.start_training(config, runs_dir())
                view_run(job.run_dir)
                st.rerun()
        if stop and view is not None:
            if jobs.stop_training(view.run_dir):
                st.toast("Stopping after the current step…", icon=":material/stop:")
            else:
                st.warning("This run is not training in this app (it may belong to another program), so it "
                           "cannot be stopped from here.", icon=":material/warning:")

    if run_dir:
        st.subheader("This run" if view and view.active else "Latest run")
        st.caption(f"Run folder: `{run_dir}`")
        if view is not None and view.active:
            live(run_dir)
        elif view is not None:
            draw(view)

    if active_job is not None:
        st.fragment(run_every=2)(all_runs)(run_dir)
    else:
        all_runs(run_dir)
