"""Model: pick the pretrained backbone, knowing its size, accuracy, speed here and whether its
weights are on this computer already."""
from __future__ import annotations

import streamlit as st

from pages._shared import require_app, guard, header, next_step, save, ui
from tl_core.app.formatting import format_seconds, preset_short
from tl_core.app.previews import quick_counts

require_app(__file__)

header("Model", "Choose the pretrained model to start from. Bigger models are usually a bit more accurate "
       "but slower. **If unsure, keep the recommended one.**")

state = ui()

with guard():
    from tl_core.app import jobs
    from tl_core.app.timing import background_errors, estimates_for
    from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig
    import tl_core
    from tl_core.models import RECOMMENDED_MODEL, network_disabled, weights_status

    models = tl_core.catalogue()
    chosen = state.model_name or RECOMMENDED_MODEL

    counts = {}
    if state.data_root:
        with guard():
            counts = quick_counts(state.data_root)
    n_images = sum(counts.values())
    preset = (state.freeze or {}).get("preset", "head")
    epochs = state.train_config().epochs
    offline = network_disabled()

    busy = jobs.active_job() is not None
    freeze = FreezeConfig(preset=preset)   # custom per-group ticks belong to one model: the preset for all
    train_cfg = state.train_config()

    def config_for(name: str) -> RunConfig:
        return RunConfig(data=DataConfig(root=state.data_root, val_fraction=state.val_fraction),
                         model=ModelConfig(name=name, weights="none" if freeze.kind == "scratch" else "auto"),
                         freeze=freeze, train=train_cfg)

    def model_estimates() -> tuple[dict, list]:
        if not n_images:
            return {m.name: None for m in models}, []
        return estimates_for({m.name: config_for(m.name) for m in models},
                             busy=lambda: jobs.active_job() is not None)  # pauses if a training starts

    estimates, waiting = model_estimates()
    if not n_images:
        st.info("Choose your pictures on the Data page to see how long each model would take here.", icon=":material/timer:")
    elif busy and any(v is None for v in estimates.values()):
        st.caption(":material/timer: Timing the models is paused while a model trains (it would slow the training down).")
    else:
        st.caption(f":material/timer: Times are measured on this computer for your {n_images} pictures with the "
                   f"layer setting *{preset_short(preset)}*, including reading your pictures once"
                   + (" and corrected by your earlier runs here" if any(e and e.runs_used for e in estimates.values())
                      else "")
                   + "." + (f" Timing {len(waiting)} more model(s)…" if waiting else ""))

    def weights_words(name: str) -> tuple[str, str]:
        status = weights_status(name)
        if status == "ready":
            return ":material/check_circle: ready offline", "ready"
        if offline:
            return ":material/cloud_off: not on this computer (needs a one-time download)", "unavailable"
        return ":material/download: downloads once, when training starts", "download"

    def choose(name: str) -> None:
        if state.model_name != name:
            state.model_name = name
            # layer groups differ between models: keep the preset, drop custom per-group choices
            state.freeze = {**(state.freeze or {}), "frozen_groups": None}
            save()

    rec = next((m for m in models if m.name == RECOMMENDED_MODEL), models[0])
    current = next((m for m in models if m.name == chosen), rec)
    st.success(f"Chosen: **{current.title}**" + (" (recommended)" if current.name == RECOMMENDED_MODEL else ""),
               icon=":material/psychology:")
    if weights_words(current.name)[1] == "unavailable":
        st.warning(f"The pretrained weights of {current.title} are not on this computer and it is offline, so "
                   "training would fail. Choose a model marked *ready offline*.", icon=":material/cloud_off:")

    def cards() -> None:
        est_now, _ = model_estimates()
        per_row = 3
        for start in range(0, len(models), per_row):
            cols = st.columns(per_row)
            for col, info in zip(cols, models[start:start + per_row]):
                with col.container(border=True):
                    badge = " :material/star: Recommended" if info.name == RECOMMENDED_MODEL else ""
                    st.markdown(f"**{info.title}**{badge}")
                    st.caption(info.blurb)
                    est = est_now.get(info.name)
                    time_txt = format_seconds(est.total_seconds(epochs)) if est else "timing…"
                    top1 = f"{info.top1:.0f}%" if info.top1 else "?"
                    # one line per fact: three narrow columns broke words apart on a 1024-pixel screen
                    st.markdown(f":material/timer: **{time_txt}** :gray[here, {epochs} passes]  \n"
                                f":material/target: **{top1}** :gray[right on a standard photo test]  \n"
                                f":material/straighten: **{info.params_m:.1f} M** :gray[numbers inside]",
                                help=f"Time: expected training time for your pictures on this computer, with the "
                                     f"current layer setting and {epochs} passes over your pictures (epochs), "
                                     "measured here. Photo test: top-1 accuracy on ImageNet's 1000 everyday "
                                     "categories, i.e. how good its pretrained features are. Numbers inside: "
                                     "millions of parameters; bigger is slower.")
                    words, status = weights_words(info.name)
                    per = (f" · {format_seconds(est.epoch_seconds)} per pass after "
                           f"{format_seconds(est.prepare_seconds)} of preparation") if est else ""
                    st.caption(f"{words}{per} · {info.input_size} px · {info.license}")
                    is_chosen = info.name == chosen
                    if st.button(":material/check: Chosen" if is_chosen else "Choose", key=f"model_pick_{info.name}",
                                 type="primary" if is_chosen else "secondary",
                                 disabled=is_chosen or status == "unavailable", width="stretch"):
                        choose(info.name)
                        st.rerun(scope="app")

        with st.expander("Compare all models in a table"):
            rows = []
            for info in models:
                est = est_now.get(info.name)
                rows.append({"Model": info.title, "timm name": info.name, "Parameters (M)": info.params_m,
                             "ImageNet top-1 (%)": info.top1, "Input (px)": info.input_size,
                             "Seconds per epoch here": round(est.epoch_seconds, 1) if est else None,
                             "First epoch (s)": round(est.first_epoch_seconds, 1) if est else None,
                             "Weights": weights_words(info.name)[1], "Licence": info.license})
            st.dataframe(rows, hide_index=True)

        failed = background_errors()
        if waiting and all(est_now.get(job[0]) is not None or job[0] in failed for job in waiting):
            st.rerun(scope="app")  # all timed: stop polling

    if waiting:
        st.fragment(run_every=1.5)(cards)()
    else:
        cards()

    if state.model_name is None:
        state.model_name = chosen
        save()
    next_step("layers", "Next: choose which layers to train")
