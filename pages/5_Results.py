"""Results: how good the model is on pictures it never trained on, and where it goes wrong."""
from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from pages._shared import (PAGES, require_app, figure, guard, header, next_step, run_picker, view_run, where_it_looked)
import tl_core
from tl_core.app.formatting import SCORE_WORDS, format_accuracy, markdown_safe
from tl_core.app.previews import display_picture, run_split
from tl_core.data import fixes
from tl_core.errors import TransferLabError
from tl_core.results import evaluate
from tl_core.results.mistakes import load_label_issues
from tl_core.runs import RunFolder

require_app(__file__)

header("Results", "How well does the model do on the pictures it **never trained on** (the ones kept aside "
       "to check it, see the Data page)? Where it goes wrong tells you what to fix: more pictures of a category, "
       "mislabelled pictures, or categories that really look alike.")


def evaluation(run_dir: str, evaluate):
    """The saved evaluation when it is newer than the weights, else a fresh one (with a bar)."""
    run = RunFolder.open(run_dir)
    saved_path = Path(run_dir) / "eval_val.json"
    if saved_path.is_file() and run.has_weights() and saved_path.stat().st_mtime >= run.weights_path.stat().st_mtime:
        saved = evaluate.load_evaluation(run_dir)
        if saved is not None:
            return saved
    from tl_core.app import aftercare

    preparing = aftercare.running(run_dir)
    if preparing is not None:  # started when the run finished: wait for it rather than do it twice
        with st.spinner("Checking the model on the pictures kept aside…"):
            preparing.join(300)
        saved = evaluate.load_evaluation(run_dir) if aftercare.evaluation_is_ready(run_dir) else None
        if saved is not None:
            return saved
    bar = st.progress(0.0, text="Checking the model on the pictures kept aside…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"Checking the model: {done} of {total} pictures")

    report = tl_core.evaluate(run_dir, progress=progress)
    bar.empty()
    return report


def confusion_with_cells(report, normalized: bool):
    """The confusion-matrix figure plus an invisible marker on each cell, so a click selects it."""
    fig = figure("confusion_matrix_figure", report.confusion, report.classes, normalized)
    if fig is None:
        return None, []
    import plotly.graph_objects as go

    cells = [(t, p) for t in report.classes for p in report.classes]
    fig.add_trace(go.Scatter(
        x=[p for _, p in cells], y=[t for t, _ in cells], mode="markers", showlegend=False,
        marker=dict(size=28, symbol="square", opacity=0.0, color="#000"),
        selected=dict(marker=dict(opacity=0.25)), unselected=dict(marker=dict(opacity=0.0)),
        customdata=[[t, p] for t, p in cells],
        hovertemplate="true category %{customdata[0]} → the model said %{customdata[1]}"
                      "<extra>click to see these pictures</extra>"))
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig, cells


# -- fixing pictures: one click each, with undo ------------------------------------------------------

LIST_STEP = 12   # likely mistakes shown at a time

def _key(path: str) -> str:
    """A short, stable widget key for a picture (the same in every grid it appears in)."""
    return hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _apply(action: str, root: str, path: str, category: str | None = None) -> None:
    """Button callback: move / set aside / undo, before the page is drawn again with the result."""
    try:
        if action == "move":
            fix = fixes.move_picture(root, path, category)
        elif action == "aside":
            fix = fixes.set_aside(root, path)
        else:
            fix = fixes.undo(root, category)
            st.session_state["results_fix_note"] = ("success", f"Undone: {fix.describe()}.")
            return
        st.session_state["results_fix_note"] = ("success", f"{fix.describe()}. (Undo: under the picture, or below.)")
    except TransferLabError as err:
        st.session_state["results_fix_note"] = ("error", str(err))


def _fix_note() -> None:
    """What the last click did (or why it was refused), once: a toast where the user is looking, and
    the same words under Fix and retrain."""
    note = st.session_state.pop("results_fix_note", None)
    if note:
        kind, text = note
        st.toast(markdown_safe(text), icon=":material/check:" if kind == "success" else ":material/warning:")
        (st.success if kind == "success" else st.error)(markdown_safe(text), icon=":material/edit:")


def fixable_grid(items: list[dict], caption, area: str, ctx: dict, columns: int = 4, limit: int = 12) -> None:
    """Pictures (dicts with ``path``, ``label``, optional ``suggested``) with, under each, the one-click
    fixes: move to the suggested category (or the only other one), set aside, other categories in
    a menu; a picture already fixed shows what was done and its Undo instead."""
    shown = items[:limit]
    for start in range(0, len(shown), columns):
        for col, it in zip(st.columns(columns), shown[start:start + columns]):
            with col:
                _fixable_picture(it, caption, area, ctx)
    if len(items) > limit:
        st.caption(f"…and {len(items) - limit} more.")


def _fixable_picture(it: dict, caption, area: str, ctx: dict) -> None:
    from tl_core.data.images import load_image

    path, k = it["path"], _key(it["path"])
    done = ctx["fixed"].get(str(Path(path).resolve()))
    if done is not None and not Path(path).exists():   # (moved back by a later fix: it is here again)
        what = f"moved to {done.to_category}" if done.to_category else "set aside"
        try:
            st.image(display_picture(load_image(done.target_path(ctx["root"])), 200),
                     caption=markdown_safe(f"{Path(path).name}: {what}"), width="stretch")
        except Exception:  # noqa: BLE001 - moved on by hand since: the words are enough
            st.caption(markdown_safe(f"{Path(path).name}: {what}"))
        st.button("Undo", key=f"undo_{area}_{k}", icon=":material/undo:", on_click=_apply,
                  args=("undo", ctx["root"], path, done.id), width="stretch")
        return
    try:
        st.image(display_picture(load_image(path), 200), caption=caption(it), width="stretch")
    except Exception as err:  # noqa: BLE001 - one unreadable file must not hide the others
        st.caption(f"(cannot show {Path(path).name}: {err})")
        return
    if ctx["refused"]:
        return
    others = [c for c in ctx["classes"] if c != it["label"]]
    first = it.get("suggested") if it.get("suggested") in others else (others[0] if len(others) == 1 else None)
    if first:
        st.button(f"Move to {first}", key=f"fix_{area}_move_{k}", icon=":material/drive_file_move:",
                  on_click=_apply, args=("move", ctx["root"], path, first), width="stretch",
                  help=f"Move this picture into the '{first}' folder (undo is one click).")
    rest = [c for c in others if c != first]
    if rest:
        with st.popover("Move to…", width="stretch"):
            for c in rest:
                st.button(c, key=f"fix_{area}_to_{_key(c)}_{k}", on_click=_apply, args=("move", ctx["root"], path, c))
    st.button("Set aside", key=f"fix_{area}_aside_{k}", icon=":material/move_item:", on_click=_apply,
              args=("aside", ctx["root"], path), width="stretch",
              help="Take it out of the pictures (into a folder beside them, never deleted; undo is one click).")


def fix_context(run_dir: str, classes: list[str]) -> dict:
    """What every fix button needs: the data folder, whether it may be changed, the fixes so far."""
    root = RunFolder.open(run_dir).config().data.root
    refused = fixes.can_fix(root)
    try:
        made = [] if refused else fixes.list_fixes(root)
    except TransferLabError:
        made = []
    fixed = {str((Path(root) / f.source).resolve()): f for f in made}
    return {"root": root, "refused": refused, "classes": classes, "fixed": fixed}


def likely_mistakes(run_dir: str, run: RunFolder, ctx: dict) -> None:
    """The pictures whose folder the model confidently disagrees with (prepared after training)."""
    from tl_core.app import aftercare
    from tl_core.app.jobs import active_job

    st.subheader("Likely label mistakes")
    st.caption("Pictures whose folder the model disagrees with, surest first. Each picture was judged by a model "
               "that had **not** seen it (the pictures are cut into 5 parts; each part is judged by a model that "
               "learned from the other 4), so a wrong folder cannot hide behind having been learned. Look at each "
               "one: move it if its folder is wrong, set it aside if it belongs to no category.")
    found = load_label_issues(run_dir) if aftercare.mistakes_are_ready(run_dir) else None
    if found is None:
        failed = aftercare.mistakes_failed(run_dir)
        training = active_job() is not None
        if aftercare.running(run_dir) is not None or (run.state == "finished" and failed is None and not training
                                                     and aftercare.prepare_in_background(
                                                         run_dir, busy=lambda: active_job() is not None)):
            st.info("Looking for likely label mistakes in the background…", icon=":material/hourglass_top:")

            def poll() -> None:
                if aftercare.running(run_dir) is None:
                    st.rerun(scope="app")
            st.fragment(run_every=2.0)(poll)()
            return
        if training and failed is None:
            st.info("They are looked for once the model training now has finished (it would slow it down).",
                    icon=":material/hourglass_top:")
            return
        if failed:
            st.warning(markdown_safe(failed), icon=":material/warning:")
        if st.button("Look for likely label mistakes", key="results_find_mistakes", icon=":material/search:"):
            with guard(), st.spinner("Judging every picture with a model that did not see it…"):
                from tl_core.results.mistakes import find_label_issues

                found = find_label_issues(run_dir)
        if found is None:
            return
    if not found.issues:
        st.success(f"None found: the model agrees with the folder of all {found.checked:,} pictures.",
                   icon=":material/celebration:")
        return
    st.caption(f"{len(found.issues)} of {found.checked:,} pictures look mislabelled.")
    items = [{"path": i.path, "label": i.label, "suggested": i.suggested, "confidence": i.confidence}
             for i in found.issues]
    limit = st.session_state.get("results_lm_limit", LIST_STEP)
    fixable_grid(items, lambda it: markdown_safe(f"in {it['label']}, looks like {it['suggested']} "
                                                 f"({it['confidence']:.0%} sure)"), "lm", ctx, limit=limit)
    if len(items) > limit:
        st.button(f"Show {min(LIST_STEP, len(items) - limit)} more", key="results_lm_more",
                  icon=":material/expand_more:",
                  on_click=lambda: st.session_state.update(results_lm_limit=limit + LIST_STEP))


def fix_and_retrain(run_dir: str, ctx: dict) -> None:
    """The fixes made since this run, Undo, and Retrain with the same settings."""
    from tl_core.app import aftercare
    from tl_core.app.jobs import own_job

    st.subheader("Fix and retrain")
    _fix_note()
    if ctx["refused"]:
        st.info(markdown_safe(ctx["refused"]), icon=":material/lock:")
        return
    made = aftercare.fixes_since(run_dir)
    root = Path(ctx["root"])
    aside, log = (markdown_safe(p.name) for p in (fixes.set_aside_dir(root), fixes.fixes_log_path(root)))
    st.caption(f"Moved pictures stay in the data folder; set-aside ones wait in **{aside}** beside it; every step is "
               f"listed in **{log}** (also beside it). Nothing is deleted.")
    if not made:
        st.caption("No fixes yet: use the buttons under the pictures above.")
    else:
        for f in made[-8:][::-1]:
            st.markdown(f"- {markdown_safe(f.describe())}")
        if len(made) > 8:
            st.caption(f"…and {len(made) - 8} earlier.")
        st.button("Undo the last fix", key="results_undo_last", icon=":material/undo:", on_click=_apply,
                  args=("undo", ctx["root"], "", made[-1].id))
    started = st.session_state.get("results_retrained")
    if started and run_dir in (started.get("from"), started.get("run")):
        st.success(markdown_safe(started["words"]), icon=":material/fitness_center:")
        st.page_link(PAGES["train"], label="Watch it train", icon=":material/monitoring:")
    busy = own_job() is not None   # the user's own training (another student's only makes it wait in line)
    if st.button("Retrain with the fixes", key="results_retrain", type="primary", icon=":material/replay:",
                 disabled=not made or busy,
                 help="A new run with exactly this run's settings, on the pictures as they are now."):
        with guard(), st.spinner("Getting the pictures ready…"):
            started = aftercare.retrain_with_fixes(run_dir)
            n = started.fixes
            words = (f"Started a new run with the same settings on the fixed pictures "
                     f"({n} fix{'es' if n != 1 else ''}). {started.warmed.words()}")
            st.session_state["results_retrained"] = {"from": run_dir, "run": started.job.run_dir, "words": words}
            view_run(started.job.run_dir)
            st.rerun()
    elif busy:
        st.caption("Your model is training or waiting in line now: retrain when it has finished.")


with guard():
    run_dir = run_picker("results_run", "Run", only_with_weights=True)
    if run_dir is None:
        st.info("No trained model yet. Train one on the **Train** page first.", icon=":material/fitness_center:")
        st.page_link("pages/4_Train.py", label="Go to Train", icon=":material/fitness_center:")
        st.stop()
    if evaluate is None:
        st.stop()
    run = RunFolder.open(run_dir)
    if run.state in ("queued", "running"):
        st.info("This run is still training: these results use its best weights so far.", icon=":material/hourglass_top:")

    report = evaluation(run_dir, evaluate)
    # The selections below belong to one run: another run starts with its own first categories
    # and pictures (not "0 pictures of trouser" left over from the run looked at before).
    if st.session_state.get("results_for_run") != run_dir:
        for key in ("results_true", "results_pred", "results_last_pick", "results_cam_pick", "results_fix_note",
                    "results_lm_limit"):
            st.session_state.pop(key, None)
        st.session_state["results_for_run"] = run_dir

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Accuracy", f"{report.accuracy:.1%}",
              help="Share of the pictures kept aside (never trained on) that it got right. In brackets below: the "
                   "range where the true accuracy lies (95% sure), which is wide when few pictures were checked.")
    c2.metric("Balanced accuracy", f"{report.balanced_accuracy:.1%}",
              help="The average over categories of how many it found: fair even when categories differ in size.")
    c3.metric("Overall score", f"{report.macro_f1:.2f}",
              help="F1 score (macro average): combines precision and recall over all categories; 1.0 is perfect.")
    split = run_split(run_dir)
    c4.metric("Pictures checked", report.n, help="Pictures the model never trained on (where from: just below).")
    st.caption(f"Accuracy **{format_accuracy(report.accuracy, report.n)}**: the range in brackets is where the "
               f"true accuracy on pictures like these lies (95% sure); {report.n:,} pictures cannot pin it down more "
               "exactly.")
    if split is not None:
        st.caption(f"Checked on {report.n:,} pictures ({split.source(detailed=True)}); the model learned from "
                   f"{split.n_train:,} others.")
    if report.skipped:
        st.warning(f"{len(report.skipped)} pictures could not be read and were left out.", icon=":material/image:")

    st.subheader("Per category")
    right_words, found_words, score_words = (SCORE_WORDS[k][0] for k in ("precision", "recall", "f1"))
    st.caption(f"**{right_words}**: when it says *this category*, how often it is right. **{found_words}**: of "
               f"the pictures of this category, how many it found. **{score_words}**: the two together (1 is "
               "perfect).")
    # one under the other: side by side, the table's columns were cut off on a 1024-pixel screen
    st.dataframe([{"Category": c, right_words: round(v["precision"], 2), found_words: round(v["recall"], 2),
                   score_words: round(v["f1"], 2), "Pictures": v["support"]} for c, v in report.per_class.items()],
                 hide_index=True, width="content",
                 column_config={words: st.column_config.NumberColumn(words, help=SCORE_WORDS[k][1], format="%.2f")
                                for k, words in (("precision", right_words), ("recall", found_words),
                                                 ("f1", score_words))})
    fig = figure("per_class_bars", report.per_class)
    if fig is not None:
        st.plotly_chart(fig, key="results_per_class")

    st.subheader("Confusion matrix")
    st.caption("Rows: the true category. Columns: what the model said. The diagonal is right; everything else is a "
               "mix-up. **Click a cell** to see its pictures.")
    normalized = st.toggle("Show shares instead of counts", value=False, key="results_normalized")
    cm_fig, cells = confusion_with_cells(report, normalized)
    picked = None
    if cm_fig is not None:
        event = st.plotly_chart(cm_fig, key=f"results_cm_{Path(run_dir).name}_{int(normalized)}", on_select="rerun",
                                selection_mode="points")
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        for pt in points:
            cd = pt.get("customdata")
            if isinstance(cd, (list, tuple)) and len(cd) == 2:
                picked = (str(cd[0]), str(cd[1]))
            elif pt.get("curve_number") == len(cm_fig.data) - 1 and pt.get("point_index") is not None:
                picked = cells[int(pt["point_index"])]
            elif pt.get("x") in report.classes and pt.get("y") in report.classes:
                picked = (str(pt["y"]), str(pt["x"]))
    if picked is not None and picked != st.session_state.get("results_last_pick"):
        st.session_state["results_last_pick"] = picked
        st.session_state["results_true"], st.session_state["results_pred"] = picked
    classes = list(report.classes)
    if st.session_state.get("results_true") not in classes or st.session_state.get("results_pred") not in classes:
        # start on the biggest mix-up (or the first category when there is none)
        off = [(report.confusion[i][j], i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j]
        n, i, j = max(off) if off else (0, 0, 0)
        if n == 0:
            i = j = 0
        st.session_state["results_true"], st.session_state["results_pred"] = classes[i], classes[j]
    a, b = st.columns(2)
    true_label = a.selectbox("True category", classes, key="results_true")
    pred_label = b.selectbox("Model said", classes, key="results_pred")
    cell_items = report.cell(true_label, pred_label)
    verdict = "right" if true_label == pred_label else "wrong"
    st.markdown(f"**{len(cell_items)} pictures** of *{markdown_safe(true_label)}* that the model called "
                f"*{markdown_safe(pred_label)}* ({verdict})")
    ctx = fix_context(run_dir, classes)
    fixable_grid([{**it, "label": it["true"], "suggested": it["pred"]} for it in cell_items],
                 lambda it: f"{it['confidence']:.0%} sure", "cell", ctx, columns=4, limit=12)

    st.subheader("The mistakes it was surest about")
    st.caption("Look here first: these are often mislabelled pictures, or pictures where the model learned a "
               "shortcut (a background, a watermark) instead of the object.")
    wrong = report.most_confident_wrong(12)
    if not wrong:
        st.success("No mistakes on the pictures kept aside.", icon=":material/celebration:")
    else:
        fixable_grid([{**it, "label": it["true"], "suggested": it["pred"]} for it in wrong],
                     lambda it: markdown_safe(f"is {it['true']}, said {it['pred']} ({it['confidence']:.0%})"),
                     "wrong", ctx, columns=4, limit=12)

    likely_mistakes(run_dir, run, ctx)
    fix_and_retrain(run_dir, ctx)

    st.subheader("What it looked at",
                 help="Grad-CAM: a heat map of the parts of the picture that pushed the model's answer up.")
    st.caption("The colours show the parts of the picture that pushed the model towards its answer (red = most). "
               "On a picture that is not square, greyed edges are parts the model did not see: it looks at the "
               "square in the middle.")
    if report.items:
        options = [p for p in [it["path"] for it in (wrong or [])] + [it["path"] for it in report.items
                                                                        if it["true"] == it["pred"]][:30]
                   if Path(p).is_file()]   # a picture moved or set aside above is no longer there
        by_path = {it["path"]: it for it in report.items}
        chosen = st.selectbox("Picture", options, key="results_cam_pick",
                              format_func=lambda p: f"{Path(p).name} — is {by_path[p]['true']}, "
                                                    f"said {by_path[p]['pred']}")
        if chosen:
            with guard():
                with st.spinner("Working out where it looked…"):
                    image, over = where_it_looked(run_dir, chosen)
                x, y, _ = st.columns([1, 1, 2])
                x.image(display_picture(image, 320), caption="The picture", width="stretch")
                said = markdown_safe(by_path[chosen]["pred"])
                y.image(display_picture(over, 320), caption=f"Where it looked (said {said})", width="stretch")

    next_step("try", "Next: try it on new photos and take it home")
