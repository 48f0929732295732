"""Streamlit glue shared by the pages: session state, the page header, error display, run picking.

Not a page itself (the app lists its pages explicitly with ``st.navigation``). Everything that
does not need Streamlit lives in :mod:`tl_core.app`.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import traceback
from pathlib import Path

import streamlit as st

from tl_core.errors import TransferLabError
from tl_core.runs import list_runs
from tl_core.app.formatting import markdown_safe, model_title, preset_short, run_label
from tl_core.app.live import live_view
from tl_core.app.sessions import SESSION_PARAM, load_session, new_token, save_session, valid_token
from tl_core.app.state import UIState, pick_run_to_show
from tl_core.app import classroom
from tl_core.app.workspace import classroom_mode, owns_run, runs_dir, set_session_source


class _Jobs:
    """``tl_core.app.jobs``, imported on first real use: it imports PyTorch and timm (seconds on a laptop),
    and the frame drawn before every page only asks whether a job runs, which none can before it exists."""

    def __getattr__(self, name: str):
        return getattr(importlib.import_module("tl_core.app.jobs"), name)

    @staticmethod
    def active_job():
        active = getattr(sys.modules.get("tl_core.app.jobs"), "active_job", None)
        return active() if active is not None else None

    @staticmethod
    def own_job():
        """This session's job in line (training or waiting); on a laptop, the one user's."""
        own = getattr(sys.modules.get("tl_core.app.jobs"), "own_job", None)
        return own() if own is not None else None


jobs = _Jobs()

PAGES = {
    "data": "pages/1_Data.py",
    "model": "pages/2_Model.py",
    "layers": "pages/3_Layers.py",
    "train": "pages/4_Train.py",
    "results": "pages/5_Results.py",
    "try": "pages/6_Try_and_export.py",
    "lab": "pages/7_Lab.py",
    "teacher": "pages/8_Teacher.py",
}

STEPS = [
    ("data", "1 · Data", "Bring your pictures: one folder per category."),
    ("model", "2 · Model", "Pick a pretrained model that already knows how to see."),
    ("layers", "3 · Layers", "Choose which parts of it to keep and which to retrain."),
    ("train", "4 · Train", "Teach it your categories and watch it learn."),
    ("results", "5 · Results", "See where it is right and where it is wrong."),
    ("try", "6 · Try & export", "Test it on new photos and take it home."),
]


_RUN = threading.local()  # one script run per thread: set while app.py runs a page


@contextlib.contextmanager
def running_from_app():
    """app.py wraps ``page.run()`` in this, so a page knows it was reached through the app."""
    _RUN.via_app = True
    try:
        yield
    finally:
        _RUN.via_app = False


def _icon():
    """The tab icon, drawn from a file in assets/: a Material icon name here would make the browser
    fetch it from Google's servers, and nothing may leave the machine."""
    from PIL import Image

    try:
        return Image.open(Path(__file__).resolve().parent.parent / "assets" / "icon.png")
    except OSError:
        return None


def app_frame(home):
    """What every run of the app draws around a page: page config, navigation, sidebar.

    Returns the page to run and the sidebar box for :func:`sidebar_choices`."""
    set_session_source(_admitted_session)   # every run: this module is imported once per process
    presenting = presentation_mode()
    st.set_page_config(page_title="Transfer Lab", page_icon=_icon(), layout="wide",
                       initial_sidebar_state="collapsed" if presenting else "auto")
    st.html(LAYOUT_CSS + (PRESENTATION_CSS if presenting else ""))
    if classroom_mode() and not admitted():
        # nothing of the app before the class code: no page, no choices, no runs (any page's address
        # lands here too: the navigation knows no other page)
        # every page's address leads to the door (a bookmark of /Train opens Train once the code is in)
        door = [st.Page(class_code_page, title="Class code", icon=":material/key:", default=True, url_path="home")]
        door += [st.Page(class_code_page, title="Class code", url_path=Path(file).stem.split("_", 1)[1])
                 for file in PAGES.values()]
        st.navigation(door, position="hidden").run()
        st.stop()
    teacher = classroom_mode() and classroom.was_teacher(session_token())
    page = st.navigation([
        st.Page(home, title="Home", icon=":material/home:", default=True, url_path="home"),
        st.Page(PAGES["data"], title="Data", icon=":material/folder:"),
        st.Page(PAGES["model"], title="Model", icon=":material/psychology:"),
        st.Page(PAGES["layers"], title="Layers", icon=":material/layers:"),
        st.Page(PAGES["train"], title="Train", icon=":material/fitness_center:"),
        st.Page(PAGES["results"], title="Results", icon=":material/bar_chart:"),
        st.Page(PAGES["try"], title="Try & export", icon=":material/photo_camera:"),
        st.Page(PAGES["lab"], title="Lab", icon=":material/science:"),
        *([st.Page(PAGES["teacher"], title="Teacher", icon=":material/school:",
                   visibility="visible" if teacher else "hidden")] if classroom_mode() else []),
    ])
    session_token()  # before anything else: the address names this session's choices
    ui()  # load them once per session
    with st.sidebar:
        choices = st.empty()
        if page.title != "Train":  # the Train page shows the run itself: one epoch number, not two clocks
            sidebar_training()
        presentation_toggle()
    sidebar_choices(choices)
    return page, choices


# Projector-ready (issue 11): at 1024x768 labels wrap instead of being cut off ("Start t…"), and the
# page keeps its width for the content (less empty margin on narrow screens).
LAYOUT_CSS = """<style>
@media (max-width: 1300px) {
  [data-testid="stMainBlockContainer"] { padding: 3.5rem 1.5rem 6rem 1.5rem !important; }
}
[data-testid="stColumn"] [data-testid="stLayoutWrapper"]:has([data-testid="stPageLink"]),
[data-testid="stColumn"]
  [data-testid="stVerticalBlock"]:has(> [data-testid="stElementContainer"] > [data-testid="stPageLink"]) {
  height: auto !important; flex: 1 0 auto !important; min-height: 9rem; overflow: visible !important;
}  /* cards with a link (Home's steps) grow with their text instead of clipping it */
button p, [data-testid="stPageLink"] p, [data-testid="stPageLink"] span, [data-testid="stMetricLabel"] *,
[data-testid="stWidgetLabel"] p, [role="tab"] p, [data-testid="stMetricValue"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
}
[data-testid="stMetricValue"] p { overflow-wrap: anywhere; line-height: 1.15; }
</style>"""

# Presentation mode: bigger type everywhere (Streamlit sizes in rem), the sidebar folded away.
PRESENTATION_CSS = """<style>
html { font-size: 20px !important; }
[data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }
</style>"""


def presentation_mode() -> bool:
    """Bigger type and the sidebar folded away, for a projector: off until switched on, then
    remembered for this browser session (on every page)."""
    return bool(st.session_state.get("tl_presentation_on", False))


def presentation_toggle() -> None:
    def changed() -> None:
        st.session_state["tl_presentation_on"] = bool(st.session_state.get("tl_presentation"))

    st.session_state["tl_presentation"] = presentation_mode()  # the widget follows the remembered choice
    st.toggle("Presentation mode", key="tl_presentation", on_change=changed,
              help="For a projector or a big screen: bigger type, and this sidebar folds away. Open it again "
                   "with the arrow at the top left to switch back.")


def require_app(page_file: str) -> None:  # noqa: ARG001 - kept for a clear call site in every page
    """Make sure this page is drawn inside the app's frame (navigation, sidebar, wide layout).

    Streamlit starts every server in its legacy "pages/ folder" mode and leaves it the first time
    ``st.navigation`` is called. If the very first request of a fresh server is a page's URL (a
    bookmark, a refresh after a restart), Streamlit runs that page file on its own, without app.py
    (``AppTest`` does this on every run). Then draw the frame here: ``st.navigation`` switches the
    legacy mode off for good and selects this same page (matched by its URL name), and the page goes
    on drawing itself. The Home entry is a stand-in with Home's URL; clicking it reruns through app.py.
    """
    if getattr(_RUN, "via_app", False):
        return
    app_frame(_home_stand_in)


def _home_stand_in() -> None:
    st.switch_page(PAGES["data"])  # never reached: once navigation exists, app.py draws Home


def _admitted_session() -> str | None:
    """The session token when this browser session entered the class code (read by
    :mod:`tl_core.app.workspace` to find the student's folders; None in background threads)."""
    token = st.session_state.get("tl_session")
    return token if token and st.session_state.get("tl_admitted") == token else None


set_session_source(_admitted_session)

if classroom_mode():
    # Thirty sessions draw their first chart at once in a classroom: plotly imports pandas on first use,
    # and a second script thread arriving mid-import got a half-made module ("partially initialized
    # module 'pandas' has no attribute 'Series'", seen in tests/test_browser_classroom.py). Imported
    # here, once, while Python's lock on this module keeps the other sessions waiting.
    import pandas  # noqa: F401,E402
    import plotly.graph_objects  # noqa: F401,E402


def admitted() -> bool:
    """On a classroom server: whether this browser session entered the class code (recorded per
    session token, so a refresh does not ask again; a workspace the teacher cleaned up asks again)."""
    token = session_token()
    if classroom.is_admitted(token):
        st.session_state["tl_admitted"] = token
        return True
    for key in ("tl_admitted", "tl_ui", "tl_view_run"):
        st.session_state.pop(key, None)
    return False


def class_code_page() -> None:
    """The only page before the class code: one field for it, one for an optional name."""
    st.title("Transfer Lab")
    st.markdown("#### Welcome to the class. Type the **class code** your teacher shows to begin.")
    with st.form("classroom_gate", border=True):
        code = st.text_input("Class code", key="gate_code", max_chars=20, placeholder="for example K7P4QX")
        name = st.text_input("Your name (optional: only your teacher sees it)", key="gate_name",
                             max_chars=classroom.NAME_MAX_CHARS)
        entered = st.form_submit_button("Enter", type="primary", icon=":material/login:", key="gate_enter")
    st.caption("Everything you do here (your pictures, your models) is yours alone: other students cannot see it. "
               "Keep this page's address to come back to your work; anyone with the address can open it.")
    if entered:
        with guard():
            record = classroom.admit(session_token(), code, name)
            if record.get("teacher_proof"):
                keep_teacher_proof(record["teacher_proof"])
            st.session_state["tl_admitted"] = session_token()
            st.rerun()


TEACHER_PROOF_KEY = "tl_teacher_proof"


def teacher_here() -> bool:
    """The teacher view is open in this tab (the teacher code was typed here, not only in this address)."""
    return classroom.is_teacher(session_token(), st.session_state.get(TEACHER_PROOF_KEY))


def keep_teacher_proof(proof: str) -> None:
    st.session_state[TEACHER_PROOF_KEY] = proof


def session_token() -> str:
    """This browser session's name, kept in the address (``?session=...``) so that a refresh or a
    server restart finds the same choices; a new tab without it starts clean."""
    token = st.session_state.get("tl_session")
    if not token:
        asked = st.query_params.get(SESSION_PARAM)
        token = asked if valid_token(asked) else new_token()
        st.session_state["tl_session"] = token
    if st.query_params.get(SESSION_PARAM) != token:  # moving between pages clears the address's parameters
        st.query_params[SESSION_PARAM] = token
    return token


def ui() -> UIState:
    """The user's choices for this browser session, loaded from disk on the first run."""
    if "tl_ui" not in st.session_state:
        st.session_state["tl_ui"] = load_session(session_token())
    return st.session_state["tl_ui"]


def save() -> None:
    save_session(session_token(), ui())


def current_run_dir() -> str | None:
    """The run this session is looking at: one the user picked in this tab, else a running job (so
    a refresh or a second tab reattaches to it), else the remembered run, else the newest."""
    picked = st.session_state.get("tl_view_run")
    if picked and (Path(picked) / "config.json").is_file() and owns_run(picked):
        return picked
    state = ui()
    job = jobs.own_job()
    active = job.run_dir if job is not None else None
    runs = [] if active else list_runs(runs_dir())
    remembered = state.run_dir if owns_run(state.run_dir) else None  # never another student's, however named
    chosen = pick_run_to_show(remembered, active, runs)
    if chosen != state.run_dir:
        state.run_dir = chosen
        save()
    return chosen


def view_run(run_dir: str | None) -> None:
    """Look at this run in this tab (and remember it as the current run). Only the user's own runs."""
    if run_dir and not owns_run(run_dir):
        run_dir = None
    st.session_state["tl_view_run"] = run_dir
    if run_dir:
        ui().run_dir = run_dir
        save()


@contextlib.contextmanager
def guard():
    """Show a plain message instead of a traceback when something goes wrong."""
    try:
        yield
    except TransferLabError as err:  # messages name categories and files: shown as typed, not as markdown
        st.error(markdown_safe(str(err)), icon=":material/warning:")
    except (MemoryError, OSError) as err:
        st.error(markdown_safe(f"Something went wrong on this computer: {err}"), icon=":material/warning:")
    except Exception as err:  # a bug: say so plainly, keep the details one click away
        st.error(f"Something unexpected went wrong ({type(err).__name__}: {err}).", icon=":material/warning:")
        with st.expander("Details for a bug report"):
            st.code("".join(traceback.format_exception(type(err), err, err.__traceback__)))


def prepared_download(box, key: str, source: str, label: str, make, file_name: str, mime: str,
                      icon: str | None = None, help: str | None = None) -> None:
    """A download whose file takes a while to make and can fail (an export with its parity check).

    A lazy ``st.download_button`` would make the file on click, but a failure there can only show
    Streamlit's generic download error. So: a 'Prepare' button makes the file under a spinner (a
    failure becomes our plain message), then the download button hands over the bytes. Prepared
    files are kept per ``source`` (the run), so choosing another model never offers a stale file.
    """
    store = st.session_state.setdefault("_prepared_downloads", {})
    if key in store and store[key]["source"] != source:
        del store[key]
    if key not in store:
        if not box.button(f"Prepare {label}", key=f"{key}_prepare", icon=icon, help=help, width="stretch"):
            return
        with box, guard(), st.spinner(f"Making {label} and checking it gives the same answers as PyTorch…"):
            store[key] = {"source": source, "data": make()}
        if key not in store:
            return
    box.download_button(f"Download {label}", data=store[key]["data"], file_name=file_name, mime=mime, key=key,
                        icon=icon, help=help, on_click="ignore", width="stretch")


def header(title: str, sentence: str) -> None:
    st.title(title)
    st.markdown(sentence)


def next_step(key: str, label: str) -> None:
    """The page's main way on: a real (primary) button, not a small link."""
    if st.button(label, key=f"next_{key}", type="primary", icon=":material/arrow_forward:"):
        st.switch_page(PAGES[key])


def need_data() -> str | None:
    """The data folder, or a friendly pointer to the Data page (then None)."""
    state = ui()
    if state.data_root and Path(state.data_root).is_dir():
        return state.data_root
    st.info("First choose your pictures on the **Data** page (or try the sample data).", icon=":material/folder:")
    st.page_link(PAGES["data"], label="Go to Data", icon=":material/folder:")
    return None


def run_picker(key: str, label: str = "Run", only_with_weights: bool = False) -> str | None:
    """A select box of the runs on disk, defaulting to the current run. Returns its folder."""
    runs = list_runs(runs_dir())
    if only_with_weights:  # (a damaged run stays in the Train page's table, marked, with its message)
        runs = [r for r in runs if r.get("has_weights") and not r.get("damaged")]
    if not runs:
        return None
    current = current_run_dir()
    paths = [r["path"] for r in runs]
    labels = {r["path"]: run_label(r, details=True) for r in runs}
    if current not in paths:
        current = paths[0]
    if st.session_state.get(key) != current:
        st.session_state[key] = current

    def changed() -> None:
        view_run(st.session_state.get(key))

    return st.selectbox(label, paths, format_func=lambda p: labels.get(p, p), key=key, on_change=changed)


def sidebar_choices(box) -> None:
    """What is chosen so far, drawn into ``box`` (an ``st.empty`` in the sidebar)."""
    from tl_core.models.catalogue import RECOMMENDED_MODEL

    state = ui()
    data = Path(state.data_root).name if state.data_root else "not chosen yet"
    if state.data_source == "sample":
        data = "sample data"
    freeze = state.freeze or {}
    name = state.model_name or RECOMMENDED_MODEL
    preset = freeze.get("preset", "head")
    custom = freeze.get("frozen_groups") is not None
    model = model_title(name) + (" (recommended)" if name == RECOMMENDED_MODEL else "")
    with box.container():
        st.caption("Your choices")
        st.markdown(f":material/folder: **Data:** {markdown_safe(data)}  \n"
                    f":material/psychology: **Model:** {markdown_safe(model)}  \n"
                    f":material/layers: **Layers:** {preset_short(preset, custom)}",
                    help=f"Technical names: model `{name}`, layer preset `{preset}`"
                         f"{' with your own choice of frozen groups' if custom else ''}.")


def sidebar_training() -> None:
    """The live training status in the sidebar, on every page."""
    _sidebar_training()


@st.fragment(run_every=2.0)
def _sidebar_training() -> None:
    job = jobs.own_job()
    if job is None:
        return
    if job.waiting:
        place = jobs.queue_place(job.run_dir)
        if place is not None:
            st.caption(f"Your training waits in line: number {place.place}. "
                       f"{queue_start_words(place.start_in_seconds, place.guessed)}")
            st.page_link(PAGES["train"], label="See it on Train", icon=":material/hourglass_top:")
        return
    try:
        view = live_view(job.run_dir)
    except TransferLabError:
        return
    if not view.active:  # the thread is finishing; the run is over
        return
    st.caption("Training now")
    st.progress(view.bar_fraction(), text=view.progress_text())
    st.page_link(PAGES["train"], label="Watch it train", icon=":material/monitoring:")


def queue_start_words(seconds: float | None, guessed: bool = False) -> str:
    """"It should start in about 2 min (around 10:42)." from the seconds until it starts; ``guessed``:
    a training before it was never timed here, so the time is a rough guess and says so."""
    import time as _time

    from tl_core.app.formatting import format_seconds

    if seconds is None:
        return "It starts when the trainings before it have finished."
    if seconds < 5:
        return "It should start in a moment."
    at = _time.strftime("%H:%M", _time.localtime(_time.time() + seconds))
    return (f"It should start in about {format_seconds(seconds)} (around {at})"
            + ("; a rough guess, as a training before it was never timed on this computer." if guessed else "."))


def figure(name: str, *args, **kwargs):
    """The plotly figure ``tl_core.app.plots.<name>(*args, **kwargs)``."""
    from tl_core.app import plots

    return getattr(plots, name)(*args, **kwargs)


@st.cache_resource(max_entries=3, show_spinner="Loading the trained model…")
def _load_model_cached(run_dir: str, weights_mtime: float):
    from tl_core.results.inference import load_run_model

    return load_run_model(run_dir)


def loaded_model(run_dir: str):
    """The run's model, loaded once per weights file (reloaded when training saves a better one)."""
    weights = Path(run_dir) / "model.safetensors"
    mtime = weights.stat().st_mtime if weights.is_file() else 0.0
    return _load_model_cached(str(run_dir), mtime)


@st.cache_data(max_entries=64, show_spinner=False)
def _where_it_looked_cached(run_dir: str, weights_mtime: float, image_path: str, file_mtime: float):
    from tl_core.data.images import load_image
    from tl_core.results import explain

    loaded = _load_model_cached(run_dir, weights_mtime)
    image = load_image(image_path)
    heat = explain.gradcam(loaded, image)
    return image, explain.overlay(image, heat, keep_shape=True, preprocessing=loaded.preprocessing)


def where_it_looked(run_dir: str, image_path: str):
    """(picture, Grad-CAM overlay) for a picture on disk, made once per run weights and picture: a
    click elsewhere on the page reruns it, and must not wait for the heat map again."""
    weights = Path(run_dir) / "model.safetensors"
    mtime = weights.stat().st_mtime if weights.is_file() else 0.0
    path = Path(image_path)
    return _where_it_looked_cached(str(run_dir), mtime, str(path), path.stat().st_mtime if path.exists() else 0.0)


def thumb_grid(items: list[dict], caption, columns: int = 6, limit: int = 24, key: str = "grid") -> None:
    """Thumbnails of ``items`` (dicts with ``path``) with a caption each."""
    from tl_core.app.previews import display_picture
    from tl_core.data.images import load_image

    shown = items[:limit]
    for start in range(0, len(shown), columns):
        cols = st.columns(columns)
        for col, it in zip(cols, shown[start:start + columns]):
            try:
                img = load_image(it["path"])
                img = display_picture(img, 200)
                col.image(img, caption=caption(it), width="stretch")
            except Exception as err:  # one unreadable file must not hide the others
                col.caption(f"(cannot show {Path(it['path']).name}: {err})")
    if len(items) > limit:
        st.caption(f"…and {len(items) - limit} more.")
