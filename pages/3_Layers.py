"""Layers: the chosen model drawn as its layer groups, from the picture to the answer. The user
keeps groups as they are (frozen, as pretrained) or lets them learn, and sees what that costs."""
from __future__ import annotations

import html

import streamlit as st

from pages._shared import require_app, figure, guard, header, next_step, save, ui
from tl_core.config import parse_preset
from tl_core.errors import ConfigError
from tl_core.app.formatting import format_params, format_seconds, group_detail, group_title, preset_label
from tl_core.app.previews import quick_counts
from tl_core.app.state import freeze_from_toggles

require_app(__file__)

header("Layers", "A pretrained model is a stack of layer groups: the first ones see edges and colours, the "
       "last ones whole objects. Groups **kept as they are** (*frozen*) keep what they learned from over a "
       "million photos; the others **learn** from your pictures. With few pictures, train only the new "
       "classifier.")

state = ui()


@st.cache_resource(show_spinner="Building the model's layer map…", max_entries=4)
def _model_skeleton(name: str, num_classes: int):
    """The architecture without weights: enough to list groups and count parameters."""
    from tl_core.models import build_network

    return build_network(name, max(2, num_classes))


with guard():
    from tl_core.models.freezing import CLASSIFIER_GROUP, layer_groups, make_freeze_plan
    from tl_core.models import get_model_info

    model_cfg = state.model_config()
    info = get_model_info(model_cfg.name)
    counts = {}
    if state.data_root:
        with guard():
            counts = quick_counts(state.data_root)
    num_classes = max(2, len(counts))
    n_images = sum(counts.values())

    model = _model_skeleton(model_cfg.name, num_classes)
    groups = layer_groups(model)
    names = [g.name for g in groups]
    body = [g for g in groups if g.name != CLASSIFIER_GROUP]

    try:
        fcfg = state.freeze_config()
        plan = make_freeze_plan(model, fcfg)
    except ConfigError as err:  # e.g. last:6 remembered from a deeper model
        st.warning(f"{err} Using 'train only the new classifier' instead.", icon=":material/warning:")
        state.freeze = {"preset": "head", "frozen_groups": None, "layer_lr_decay": 1.0}
        save()
        fcfg = state.freeze_config()
        plan = make_freeze_plan(model, fcfg)

    # Keep the widgets in step with the remembered choice (and with a preset just picked).
    sync = (model_cfg.name, repr(sorted((state.freeze or {}).items(), key=lambda kv: kv[0])))
    # (Streamlit forgets a widget's value when its page is left, hence the "not in" checks.)
    force = st.session_state.get("layers_sync") != sync
    kind, n = parse_preset(fcfg.preset)
    if force or "layers_kind" not in st.session_state:
        st.session_state["layers_kind"] = kind
    if force or "layers_last_n" not in st.session_state:
        st.session_state["layers_last_n"] = min(max(n, 1), max(len(body), 1))
    for g in body:  # a switch per group: on = it learns (off = kept as it is, "frozen")
        if force or f"layers_learns_{g.name}" not in st.session_state:
            st.session_state[f"layers_learns_{g.name}"] = g.name not in plan.frozen
    st.session_state["layers_sync"] = sync

    def on_preset() -> None:
        kind = st.session_state["layers_kind"]
        preset = f"last:{int(st.session_state.get('layers_last_n', 1))}" if kind == "last" else kind
        state.freeze = {"preset": preset, "frozen_groups": None,
                        "layer_lr_decay": (state.freeze or {}).get("layer_lr_decay", 1.0)}
        save()

    def on_toggle() -> None:
        frozen = [g.name for g in body if not st.session_state.get(f"layers_learns_{g.name}")]
        state.freeze = freeze_from_toggles(names, frozen, CLASSIFIER_GROUP,
                                           (state.freeze or {}).get("layer_lr_decay", 1.0))
        save()

    st.subheader(f"{info.title}: {len(groups)} layer groups")
    kinds = ["head", "last", "none", "scratch"]
    short = {"head": "Train only the new classifier", "last": "Fine-tune the last groups",
             "none": "Fine-tune everything", "scratch": "From scratch"}
    left, right = st.columns([3, 2])
    with left:
        st.radio("How much of the model learns", kinds,
                 format_func=lambda k: short[k] + (" (recommended)" if k == "head" else ""),
                 key="layers_kind", on_change=on_preset, horizontal=True,
                 help="Presets. Technical names: head (only the new classifier learns), last:N (the last N "
                      "groups are fine-tuned too), none (nothing is frozen), scratch (random start, no "
                      "pretrained weights).")
    with right:
        if st.session_state.get("layers_kind") == "last" and len(body) > 1:
            st.slider("How many of the last groups learn", 1, len(body), key="layers_last_n", on_change=on_preset)
    if fcfg.frozen_groups is not None:
        st.caption("Custom: your own choice of which groups learn (switches below).")
    else:
        st.caption(preset_label(fcfg.preset))
    if fcfg.kind == "scratch":
        st.info("From scratch starts from random numbers instead of pretrained knowledge. It needs far more "
                "pictures and time; use it to see how much pretraining helps.", icon=":material/casino:")

    # The model drawn from input to output, as a grid of equal blocks: on a narrow screen (a
    # projector at 1024x768) it wraps onto a second line instead of running off the right edge.
    blocks = []
    for i, g in enumerate(groups):
        frozen = g.name in plan.frozen
        colour = "#dde6f7" if frozen else ("#ffe7b3" if g.name == CLASSIFIER_GROUP else "#d7f0d8")
        border = "#3b6fd8" if frozen else ("#d89a3b" if g.name == CLASSIFIER_GROUP else "#3a9d4a")
        tag = "kept as is" if frozen else ("new, learns" if g.name == CLASSIFIER_GROUP else "learns")
        tip = html.escape(f"{g.description} (technical name: {g.label})")
        arrow = '<span style="opacity:0.5">→</span>' if i else ""
        blocks.append(
            f'<div style="display:flex;align-items:stretch;gap:3px">{arrow}'
            f'<div style="flex:1;background:{colour};border:2px solid {border};border-radius:10px;padding:6px 3px;'
            f'text-align:center;font-size:0.78rem;line-height:1.25" title="{tip}">'
            f'<div style="font-weight:600">{html.escape(group_title(g.name, g.label, g.description))}</div>'
            f'<div style="opacity:0.75">{format_params(g.num_params)}</div>'
            f'<div style="font-size:0.72rem;color:{border}">{tag}</div></div></div>')
    st.markdown('<div style="font-size:0.8rem;opacity:0.7;margin-top:8px">picture → … → answer</div>'
                '<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(5.6rem,1fr));gap:6px 3px;'
                'margin:4px 0">' + "".join(blocks) + "</div>", unsafe_allow_html=True)
    st.caption(":blue[**Blue**]: kept as it is (*frozen*) · :green[**Green**]: learns from your pictures · "
               ":orange[**Orange**]: the new classifier · the numbers are each group's size: how many values "
               "(*parameters*) it holds")

    fig = None
    try:
        from tl_core.app import plots  # noqa: F401

        if hasattr(plots, "layer_groups_figure"):
            fig = figure("layer_groups_figure", plan.to_dict()["groups"])
    except Exception:
        fig = None
    if fig is not None:
        with st.expander("Size of each group (chart)"):
            st.plotly_chart(fig, key="layers_fig")

    st.markdown("**Which groups learn**",
                help="Switched on, a group learns from your pictures. Switched off, it is kept as it is "
                     "(frozen): it keeps what it learned in pretraining and costs no training time.")
    for g in groups:
        c1, c2, c3 = st.columns([1.3, 4, 1])
        with c1:
            if g.name == CLASSIFIER_GROUP:
                st.toggle("learns", value=True, disabled=True, key="layers_learns_classifier_fixed",
                          help="The new classifier always learns: it is the part that knows your categories.")
            else:
                st.toggle("learns", key=f"layers_learns_{g.name}", on_change=on_toggle,
                          disabled=fcfg.kind == "scratch")
        with c2:
            st.markdown(f"**{group_title(g.name, g.label, g.description)}** — {group_detail(g.description)}",
                        help=f"Technical name: {g.label} (`{g.name}`)")
        with c3:
            st.markdown(f"{format_params(g.num_params)}")

    st.divider()
    m1, m2, m3 = st.columns(3)
    share = plan.trainable_params / max(plan.total_params, 1)
    m1.metric("Parameters that learn", format_params(plan.trainable_params), f"{share:.1%} of the model",
              delta_color="off", delta_arrow="off",
              help="Parameters are the numbers inside the model; training changes only these ones.")
    m2.metric("Kept as they are", format_params(plan.total_params - plan.trainable_params),
              help="Frozen parameters: the numbers training does not change.")
    epochs = state.train_config().epochs
    from tl_core.app import jobs
    from tl_core.app.timing import estimates_for, is_measured
    from tl_core.config import DataConfig, ModelConfig, RunConfig

    def this_config() -> RunConfig:
        return RunConfig(data=DataConfig(root=state.data_root, val_fraction=state.val_fraction),
                         model=ModelConfig(name=model_cfg.name, weights="none" if fcfg.kind == "scratch" else "auto"),
                         freeze=fcfg, train=state.train_config())

    waiting_before = bool(n_images) and not is_measured(this_config())

    def expected_time() -> None:
        """The time of this setting on this computer: measured in the background (never locking
        the page), shown as soon as it is known, then kept for this computer."""
        if not n_images:
            st.metric("Expected time", "–", help="Choose your pictures on the Data page first.")
            return
        busy = jobs.active_job() is not None
        ests, waiting = estimates_for({"this": this_config()}, busy=lambda: jobs.active_job() is not None,
                                      wait_seconds=0 if busy else 1.5)
        est = ests["this"]
        if est is not None and waiting_before:
            st.rerun(scope="app")   # measured: draw the page once more without polling
        if est is None:
            st.metric("Expected time", "timing…" if not busy else "–",
                      help="Timing is paused while a model trains." if busy else
                      "Measuring this setting on this computer (a few seconds, once).")
            if busy:
                st.caption("Timing this setting is paused while a model trains.")
            return
        st.metric("Expected time", format_seconds(est.total_seconds(epochs)),
                  f"{format_seconds(est.epoch_seconds)} per pass", delta_color="off", delta_arrow="off",
                  help=f"For {est.n_train} pictures to learn from and {est.n_val} to check with, {epochs} passes "
                       f"over them (epochs), on this computer: {format_seconds(est.prepare_seconds)} of preparation "
                       "once, then each pass" + (f"; corrected by {est.runs_used} earlier run(s) here."
                                                 if est.runs_used else "."))
        if est.mode == "features":
            st.caption("Fast path: the layers kept as they are run once per picture, then every pass only trains "
                       "what is left.")

    with m3:
        if n_images and jobs.active_job() is None and not is_measured(this_config()):
            st.fragment(run_every=2.0)(expected_time)()   # until measured: then one full rerun
        else:
            expected_time()

    next_step("train", "Next: train")
