"""Train: good defaults, Start and Stop, and the run drawn live while it trains in the background.

Training runs in a thread owned by the server (tl_core.app.jobs), never inside this script: the other
pages stay usable, a refresh or a second tab finds the same run, and everything is in the run
folder, which this page polls once a second.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from pages._shared import (require_app, current_run_dir, figure, guard, header, need_data, next_step,
                           presentation_mode, queue_start_words, save, ui, view_run)
from tl_core.app import jobs
from tl_core.config import AUGMENTS, BALANCE_MODES, DEFAULT_LR, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.results.stats import range_words
from tl_core.runs import NOTE_MAX_CHARS, TITLE_MAX_CHARS, RunFolder, list_runs, list_trash, restore_run, trash_run
from tl_core.app.formatting import (format_seconds, format_when, markdown_safe, model_title, preset_short, run_label,
                                    run_row)
from tl_core.app.live import live_view
from tl_core.app.workspace import classroom_mode, runs_dir
from tl_core.runs.events import warning_title

require_app(__file__)

header("Train", "Show the model your pictures again and again (each pass is an **epoch**) until it "
       "recognises your categories. The defaults work well: just press **Start training**.")

state = ui()
DEFAULTS = dataclasses.asdict(TrainConfig())
WARN_ICON = {"overfitting": ":material/psychology:", "loss_not_falling": ":material/trending_down:", "nan": ":material/error:", "early_stop": ":material/stop:",
             "unreadable": ":material/image:", "no_feature_cache": ":material/slow_motion_video:",
             "cache_not_saved": ":material/save:", "data_problem": ":material/report:",
             "category_not_checked": ":material/visibility_off:"}


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
    from tl_core.app.classroom import limits

    current = state.train_config()
    most = limits().epochs or 200   # a classroom server's limit per student (also enforced when it starts)
    epochs = st.number_input("Epochs (passes over your pictures)", 1, most, value=min(int(current.epochs), most),
                             step=1, key="train_epochs",
                             help="More epochs can help a bit; training stops early by itself when it stops "
                                  "improving." + (f" On this server at most {most}." if most < 200 else ""))
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
                                        "memorise them. Not used when only the classifier trains (what the "
                                        "layers kept as they are see is computed once).")
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


def expected_time(config: RunConfig) -> None:
    """The same estimate as the Model and Layers pages and `tl estimate`, before Start."""
    from tl_core.app.timing import estimates_for

    with guard():
        ests, waiting = estimates_for({"run": config}, busy=lambda: jobs.active_job() is not None)
        est = ests["run"]
        if est is None:
            st.caption(":material/timer: Measuring how long this takes on this computer…" if waiting else
                       ":material/timer: The expected time is measured once no model is training.")
            return
        epochs = config.train.epochs
        st.caption(f":material/timer: Expected: about **{format_seconds(est.total_seconds(epochs))}** on this computer "
                   f"({format_seconds(est.prepare_seconds)} to prepare, then {format_seconds(est.epoch_seconds)} per "
                   f"pass{'; corrected by your earlier runs here' if est.runs_used else ''}). It stops earlier by "
                   "itself when it stops improving.")


PREPARE_SENTENCE = ("**Preparing** checks every picture, then reads each one once and runs the layers kept as "
                    "they are on it once. That is what makes every pass after it take only seconds.")


def segment_bar(view) -> None:
    """The one bar for the whole run, with its parts labelled underneath (each as wide as its
    expected time): check the pictures, read them once, train."""
    st.progress(view.bar_fraction(), text=view.progress_text())
    if not view.segments:
        return
    cols = st.columns([max(s["share"], 0.08) for s in view.segments], gap="small")
    for col, seg in zip(cols, view.segments):
        mark = (":material/check_circle:" if seg["done"] >= 1 else
                ":material/progress_activity:" if seg["done"] > 0 and view.active else ":material/radio_button_unchecked:")
        col.caption(f"{mark} {seg['label']}" + (f" {seg['done']:.0%}" if 0 < seg["done"] < 1 else ""))


def draw(view) -> None:
    """Everything about one run, from its folder: the bar, the curves (on top while it trains), the
    numbers, the warnings."""
    segment_bar(view)
    preparing = view.active and view.info is None
    if preparing:
        st.caption(PREPARE_SENTENCE)

    last = view.epoch_logs[-1] if view.epoch_logs else {}
    best = last.get("best_val_accuracy")
    if view.state == "finished":
        has_best = isinstance(best, (int, float)) and best >= 0
        message = markdown_safe(view.message or "")
        st.success(f"{message} Best accuracy on the pictures kept aside: {best:.1%}." if has_best else message,
                   icon=":material/celebration:")
        next_step("results", "Next: see the results")
    elif view.state == "stopped":
        st.info(markdown_safe(view.message or "Stopped."), icon=":material/stop:")
    elif view.state == "failed":
        st.error(markdown_safe(view.message or "Training failed."), icon=":material/warning:")

    def curves() -> None:
        fig = figure("training_curves", view.epoch_logs, view.batch_events)
        if fig is not None:
            if presentation_mode():  # bigger type: the legend goes under the charts, clear of their titles
                fig = figure("legend_below", fig)
            st.plotly_chart(fig, key="train_curves")

    if view.active and view.epoch_logs:
        curves()   # while it trains, the curves are what people watch: on top
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Epochs done", f"{view.epoch} / {view.epochs}" if view.epochs else "–",
              help="Passes over all your pictures that are finished; the same number as the bar and the sidebar.")
    checked = (view.info or {}).get("val_images")
    m2.metric("Best accuracy", f"{best:.1%}" if isinstance(best, (int, float)) and best >= 0 else "–",
              delta=range_words(best, checked) or None, delta_color="off", delta_arrow="off",
              help="On the pictures kept aside to check the model (the validation accuracy), at its best pass. "
                   "The range below it is where the true accuracy lies (95% sure) for this many pictures: "
                   "with few pictures kept aside, one number claims more than they can show.")
    m3.metric("Pictures a second", f"{view.images_per_sec:,.0f}" if view.images_per_sec else "–",
              help="How fast it trains: pictures handled per second.")
    if view.active:
        m4.metric("Time left", format_seconds(view.eta_seconds) if view.eta_seconds is not None else "–")
    else:
        m4.metric("Took", format_seconds(view.elapsed_seconds))
    if not (view.active and view.epoch_logs):
        curves()

    for w in view.warnings:
        kind = w.get("kind", "")
        title = warning_title(kind)
        box = st.info if kind in ("early_stop", "no_feature_cache", "cache_not_saved") else st.warning
        box(f"**{title}.** {markdown_safe(w.get('message', ''))}", icon=WARN_ICON.get(kind, ":material/warning:"))

    if view.info and view.info.get("mode"):
        d = view.info
        st.caption(f"{d.get('train_images')} pictures to learn from, {d.get('val_images')} to check with · "
                   f"{d.get('device', {}).get('name', '')} · "
                   + ("fast path: the kept layers run once per picture" if d.get("mode") == "features"
                      else "full model each step")
                   + f" · weights: {d.get('weights', '')}")


def queue_box(run_dir: str) -> bool:
    """While this run waits in line: its place, when it should start, and Cancel. False when it is not
    waiting (any more)."""
    place = jobs.queue_place(run_dir)
    if place is None:
        return False
    ahead = place.place - 1
    before = ("A Lab experiment is running first. " if place.behind_lab else "") + (
        "Another training runs now; yours is next." if ahead == 0 else
        f"Another training runs now, and {ahead} more wait{'s' if ahead == 1 else ''} before yours.")
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.info(f"**Waiting in line: number {place.place} of {place.waiting}.** {before} "
            f"{queue_start_words(place.start_in_seconds, place.guessed)} You can close this tab: it starts by itself, and this "
            "page shows it when you come back.", icon=":material/hourglass_top:")
    if c2.button("Cancel", key="train_cancel", icon=":material/close:", help="Leave the line; nothing was trained yet."):
        if jobs.cancel_waiting(run_dir):
            view_run(None)
            st.toast("Taken out of the line.", icon=":material/close:")
        st.rerun(scope="app")
    return True


@st.fragment(run_every=1.0)
def live(run_dir: str) -> None:
    """Redrawn every second while the run trains (or waits in line); a full rerun when it ends or starts
    (buttons change)."""
    waiting = queue_box(run_dir)
    if st.session_state.get("train_was_waiting") and not waiting:
        st.session_state["train_was_waiting"] = False
        st.rerun(scope="app")
    st.session_state["train_was_waiting"] = waiting
    try:
        view = live_view(run_dir)
    except TransferLabError as err:
        st.error(str(err))
        return
    if not waiting:
        draw(view)
    if not view.active:
        st.rerun(scope="app")


RUNS_TABLE = "train_runs_table"
# The columns shown (the run folder and epochs stay in the data, for the run picker and the tests),
# with their widths in pixels; the table stretches them on a wide screen.
RUNS_COLUMN_WIDTHS = {"When": 70, "Title": 95, "Data": 110, "Model": 118, "Layers": 85, "Best accuracy": 90,
                      "Took": 50, "State": 68}
RUNS_ROW_HEIGHT = 68


def _same(a: str | None, b: str | None) -> bool:
    return bool(a and b) and Path(a).resolve() == Path(b).resolve()


def _selection(value) -> dict | None:
    """The table's selection as {"rows": [...], "cells": [[row, column], ...]} (None before the first draw)."""
    if value is None:
        return None
    try:
        sel = value["selection"]
        return {"rows": sorted(int(r) for r in sel.get("rows", []) or []),
                "cells": sorted([int(c[0]), str(c[1])] for c in sel.get("cells", []) or [])}
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def _clicked_rows(new: dict, seen: dict) -> list[int]:
    """Rows the user clicked since the last draw: a cell anywhere in a row, or the row's checkbox."""
    cells = [c[0] for c in new["cells"] if c not in seen["cells"]]
    return cells + [r for r in new["rows"] if r not in seen["rows"]]


def all_runs(current: str | None) -> None:
    """The table of every run on disk; redrawn every 2 s while a run trains (its state and epochs move).

    A click on a row (its checkbox or any cell in it) opens that run; the open run's row is shown
    selected. Row numbers are read against the table as it was drawn, so a new run appearing between
    two draws does not shift a click onto the wrong run."""
    runs = list_runs(runs_dir())
    if not runs:
        return
    paths = [r["path"] for r in runs]
    drawn = st.session_state.get("train_runs_drawn") or paths
    seen = st.session_state.get("train_runs_seen")
    now = _selection(st.session_state.get(RUNS_TABLE))
    switched = False
    if now is not None and seen is not None and now != seen:
        for row in _clicked_rows(now, seen):
            if 0 <= row < len(drawn) and not _same(drawn[row], current) and (Path(drawn[row]) / "config.json").is_file():
                view_run(drawn[row])
                current, switched = drawn[row], True
                break
    shown = next((i for i, p in enumerate(paths) if _same(p, current)), None)
    wanted = {"rows": [] if shown is None else [shown], "cells": []}
    if now != wanted:  # show the open run's row selected (and forget a clicked cell)
        st.session_state[RUNS_TABLE] = {"selection": {**wanted, "columns": []}}
    st.session_state["train_runs_seen"] = wanted
    st.session_state["train_runs_drawn"] = paths
    if switched:
        st.rerun()

    st.subheader("All runs")
    st.caption("Every run is kept on disk, with its curves and best weights. Click a row to open that run; "
               "the Results and Try pages follow your choice.")
    rows = [run_row(r) for r in runs]
    titled = any(r.get("title") for r in runs)  # without titles, the Title column would repeat Data
    shown_columns = [c for c in RUNS_COLUMN_WIDTHS if titled or c != "Title"]
    st.dataframe(rows, hide_index=True, on_select="rerun", key=RUNS_TABLE,
                 # a click on a cell is a click on its row: the checkbox alone is too small a target
                 selection_mode=["single-row", "single-cell"], column_order=shown_columns,
                 # narrow columns whose words wrap onto a second line (rows taller than 4rem wrap): the
                 # table fits a 1024-pixel projector beside the sidebar instead of scrolling sideways
                 row_height=RUNS_ROW_HEIGHT,
                 column_config={c: st.column_config.Column(width=RUNS_COLUMN_WIDTHS[c]) for c in shown_columns})


def run_heading(run_dir: str, view, runs: list[dict]) -> None:
    """"This run" while it trains, "Latest run" when it is the newest, otherwise "Run: <label>"."""
    desc = next((r for r in runs if _same(r["path"], run_dir)), None)
    if desc is None:
        try:
            desc = RunFolder.open(run_dir).describe()
        except TransferLabError:
            desc = {"run_id": Path(run_dir).name}
    label = markdown_safe(run_label(desc))
    # a student's browser is on another computer: the server's path means nothing there, its name does
    where = f"`{Path(run_dir).name}` (on the classroom server)" if classroom_mode() else f"`{run_dir}`"
    if (view is not None and view.active) or (runs and _same(runs[0]["path"], run_dir)):
        st.subheader("This run" if view is not None and view.active else "Latest run")
        st.caption(f"{label} · Run folder: {where}")
    else:
        st.subheader(f"Run: {label}")
        st.caption(f"Run folder: {where}")
    if desc.get("note"):
        st.caption("  \n".join(markdown_safe(line) for line in desc["note"].splitlines()))


def manage_runs(run_dir: str | None, runs: list[dict]) -> None:
    """Rename, note and trash the open run (with an undo), and the trash with Restore."""
    undo = st.session_state.get("train_undo")
    if undo and not Path(undo["trash_path"]).is_dir():  # restored or emptied meanwhile
        st.session_state.pop("train_undo", None)
        undo = None
    if undo:
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        c1.info(f"Moved **{markdown_safe(undo['label'])}** to the trash.", icon=":material/delete:")
        if c2.button("Undo", key="train_undo_button", icon=":material/undo:"):
            with guard():
                restored = restore_run(undo["trash_path"])
                st.session_state.pop("train_undo", None)
                view_run(str(restored))
                st.rerun()

    desc = next((r for r in runs if _same(r["path"], run_dir)), None) if run_dir else None
    if desc is not None:
        with st.expander("Manage this run", icon=":material/edit:"):
            rid = desc["run_id"]  # keys per run: another run's fields start from what is saved for it
            untitled = run_label({**desc, "title": None})
            title = st.text_input("Title", value=desc.get("title") or "", key=f"train_title_{rid}",
                                  max_chars=TITLE_MAX_CHARS, placeholder=untitled,
                                  help="A name of your own for this run, shown in the lists. Leave it empty to go "
                                       "back to the automatic name.")
            note = st.text_area("Note", value=desc.get("note") or "", key=f"train_note_{rid}", max_chars=NOTE_MAX_CHARS,
                                height=90, placeholder="What did you try, and what did you learn?")
            if st.button("Save title and note", key="train_save_user", icon=":material/save:"):
                with guard():
                    run = RunFolder.open(run_dir)
                    run.rename(title)
                    run.set_note(note)
                    st.toast("Saved.", icon=":material/check:")
                    st.rerun()

            if st.session_state.get("train_confirm_trash") == run_dir:
                st.warning("Move this run to the trash? It leaves the list; you can bring it back with Undo or "
                           "from the Trash below.", icon=":material/delete:")
                c1, c2, _ = st.columns([1, 1, 2])
                yes = c1.button("Yes, move it to the trash", key="train_trash_yes", type="primary")
                no = c2.button("Cancel", key="train_trash_no")
                if no:
                    st.session_state.pop("train_confirm_trash", None)
                    st.rerun()
                if yes:
                    with guard():
                        trash_path = trash_run(run_dir)
                        st.session_state.pop("train_confirm_trash", None)
                        st.session_state["train_undo"] = {"trash_path": str(trash_path), "label": run_label(desc)}
                        view_run(None)
                        st.rerun()
            else:
                if st.button("Move to trash", key="train_trash", icon=":material/delete:",
                             disabled=bool(desc.get("active"))):
                    st.session_state["train_confirm_trash"] = run_dir
                    st.rerun()
                if desc.get("active"):
                    st.caption("A run cannot go to the trash while it trains; stop it first.")

    trashed = list_trash(runs_dir())
    if trashed:
        with st.expander(f"Trash ({len(trashed)})", icon=":material/delete:"):
            st.caption("Runs you moved to the trash. They stay on disk (in the runs folder's `.trash`) until "
                       "you delete them there; Restore puts one back in the list.")
            for t in trashed:
                c1, c2 = st.columns([5, 1], vertical_alignment="center")
                c1.markdown(f"{markdown_safe(run_label(t))} · trashed {format_when(t.get('trashed_at'))}")
                if c2.button("Restore", key=f"train_restore_{Path(t['trash_path']).name}",
                             icon=":material/restore_from_trash:"):
                    with guard():
                        restored = restore_run(t["trash_path"])
                        if (undo or {}).get("trash_path") == t["trash_path"]:
                            st.session_state.pop("train_undo", None)
                        view_run(str(restored))
                        st.rerun()



def compare_section(runs: list[dict]) -> None:
    """Pick two or more runs: overlaid curves, what was set differently, how each category changed,
    and one sentence on which is better and whether the difference is real."""
    done = [r for r in runs if r.get("has_weights") and not r.get("active")]
    if len(done) < 2:
        return
    st.subheader("Compare runs")
    labels = {r["path"]: run_label(r) for r in done}
    picked = st.multiselect("Runs to compare", list(labels), default=[r["path"] for r in done[:2]],
                            format_func=lambda path: labels[path], key="train_compare",
                            help="The newest two are picked first; add or remove runs.")
    if len(picked) < 2:
        st.caption("Pick at least two runs.")
        return
    from tl_core.app.compare import compare_runs

    with guard():
        comp = compare_runs(picked)
        if comp.verdict is not None:
            (st.success if comp.verdict.real else st.info)(comp.verdict.sentence, icon=":material/balance:")
        # "Run 1", "Run 2" (in the order picked) name the runs in the narrow tables below, so they fit a
        # projector; the score table says which run each is, its words wrapping onto a second line
        short = {label: f"Run {i}" for i, label in enumerate(comp.labels.values(), start=1)}
        st.dataframe([{"Run": f"{short[s.label]}: {s.label}",
                       "Best accuracy": f"{s.accuracy:.1%}" if s.accuracy is not None else "–",
                       "95% range": f"{s.interval[0]:.0%}-{s.interval[1]:.0%}" if s.interval else "–",
                       "Checked on": s.total or "–"} for s in comp.scores], hide_index=True,
                     row_height=RUNS_ROW_HEIGHT,
                     column_config={"Run": st.column_config.Column(width=300),
                                    "Best accuracy": st.column_config.Column(width=100),
                                    "95% range": st.column_config.Column(width=90),
                                    "Checked on": st.column_config.Column(width=90)})
        st.caption("The range is where the true accuracy probably lies (95%): with few pictures to check with, "
                   "it is wide, and runs whose ranges overlap a lot may not really differ.")
        fig = figure("compare_curves_figure", comp.curves)
        st.plotly_chart(fig, key="train_compare_curves")
        if comp.settings:
            st.markdown("**What was set differently**")
            st.dataframe([{short.get(k, k): v for k, v in row.items()} for row in comp.settings], hide_index=True)
        else:
            st.caption("These runs used the same settings (only chance differs, e.g. the random start of the "
                       "new classifier).")
        if comp.per_class:
            st.markdown("**Each category** (checking accuracy of the best epoch)")
            st.dataframe([{short.get(k, k): (f"{v:.0%}" if isinstance(v, float) else v) for k, v in row.items()}
                          for row in comp.per_class], hide_index=True)

with guard():
    run_dir = current_run_dir()
    active_job = jobs.own_job()   # this user's job, training or waiting in line (another student's is not theirs)
    view = live_view(run_dir) if run_dir else None
    root = need_data() if not (view and view.active) else state.data_root

    if root is not None or (view and view.active):
        st.subheader("Settings")
        model_cfg, freeze_cfg = state.model_config(), state.freeze_config()
        from tl_core.app.previews import split_words  # the split actually used: the folder's own val/ or N%

        st.caption(f"Model **{model_title(model_cfg.name)}** · layers: "
                   f"**{preset_short(freeze_cfg.preset, freeze_cfg.frozen_groups is not None)}** · "
                   f"{split_words(root or state.data_root, state.val_fraction)}",
                   help=f"Technical names: model `{model_cfg.name}`, layer preset `{freeze_cfg.preset}`.")
        train_cfg = settings()
        if train_cfg is not None and root is not None and not (view and view.active):
            expected_time(RunConfig(data=state.data_config(), model=model_cfg, freeze=freeze_cfg, train=train_cfg))

        c1, c2, _ = st.columns([3, 2, 3])
        with c1:
            start = st.button("Start training", type="primary", key="train_start", icon=":material/play_arrow:",
                              disabled=active_job is not None or train_cfg is None or root is None)
        with c2:
            stop = st.button("Stop", key="train_stop", icon=":material/stop:", disabled=not (view and view.active))
        if active_job is not None and not start:
            st.caption("Your model is waiting in line. You can look at the other pages meanwhile; it starts by "
                       "itself." if active_job.waiting else
                       "A model is training. You can look at the other pages meanwhile; it keeps going.")

        if start and train_cfg is not None:
            with guard():
                config = RunConfig(data=state.data_config(), model=model_cfg, freeze=freeze_cfg, train=train_cfg)
                job = jobs.start_training(config, runs_dir())
                view_run(job.run_dir)
                st.rerun()
        if stop and view is not None:
            if jobs.is_waiting(view.run_dir) and jobs.cancel_waiting(view.run_dir):
                view_run(None)
                st.rerun()
            if jobs.stop_training(view.run_dir):
                st.toast("Stopping after the current step…", icon=":material/stop:")
            else:
                st.warning("This run is not training in this app (it may belong to another program), so it "
                           "cannot be stopped from here.", icon=":material/warning:")

    runs_now = list_runs(runs_dir())
    if run_dir:
        run_heading(run_dir, view, runs_now)
        if view is not None and view.active:
            live(run_dir)
        elif view is not None:
            draw(view)
            if view.state == "finished":  # the Results and Try pages answer at once when it is looked at
                from tl_core.app import aftercare

                aftercare.prepare_in_background(run_dir, busy=lambda: jobs.active_job() is not None)

    if active_job is not None:
        st.fragment(run_every=2)(all_runs)(run_dir)
    else:
        all_runs(run_dir)
    manage_runs(run_dir, runs_now)
    compare_section(runs_now)
