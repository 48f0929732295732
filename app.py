"""Transfer Lab: teach a pretrained image model your own categories, on your own computer.

Run with ``streamlit run app.py``. This file is the entry point: it lists the pages (in the order
of the walk-through) and draws the Home page. Every page is thin: widgets -> a config dataclass ->
one tl_core call -> draw.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # so the pages can import pages._shared under any launcher
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages._shared import (PAGES, STEPS, app_frame, guard, running_from_app, save, session_token,  # noqa: E402
                           sidebar_choices, ui)


def sample_time_sentence() -> str:
    """How long the sample takes here, from this computer's own measurement when it has one (Home
    never measures: it must show its words at once)."""
    from tl_core.app.formatting import format_seconds
    from tl_core.config import DataConfig, RunConfig
    from tl_core.data.sample import sample_dir
    from tl_core.training.estimate import estimate

    try:
        est = estimate(RunConfig(data=DataConfig(root=str(sample_dir()))), measure_now=False)
    except Exception:  # noqa: BLE001 - a sentence on Home is never worth an error
        est = None
    if est is None:
        return ("The Model and Layers pages measure how long your pictures will take on this computer before "
                "you start.")
    return (f"With the recommended model and *train only the new classifier*, the sample takes about "
            f"**{format_seconds(est.total_seconds(10))}** here (measured on this computer); the Model and Layers "
            "pages give the time for your own pictures.")


def continue_section() -> None:
    """A new browser session starts clean; this offers the last project worked on here."""
    from tl_core.app.sessions import last_project
    from tl_core.app.state import UIState

    state = ui()
    if state.data_root:
        return
    with guard():
        last = last_project(exclude=session_token())
        if last is None:
            return
        from tl_core.app.formatting import markdown_safe

        a, b = st.columns([1, 2])
        with b:
            st.caption(f"Last time on this computer: the pictures in **{markdown_safe(last.data_name)}**, "
                       f"{last.age_words()}.")
        with a:
            if st.button("Continue where you left off", key="home_continue", icon=":material/history:"):
                st.session_state["tl_ui"] = UIState.from_dict(last.state.to_dict())
                st.session_state.pop("tl_view_run", None)
                save()
                st.switch_page(PAGES["train"] if last.state.run_dir else PAGES["data"])


def project_section() -> None:
    """Save the whole project (pictures, runs, choices) as one file, or open one made elsewhere."""
    a, b = st.columns(2)
    with a, guard():
        state = ui()
        ready = bool(state.data_root and Path(state.data_root).is_dir())
        name = Path(state.data_root).name if ready else "project"
        st.caption("Your pictures, every run trained on them and your choices, in one file to keep or to open "
                   "on another computer (the same answers there).")
        from tl_core.app.projects import project_bytes
        from tl_core.app.state import UIState
        from tl_core.projects import set_aside_pictures

        # the file is built when clicked, in another thread where this session's state cannot be read:
        # the callable takes a copy of the choices as they are now
        chosen = UIState.from_dict(state.to_dict())
        from tl_core.app.workspace import runs_dir

        folder = runs_dir()  # this user's runs, found now (a classroom student's own folder)
        with_aside = True
        aside = len(set_aside_pictures(state.data_root)) if ready else 0
        if aside:   # one may have been set aside because it should not be shared: the user decides
            with_aside = st.checkbox(f"Include the {aside} picture(s) you set aside", value=True,
                                     key="home_project_set_aside",
                                     help="Then undo works where the project is opened. Leave them out when "
                                          "a picture should not be shared.")
        st.download_button("Save this project", data=lambda: project_bytes(chosen, folder, with_aside),
                           file_name=f"{name}.tlproj",
                           mime="application/octet-stream", disabled=not ready, icon=":material/save:",
                           key="home_project_save", on_click="ignore",
                           help="Choose your pictures on the Data page first." if not ready else None)
    with b, guard():
        upload = st.file_uploader("Open a project (.tlproj)", type=["tlproj"], key="home_project_open")
        if upload is not None and st.session_state.get("home_project_opened") != upload.file_id:
            from tl_core.app.projects import open_uploaded_project

            with st.spinner("Opening the project…"):
                new_state, opened = open_uploaded_project(upload.name, upload.getvalue())
            st.session_state["home_project_opened"] = upload.file_id
            st.session_state["tl_ui"] = new_state
            save()
            aside = opened.to_dict()["set_aside"]
            st.success(f"Opened **{Path(opened.data_root).parent.name}**: {len(opened.run_dirs)} run(s) and the "
                       "pictures they learned from" + (f", with the {aside} picture(s) you set aside (undo under "
                                                       "\"Fix and retrain\" on the Results page puts them back)"
                                                       if aside else "") + ".",
                       icon=":material/folder_open:")
            st.page_link(PAGES["results"], label="See its results", icon=":material/bar_chart:")


def home() -> None:
    """Home: the words first, then the hardware line (PyTorch is slow to load; the words must not wait)."""
    from tl_core.data.sample import sample_dir

    st.title("Transfer Lab")
    st.markdown("#### Teach a ready-made image model to recognise *your* categories, on this computer.")
    st.markdown(
        "**Transfer learning** starts from a model that has already learned to see, by studying over a million "
        "photos of everyday things. "
        "You keep what it knows about edges, textures and shapes, and only teach its last part what *your* "
        "categories look like. "
        "That is why a few dozen pictures per category and a few minutes on an ordinary laptop are enough."
    )
    st.subheader("Start")
    continue_section()
    a, b = st.columns([1, 2])
    with a:
        if st.button("Try it with the sample data", type="primary", key="home_sample", icon=":material/checkroom:"):
            state = ui()
            state.data_root, state.data_source = str(sample_dir()), "sample"
            save()
            st.switch_page(PAGES["data"])
    with b:
        st.caption("The sample has 200 small photos of clothes in 5 categories (t-shirt, trouser, sandal, "
                   "sneaker, bag). Or go to **Data** to bring your own pictures.")

    st.graphviz_chart(
        r"""
        digraph {
          rankdir=LR; bgcolor="transparent"; nodesep=0.3;
          node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=13, color="#3b6fd8", margin="0.25,0.12"];
          edge [color="#777777"];
          photo [label="Your photo", fillcolor="#ffffff"];
          body [label="Pretrained layers\n(already know edges,\ntextures, shapes)", fillcolor="#dde6f7"];
          head [label="New classifier\n(learns your categories)", fillcolor="#ffe7b3", color="#d89a3b"];
          answer [label="\"sneaker\", 92% sure", fillcolor="#ffffff"];
          photo -> body [label=" kept as is ", fontsize=10, fontcolor="#3b6fd8"];
          body -> head -> answer;
        }
        """.strip()
    )

    st.subheader("The steps")
    per_row = 3   # two rows of three: nothing clips on a 1024-pixel projector
    for start in range(0, len(STEPS), per_row):
        cols = st.columns(per_row)
        for col, (key, title, sentence) in zip(cols, STEPS[start:start + per_row]):
            with col.container(border=True):
                st.page_link(PAGES[key], label=f"**{title}**")
                st.caption(sentence)

    st.subheader("This computer")
    hardware_box = st.empty()  # filled last: it needs PyTorch, which takes seconds to load on a laptop
    hardware_box.caption("Looking at this computer…")

    st.subheader("Projects")
    project_section()

    with hardware_box.container(), guard():
        hardware_line()
        cache_line()


def hardware_line() -> None:
    """The GPU, or the CPU and how long the sample takes on it."""
    from tl_core.runtime.device import describe_hardware  # imports PyTorch: only after Home's words are out

    hw = describe_hardware()
    if hw["kind"] == "cuda":
        st.success(f"Graphics card found: **{hw['name']}** ({hw.get('memory_gb', '?')} GB). "
                   "Training will be fast.", icon=":material/bolt:")
    elif hw["kind"] == "mps":
        st.success(f"Apple graphics found: **{hw['name']}**. Training will use it.", icon=":material/bolt:")
    else:
        st.info(f"No graphics card found: training runs on the **{hw['name']}**. "
                + sample_time_sentence(), icon=":material/computer:")


CACHE_WORTH_A_SENTENCE = 512 * 1024**2


def cache_line() -> None:
    """The disk the cache takes, once that is worth a sentence, and a button that frees it. Not on a
    classroom server: its cache is everybody's (`tl cache --clear` there)."""
    from tl_core.app.workspace import classroom_mode
    from tl_core.files import size_text
    from tl_core.paths import cache_dir
    from tl_core.runtime import cache_space

    usage = cache_space.usage(cache_dir())
    if usage.total < CACHE_WORTH_A_SENTENCE or classroom_mode():
        return
    limit = f", and never more than {size_text(usage.limit)}" if usage.limit else ""
    words, button = st.columns([3, 1], vertical_alignment="center")
    words.caption(f"Pictures and features kept to make the next training faster take **{size_text(usage.total)}** "
                  f"of disk{limit}. They are made again when needed; your pictures and models are not part of it.")
    if button.button("Free this space", key="home_clear_cache", icon=":material/cleaning_services:",
                     help="Removes the kept pictures and features (not those used in the last minute). "
                          "The next training on the same pictures takes longer."):
        freed = cache_space.clear(cache_dir())
        st.toast(f"Freed {size_text(freed.freed)}.", icon=":material/cleaning_services:")
        st.rerun()


page, choices = app_frame(home)
with running_from_app():
    page.run()
sidebar_choices(choices)  # again, with what the page just changed (skipped when a page stops early)
