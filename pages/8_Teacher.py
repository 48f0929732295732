"""Teacher (classroom server only): every student's runs and accuracy, the training line, one run on
the projector (read-only), and cleaning up old workspaces with an undo. Asks for the teacher code."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages._shared import (figure, guard, header, keep_teacher_proof, presentation_mode, queue_start_words, require_app,
                           session_token, teacher_here)
from tl_core.app import classroom
from tl_core.app.formatting import format_accuracy, format_seconds, format_when, markdown_safe, run_label, run_row
from tl_core.app.workspace import classroom_mode

require_app(__file__)

TEACHER_COLUMNS = {"Student": 130, "Joined": 80, "Runs": 50, "Best accuracy": 110, "Now": 120}


def ask_teacher_code() -> None:
    header("Teacher", "This page is for the teacher: type the **teacher code** printed where the classroom "
           "server was started.")
    if classroom.was_teacher(session_token()):
        st.caption("It is asked again after the page is reloaded or opened in a new tab: this page's address "
                   "shows on the projector, and the address alone must not open the teacher view.")
    with st.form("teacher_gate"):
        code = st.text_input("Teacher code", type="password", key="teacher_code", max_chars=30)
        entered = st.form_submit_button("Open the teacher view", type="primary", icon=":material/school:",
                                        key="teacher_enter")
    if entered:
        with guard():
            keep_teacher_proof(classroom.become_teacher(session_token(), code))
            st.rerun()


def now_words(student: classroom.Student, line: dict[str, str]) -> str:
    for run in student.runs:
        if run["path"] in line:
            return line[run["path"]]
    return ""


def training_line() -> dict[str, str]:
    """{run folder: "training" / "waiting (2nd)"} for the runs in the line, and the line drawn."""
    from tl_core.app import jobs

    out = {}
    active = jobs.active_job()
    waiting = jobs.waiting_jobs()
    if active is None and not waiting:
        st.caption("No training runs or waits right now.")
        return out
    names = {s.token: s.label for s in classroom.students(with_runs=False)}
    lines = []
    if active is not None:
        out[active.run_dir] = "training"
        lines.append(f"1. **Training now:** {markdown_safe(names.get(active.owner or '', 'the teacher'))}")
    for job in waiting:
        place = jobs.queue_place(job.run_dir)
        if place is None:
            continue
        out[job.run_dir] = f"waiting ({place.place})"
        lines.append(f"{len(lines) + 1}. {markdown_safe(names.get(job.owner or '', 'the teacher'))}: "
                     f"{queue_start_words(place.start_in_seconds, place.guessed).lower()}")
    st.markdown("\n".join(lines))
    return out


def show_run(student: classroom.Student, run_dir: str) -> None:
    """One run, read-only, big enough for the projector: its numbers, curves and (when it was
    checked) its confusion matrix."""
    from tl_core.app.live import live_view
    from tl_core.results import evaluate

    desc = next((r for r in student.runs if r["path"] == run_dir), None)
    if desc is None:
        st.info("That run is gone (moved to the trash by its student).")
        return
    st.subheader(f"{markdown_safe(student.label)}: {markdown_safe(run_label(desc))}")
    view = live_view(run_dir)
    last = view.epoch_logs[-1] if view.epoch_logs else {}
    best = last.get("best_val_accuracy", desc.get("best_val_accuracy"))
    m1, m2, m3 = st.columns(3)
    m1.metric("Best accuracy", format_accuracy(best, desc.get("val_images")) or "–",
              help="On the pictures the student kept aside to check the model, with its 95% range.")
    m2.metric("Epochs done", f"{view.epoch} / {view.epochs}" if view.epochs else "–")
    m3.metric("Time left" if view.active else "Took",
              format_seconds(view.eta_seconds if view.active else view.elapsed_seconds) or "–")
    fig = figure("training_curves", view.epoch_logs, view.batch_events)
    if fig is not None:
        if presentation_mode():  # bigger type: the legend goes under the charts, clear of their titles
            fig = figure("legend_below", fig)
        st.plotly_chart(fig, key="teacher_curves")
    report = evaluate.load_evaluation(run_dir)
    if report is not None:
        cm = figure("confusion_matrix_figure", report.confusion, report.classes, True)
        if cm is not None:
            st.markdown("**Where it is right and wrong** (rows: the true category; columns: the model's answer)")
            st.plotly_chart(cm, key="teacher_confusion")


def cleanup() -> None:
    """Old workspaces to the trash, only on the teacher's click; Restore brings one back."""
    st.subheader("Clean up old workspaces")
    days = st.number_input("Not used for at least (days)", 0.0, 365.0, value=float(classroom.cleanup_days()),
                           step=1.0, key="teacher_cleanup_days",
                           help="The default comes from TL_CLASSROOM_CLEANUP_DAYS (7 days when not set).")
    old = classroom.old_workspaces(days, keep=session_token())
    if not old:
        st.caption("No workspace is that old. Nothing is ever cleaned up without this button.")
    else:
        st.caption(f"{len(old)} workspace{'s' if len(old) != 1 else ''} not used for {days:g} days or more: "
                   + ", ".join(markdown_safe(s.label) for s in old[:20]) + ("…" if len(old) > 20 else "")
                   + ". They move to the classroom's trash (restorable below); those students start again with "
                     "the class code.")
        if st.button(f"Move {len(old)} to the trash", key="teacher_cleanup", icon=":material/delete:"):
            with guard():
                moved = classroom.trash_workspaces([s.token for s in old])
                st.toast(f"Moved {len(moved)} workspace(s) to the trash.", icon=":material/delete:")
                st.rerun()
    trashed = classroom.list_trashed_workspaces()
    if trashed:
        with st.expander(f"Trash ({len(trashed)})", icon=":material/delete:"):
            st.caption(f"Workspaces moved here stay on disk in `{classroom.trash_root()}` until you delete them "
                       "there; Restore puts one back.")
            for t in trashed[:50]:
                c1, c2 = st.columns([5, 1], vertical_alignment="center")
                c1.markdown(f"{markdown_safe(t['name'] or 'Student ' + t['token'][:4])} · trashed "
                            f"{format_when(t['trashed_at'])}")
                if c2.button("Restore", key=f"teacher_restore_{Path(t['path']).name}",
                             icon=":material/restore_from_trash:"):
                    with guard():
                        classroom.restore_workspace(t["path"])
                        st.rerun()


def projector() -> bool:
    """In presentation mode with a run picked: that run alone, big (no list of students on the wall).
    False when there is nothing to show that way."""
    token, run_dir = st.session_state.get("teacher_show") or (None, None)
    if not (presentation_mode() and token and run_dir):
        return False
    student = next((s for s in classroom.students() if s.token == token), None)
    if student is None:
        return False
    if st.button("Back to the teacher view", key="teacher_back", icon=":material/arrow_back:",
                 help="Switches presentation mode off."):
        st.session_state["tl_presentation_on"] = False
        st.rerun()
    with guard():
        live_run(student, run_dir)
    return True


def live_run(student: classroom.Student, run_dir: str) -> None:
    """:func:`show_run`, redrawn every 2 seconds while the run trains (the class watches it learn)."""
    if any(r["path"] == run_dir and r.get("active") for r in student.runs):
        st.fragment(run_every=2.0)(show_run)(student, run_dir)
    else:
        show_run(student, run_dir)


def teacher_view() -> None:
    if projector():
        return
    header("Teacher", "Every student's runs and how well they did. Pick one to show on the projector.")
    with guard():
        st.subheader("Training line")
        line = training_line()
        people = [s for s in classroom.students() if not s.teacher or s.runs]
        st.subheader(f"Students ({len(people)})")
        if not people:
            st.info("No student has entered the class code yet.", icon=":material/group:")
        else:
            st.dataframe([{"Student": s.label, "Joined": format_when(s.admitted_at), "Runs": len(s.runs),
                           "Best accuracy": format_accuracy(s.best_accuracy) or "–", "Now": now_words(s, line)}
                          for s in people], hide_index=True, key="teacher_students",
                         column_config={c: st.column_config.Column(width=w) for c, w in TEACHER_COLUMNS.items()})
            with_runs = [s for s in people if s.runs]
            if with_runs:
                st.subheader("Show a run")
                by_token = {s.token: s for s in with_runs}
                if st.session_state.get("teacher_student") not in by_token:
                    st.session_state.pop("teacher_student", None)
                token = st.selectbox("Student", list(by_token), format_func=lambda t: by_token[t].label,
                                     key="teacher_student")
                student = by_token[token]
                rows = {r["path"]: r for r in student.runs}
                if st.session_state.get("teacher_run") not in rows:
                    st.session_state.pop("teacher_run", None)
                run_dir = st.selectbox("Run", list(rows), format_func=lambda p: run_label(rows[p], details=True),
                                       key="teacher_run")
                with st.expander(f"All runs of {student.label}"):
                    st.dataframe([run_row(r) for r in student.runs], hide_index=True,
                                 column_order=["When", "Data", "Model", "Best accuracy", "State"])
                if st.button("Show it on the projector", key="teacher_project", type="primary",
                             icon=":material/co_present:",
                             help="Switches on presentation mode (bigger type, no sidebar) and shows this run."):
                    st.session_state["tl_presentation_on"] = True
                    st.session_state["teacher_show"] = (token, run_dir)   # kept: the pickers are not drawn then
                    st.rerun()
                live_run(student, run_dir)
        cleanup()


if not classroom_mode():
    header("Teacher", "The teacher view belongs to a classroom server: start one with `make classroom`.")
elif not teacher_here():
    ask_teacher_code()
else:
    teacher_view()
