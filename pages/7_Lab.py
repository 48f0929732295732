"""Lab: four one-click experiments that show what transfer learning does, on the user's own pictures.

Thin like every page: the widgets become one of tl_core.lab's experiment dataclasses, Start hands it to
the background experiment job (tl_core.app.lab_jobs: checked at once, then run in a thread owned by the
server), and everything drawn comes from the experiment folders on disk, so a refresh or a restarted
server redraws the same results. While an experiment runs, the bar, the time left and the runs finished
so far are redrawn every second.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages._shared import figure, guard, header, jobs, need_data, presentation_mode, require_app, ui
from tl_core.app import lab_jobs
from tl_core.app.formatting import format_seconds, format_when, markdown_safe, model_title
from tl_core.errors import TransferLabError
from tl_core.lab import KINDS, TITLES, ExperimentFolder, experiment_class, list_experiments, make_experiment

require_app(__file__)

header("Lab", "Four experiments that show what transfer learning does, **on your own pictures**. Each one trains "
       "a few models that differ in one thing only, checks them all on the same pictures kept aside, and says in "
       "plain words what the numbers mean, and how sure they are.")

state = ui()
presenting = presentation_mode()

WHAT = {
    "scratch": "The same model, pictures and number of passes, trained twice: once starting from what it learned on "
               "ImageNet (only its new classifier learns), once from random weights (every layer learns). Shows how "
               "much a pretrained start is worth.",
    "data-size": "Trains on 10%, 25%, 50% and all of your pictures of each category, a few times with different "
                 "picks, and checks every run on the same pictures. Shows whether more pictures would help, per "
                 "category. The pictures are run through the kept layers once for all the runs, so it is quick.",
    "layers": "One run per layer setting: only the new classifier, also the last layer groups, or everything. Shows "
              "accuracy, time, and the gap between the pictures it learned from and new ones (overfitting).",
    "models": "One run per model (only the new classifier learns). Shows accuracy, time and size side by side: the "
              "lighter model is the better choice when the accuracies cannot be told apart.",
}
PRESET_CHOICES = ["head", "last:1", "last:2", "last:3", "none"]
PRESET_WORDS = {"head": "only the new classifier", "last:1": "also the last layer group",
                "last:2": "also the last 2 groups", "last:3": "also the last 3 groups", "none": "every layer"}
FRACTION_CHOICES = [0.05, 0.1, 0.25, 0.5, 0.75, 1.0]


def _default(kind: str, name: str):
    return experiment_class(kind).__dataclass_fields__[name].default


def settings(kind: str, root: str):
    """The widgets of one experiment -> its dataclass (None when a setting is not usable)."""
    from tl_core.models.catalogue import RECOMMENDED_MODEL, model_names

    names = model_names()
    values: dict = {}
    a, b, c = st.columns(3)
    if kind != "models":
        current = state.model_name if state.model_name in names else RECOMMENDED_MODEL
        values["model"] = a.selectbox("Model", names, index=names.index(current), format_func=model_title,
                                      key=f"lab_model_{kind}", help="The pretrained model every run starts from.")
    values["epochs"] = int(b.number_input("Passes over the pictures (epochs)", 1, 100, value=int(_default(kind, "epochs")),
                                          key=f"lab_epochs_{kind}",
                                          help="The same for every run, so the comparison is fair."))
    values["seed"] = int(c.number_input("Random seed", 0, 2**31 - 1, value=0, key=f"lab_seed_{kind}",
                                        help="The same seed gives the same picks and the same results."))
    sizes = [None, 224, 160, 128, 96, 64]
    small = state.data_source == "sample"   # 28-pixel pictures: a bigger size adds only time
    values["image_size"] = (a if kind == "models" else st.columns(3)[0]).selectbox(
        "Picture size the model sees", sizes, index=sizes.index(64) if small else 0, key=f"lab_size_{kind}",
        format_func=lambda s: "the model's own" if s is None else f"{s} pixels",
        help="Smaller pictures train several times faster. The sample's pictures are only 28 pixels wide, so 64 "
             "loses nothing there; for photos, the model's own size is the most accurate.")
    if kind == "data-size":
        d, e = st.columns([2, 1])
        fractions = d.multiselect("Shares of each category to train on", FRACTION_CHOICES,
                                  default=[0.1, 0.25, 0.5, 1.0], format_func=lambda f: f"{f:.0%}",
                                  key="lab_fractions", help="Each share is one point on the chart.")
        values["fractions"] = tuple(fractions) or (1.0,)
        values["repeats"] = int(e.number_input("Picks per share", 1, 5, value=3, key="lab_repeats",
                                               help="Each pick trains on different pictures: the spread shows "
                                                    "how much luck is in one result."))
        values["with_scratch"] = st.checkbox("Also from random weights, once per share (slow: every layer learns)",
                                             key="lab_with_scratch")
    elif kind == "layers":
        picked = st.multiselect("Layer settings to compare", PRESET_CHOICES, default=["head", "last:1", "last:2", "none"],
                                format_func=lambda p: PRESET_WORDS[p], key="lab_presets",
                                help="Which layers learn from your pictures in each run; the others stay as pretrained.")
        values["presets"] = tuple(picked) or ("head",)
    elif kind == "models":
        from tl_core.lab.models import offline_models

        picked = st.multiselect("Models to compare", names, default=list(offline_models()), format_func=model_title,
                                key="lab_models", help="The ones ready offline are picked first; others may need a "
                                                       "one-time download.")
        values["models"] = tuple(picked) or None
    with guard():
        return make_experiment(kind, root, val_fraction=state.val_fraction, **values)
    return None


def progress_bar(status: dict) -> None:
    fraction = float(status.get("fraction") or 0.0)
    eta = status.get("eta_seconds")
    left = f" · about {format_seconds(eta)} left" if isinstance(eta, (int, float)) and eta > 0 else ""
    st.progress(min(max(fraction, 0.0), 1.0), text=f"{fraction:.0%}{left} · {markdown_safe(status.get('message', ''))}")


@st.fragment(run_every=1.0)
def live(path: str) -> None:
    """Redrawn every second while the experiment runs; a full rerun when it ends."""
    folder = ExperimentFolder(Path(path))
    progress_bar(folder.status())
    results = folder.results()
    if results and results.get("runs_done"):
        st.caption(f"{results['runs_done']} of {results['runs_total']} runs finished so far:")
        draw(results, key="live")
    if not lab_jobs.is_running(path):
        st.rerun(scope="app")


def metric_row(results: dict) -> None:
    arms = [("pretrained", "From ImageNet weights"), ("scratch", "From random weights")]
    cols = [st] * 2 if presenting else st.columns(2)
    for col, (key, name) in zip(cols, arms):
        arm = results.get(key)
        if not arm:
            continue
        lo, hi = arm["accuracy_ci"]
        col.metric(name, f"{arm['accuracy']:.0%} in {format_seconds(arm['seconds'])}",
                   help=f"Right on {arm['accuracy']:.0%} of the {arm['val_pictures']} pictures kept aside to check it "
                        f"(95% range {lo:.0%}-{hi:.0%}: the true accuracy is probably in there), after "
                        f"{arm['epochs_done']} passes that took {format_seconds(arm['seconds'])}.")


def table(rows: list[dict], columns: dict[str, str], key: str) -> None:
    """A table whose every column explains itself on hover."""
    names = list(rows[0]) if rows else list(columns)
    # narrow columns whose words wrap (rows taller than 4rem wrap): the table fits a 1024-pixel projector
    # beside the sidebar instead of scrolling sideways
    width = max(60, 600 // max(len(names), 1))
    st.dataframe(rows, hide_index=True, key=key, row_height=68,
                 column_config={name: st.column_config.Column(name, help=columns.get(name), width=width)
                                for name in names})


def pct(x) -> str:
    return "–" if x is None else f"{x:.0%}"


def ci(r: dict) -> str:
    lo, hi = r.get("accuracy_ci") or (0, 0)
    return f"{lo:.0%}-{hi:.0%}"


def draw(results: dict, key: str = "view") -> None:
    """One experiment's results, from its results.json: conclusion, charts (one per screen when
    presenting), then the numbers."""
    kind = results.get("experiment")
    conclusion = results.get("conclusion") or ""
    if conclusion:
        (st.success if results.get("status") == "finished" else st.info)(markdown_safe(conclusion),
                                                                          icon=":material/lightbulb:")
    # presenting: the figures' own high-contrast colours and big type, not Streamlit's theme
    chart = lambda name, *args: st.plotly_chart(figure(name, *args, presentation=presenting),  # noqa: E731
                                                key=f"lab_{key}_{name}", theme=None if presenting else "streamlit")
    if kind == "scratch":
        metric_row(results)
        chart("lab_scratch_figure", results)
    elif kind == "data-size":
        chart("lab_data_size_figure", results)
        if results.get("scratch_conclusion"):
            st.info(markdown_safe(results["scratch_conclusion"]), icon=":material/science:")
        cats = results.get("categories") or []
        if cats:   # sentences, not a table: they must be read whole, also on a projector
            st.markdown("**Would more pictures help? Category by category**",
                        help="From each category's accuracy at the last two amounts of pictures.")
            st.markdown("\n".join(
                f"- **{markdown_safe(c['category'])}**: {c['verdict']} (right on {pct(c.get('accuracy'))} of its "
                f"{c.get('checked_on') or '?'} checking pictures). {markdown_safe(c['sentence'])}" for c in cats))
        points = results.get("points") or []
        if points:
            table([{"Per category": p["pictures_per_category"], "Share": f"{p['fraction']:.0%}",
                    "Right": pct(p["accuracy"]), "95% range": ci(p),
                    "Runs": len(p.get("repeats") or [])} for p in points],
                  {"Per category": "Training pictures of each category in these runs (on average).",
                   "Share": "The share of each category's pictures these runs learned from.",
                   "Right": "Correct on the pictures kept aside (never learned from): the mean over the runs.",
                   "95% range": "Where the true accuracy probably lies: it covers every run and the luck of which "
                                "pictures were checked.",
                   "Runs": "Runs with different picks of pictures."}, f"lab_{key}_points")
    elif kind == "layers":
        chart("lab_layers_figure", results)
        chart("lab_seconds_figure", results, "preset")
        table([{"Setting": r["preset"], "Learns": r["learns"], "Right": pct(r["accuracy"]),
                "95% range": ci(r), "Own pictures": pct(r.get("train_accuracy")),
                "Gap": pct(r.get("gap")), "Took": format_seconds(r.get("seconds"))} for r in results.get("results") or []],
              {"Right": "Correct on the pictures kept aside to check it (never learned from).",
               "95% range": "Where the true accuracy probably lies, given how few pictures checked it.",
               "Own pictures": "Correct on the pictures it learned from, while learning.",
               "Gap": "Own pictures minus new pictures: a large gap means it memorised (overfitting).",
               "Took": "Seconds for the whole run, reading the pictures included."}, f"lab_{key}_layers")
    elif kind == "models":
        chart("lab_models_figure", results)
        chart("lab_seconds_figure", results, "title")
        table([{"Model": r["title"], "Right": pct(r["accuracy"]), "95% range": ci(r),
                "Took": format_seconds(r.get("seconds")), "Weights (M)": r.get("params_m"),
                "File (MB)": r.get("size_mb")} for r in results.get("results") or []],
              {"Right": "Correct on the pictures kept aside to check it (never learned from).",
               "95% range": "Where the true accuracy probably lies, given how few pictures checked it.",
               "Took": "Seconds for the whole run, reading the pictures included.",
               "Weights (M)": "How big the model is: millions of numbers (parameters).",
               "File (MB)": "The size of the trained model file."}, f"lab_{key}_models")
    runs = results.get("runs") or []
    if runs:
        with st.expander(f"The {len(runs)} runs it made"):
            st.caption(f"Experiment folder: `{results.get('experiment_dir')}`. Each run is an ordinary run folder "
                       "inside it.")
            for r in runs:
                st.markdown(f"- {markdown_safe(r.get('label') or '')}: {r.get('status')}"
                            + (f" ({markdown_safe(r.get('message') or '')})" if r.get("status") != "finished" else ""))


def experiment_label(row: dict) -> str:
    state_words = {"running": "running", "finished": "finished", "stopped": "stopped", "failed": "failed"}
    data = Path(row.get("data_dir") or "?").name
    return (f"{TITLES.get(row['kind'], row['kind'])} · {data} · {format_when(row.get('created_at'))} · "
            f"{state_words.get(row.get('state'), row.get('state'))}")


with guard():
    root = need_data()
    job = lab_jobs.active_experiment()
    if root is not None:
        kind = st.radio("Experiment", list(KINDS), format_func=lambda k: TITLES[k], horizontal=not presenting,
                        key="lab_kind")
        st.caption(WHAT[kind])
        experiment = settings(kind, root)
        training = jobs.active_job() is not None
        start = st.button("Start the experiment", type="primary", icon=":material/science:", key="lab_start",
                          disabled=experiment is None or job is not None or training)
        if training:
            st.caption("A model is training on the Train page; start an experiment when it is done.")
        elif job is not None:
            st.caption("An experiment is running (below). You can look at the other pages meanwhile.")
        if start and experiment is not None:
            with guard(), st.spinner("Checking your pictures…"):
                job = lab_jobs.start_experiment(experiment)
                st.session_state["lab_view"] = str(job.path)
                st.rerun()

    rows = list_experiments(lab_jobs.experiments_dir())
    if job is not None:
        st.subheader(f"Running: {TITLES.get(job.kind, job.kind)}")
        if st.button("Stop", key="lab_stop", icon=":material/stop:",
                     help="Stops the run in training within a moment; the runs that finished are kept and summarized."):
            if lab_jobs.stop_experiment(job.path):
                st.toast("Stopping after the current step…", icon=":material/stop:")
        live(str(job.path))
    done = [r for r in rows if job is None or r["path"] != str(job.path)]
    if done:
        st.subheader("Experiments")
        paths = [r["path"] for r in done]
        labels = {r["path"]: experiment_label(r) for r in done}
        wanted = st.session_state.get("lab_view")
        if st.session_state.get("lab_pick") not in paths:
            st.session_state["lab_pick"] = wanted if wanted in paths else paths[0]
        picked = st.selectbox("Show the results of", paths, format_func=lambda p: labels.get(p, p), key="lab_pick",
                              help="Every experiment is kept on disk with every run it made, newest first.")
        try:
            results = ExperimentFolder.open(picked).results()
        except TransferLabError as err:
            st.error(markdown_safe(str(err)))
            results = None
        if results:
            if results.get("status") in ("stopped", "failed"):
                (st.warning if results["status"] == "failed" else st.info)(markdown_safe(results.get("message", "")))
            draw(results)
        else:
            status = ExperimentFolder(Path(picked)).status()
            st.info(markdown_safe(status.get("message") or "No results yet."), icon=":material/hourglass_empty:")
    elif job is None and root is not None:
        st.caption("No experiment yet: pick one above and press **Start the experiment**. On the sample pictures (at "
                   "64 pixels) the four together take well under a minute on a quiet 2-core laptop; training every "
                   "layer (from scratch, or 'every layer' in the layers experiment) is what takes the time.")

