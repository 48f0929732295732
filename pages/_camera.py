"""Streamlit glue for the camera (issue 15): the Data page's "Take pictures with the camera" and the
Try page's live predictions. Not a page (underscore files in pages/ are not pages).

The video comes through streamlit-webrtc. Its frame callback runs in the component's own thread:
it only hands each frame to a Streamlit-free object (``tl_core.app.camera.CameraSession`` or
``tl_core.app.live_predict.LivePredictor``) kept in this browser session's state, and returns the
frame unchanged. Everything else (which category, saving, bursts, predictions) lives in tl_core.app.

Offline: no STUN or TURN server is configured (``iceServers: []``), so neither the browser nor the
server asks any machine for its address; the browser and this server find each other through their
own (host) addresses, which works on this computer and on a classroom's local network.
"""
from __future__ import annotations

from pathlib import Path

import contextlib
import logging
import time

import streamlit as st

from pages._shared import save, session_token, ui
from tl_core.app.camera import (BURST_COUNTS, BURST_RATES, RTC_CONFIGURATION, CameraError, CameraSession, FrameSlot,
                                camera_data_dir)
from tl_core.app.formatting import markdown_safe
from tl_core.errors import TransferLabError

# 15 frames a second is plenty (a burst takes at most 5 a second, a prediction needs one frame); each frame is
# decoded and encoded again on the server, so fewer and smaller frames leave the CPU to the model
VIDEO = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 15, "max": 15}},
         "audio": False}
# live predictions: the model sees 224 px or less, and the video on the page is about 300 px wide
LIVE_VIDEO = {"video": {"width": {"ideal": 320}, "height": {"ideal": 240}, "frameRate": {"ideal": 15, "max": 15}},
              "audio": False}
VIDEO_ATTRS = {"autoPlay": True, "controls": False, "muted": True, "playsInline": True,
               "style": {"width": "100%", "borderRadius": "0.5rem"}}
WORDS = {"start": "Start the camera", "stop": "Stop the camera", "select_device": "Choose a camera",
         "device_ask_permission": "Allow this page to use the camera (the browser asks).",
         "device_access_denied": "The browser was not allowed to use the camera: allow it in the address bar, "
                                 "then reload the page.",
         "media_api_not_available": "This browser allows the camera only on https:// or on this computer "
                                    "(localhost). See 'Camera' in the README to serve the app with a certificate."}
THUMBS = 6
CONTROLS_MSG, PICTURES_MSG = "tl_camera_msg", "tl_camera_pictures_msg"


@contextlib.contextmanager
def _remembered(box_key: str, box):
    """Like ``guard()``, but the plain message stays (in session state, drawn into ``box`` by :func:`_message`)
    until the next action in the same panel (a click elsewhere in it, a burst's end, redraws the panel)."""
    st.session_state.pop(box_key, None)
    try:
        yield
    except TransferLabError as err:
        st.session_state[box_key] = str(err)
    except OSError as err:
        st.session_state[box_key] = f"Something went wrong on this computer: {err}"
    _message(box_key, box)


def _message(box_key: str, box) -> None:
    """The panel's remembered message (or nothing) in ``box`` (an ``st.empty`` drawn before the buttons)."""
    text = st.session_state.get(box_key)
    if text:
        box.error(markdown_safe(text), icon=":material/warning:")
    else:
        box.empty()


def _redraw() -> None:
    """Run the panel (the fragment) again; the whole page when this run is not a fragment's own."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.rerun(scope="fragment")
    except StreamlitAPIException:
        st.rerun()


def _to_image(frame):
    """An ``av.VideoFrame`` as an RGB picture (only when one is saved or predicted)."""
    return frame.to_image()


class _NoVideo:
    """What the page reads when there is no video component (see :func:`_streamer`)."""

    class state:  # noqa: N801 - mirrors WebRtcStreamerContext.state
        playing = False


def _real_server() -> bool:
    """False under ``streamlit.testing``'s AppTest, whose stand-in runtime has no browser sessions (the
    component needs them); the pages' headless tests then see the rest of the page."""
    from streamlit.runtime import Runtime

    return Runtime.exists() and type(Runtime.instance()) is Runtime


def _streamer(key: str, on_frame, media: dict = VIDEO):
    """The video (streamlit-webrtc) with ``on_frame`` called for every frame, in the component's thread."""
    if not _real_server():
        st.caption("(The live video shows here in a browser.)")
        return _NoVideo
    try:
        from streamlit_webrtc import WebRtcMode, webrtc_streamer
    except ImportError as err:
        st.warning(f"The camera needs the streamlit-webrtc package, which is missing or broken here ({err}). "
                   "Run `make install` again.", icon=":material/videocam_off:")
        return _NoVideo

    def callback(frame):   # the component's thread: an error here would stop the video, so it is only logged
        try:
            on_frame(frame)
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).exception("a camera frame could not be handled")
        return frame

    return webrtc_streamer(key=key, mode=WebRtcMode.SENDRECV, rtc_configuration=RTC_CONFIGURATION,
                           media_stream_constraints=media, video_frame_callback=callback, async_processing=True,
                           video_html_attrs=VIDEO_ATTRS, translations=WORDS)


def camera_session() -> CameraSession:
    """This browser session's camera (its folder, the newest frame, the burst), kept across reruns."""
    root = camera_data_dir(session_token())
    session = st.session_state.get("tl_camera")
    if session is None or session.root != root:
        session = CameraSession(root, to_image=_to_image)
        st.session_state["tl_camera"] = session
    from tl_core.app.classroom import limits

    session.pictures.max_pictures = limits().pictures   # a classroom's per-student limit (none on a laptop)
    return session


# -- the Data page ----------------------------------------------------------------------------------

def take_pictures() -> None:
    """"Take pictures with the camera": categories by name, one picture or a burst into the chosen one,
    counts, the last pictures with Remove and Undo. The folder becomes the data folder with the first
    picture."""
    cam = camera_session()
    st.caption("Make a category for each kind of thing, choose one, hold the thing in front of the camera and "
               "take pictures: one at a time, or a burst while you turn it around. 20 or more per category is a "
               "good start. The pictures are saved as JPEG files, one folder per category.")
    st.fragment(_camera_panel)(cam)


def _camera_panel(cam: CameraSession) -> None:
    """The video, the controls and the last pictures, as one fragment: a click here redraws only this part of
    the page (the checks below run again when the page is rerun: "Check these pictures")."""
    video, controls = st.columns([5, 6], gap="medium")
    with video:
        _streamer("data_camera", cam.on_frame)
    with controls:
        _picture_controls(cam)
    _last_pictures(cam)


def _use_camera_folder(cam: CameraSession) -> None:
    """The camera folder as this session's data folder (once: then the whole page checks it)."""
    state = ui()
    if state.data_root != str(cam.root):
        state.data_root, state.data_source = str(cam.root), "camera"
        save()
        st.session_state["tl_camera_switched"] = True


def _picture_controls(cam: CameraSession) -> None:
    pics = cam.pictures
    with st.form("camera_new_category", clear_on_submit=True, border=False):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        name = left.text_input("New category", placeholder="for example: cup", key="camera_new_name")
        added = right.form_submit_button("Add", icon=":material/add:", width="stretch")
    box = st.empty()   # this panel's message (a refusal stays until the next action)
    if added:
        with _remembered(CONTROLS_MSG, box):
            st.session_state["tl_camera_chosen"] = pics.add_category(name)
    else:
        _message(CONTROLS_MSG, box)
    counts = pics.counts()
    if not counts:
        st.info("No category yet: type a name above and click **Add**.", icon=":material/label:")
        return
    names = list(counts)
    chosen = st.session_state.get("tl_camera_chosen")
    if chosen not in counts:
        chosen = st.session_state["tl_camera_chosen"] = names[0]
    # the choice is kept apart from any widget state (a rerun of the whole page must not reset it): the radio is
    # drawn from it each time and only reports a click
    # (its words stay the same while pictures are taken, so a click on it is never lost to a redraw; the counts are
    # below, under "Pictures so far")
    chosen = st.radio("Take pictures of", names, index=names.index(chosen), horizontal=True)
    st.session_state["tl_camera_chosen"] = chosen
    if st.button("Take a picture", key="camera_snap", type="primary", icon=":material/photo_camera:",
                 width="stretch"):
        with _remembered(CONTROLS_MSG, box):
            cam.snap(chosen)
            _use_camera_folder(cam)
    a, b = st.columns(2)
    count = a.selectbox("Burst of", BURST_COUNTS, index=1, key="camera_burst_count",
                        format_func=lambda n: f"{n} pictures")
    rate = b.selectbox("Speed", BURST_RATES, index=1, key="camera_burst_rate",
                       format_func=lambda r: f"{r:g} a second")
    burst_box = st.empty()
    if not cam.burst.active and burst_box.button(
            f"Take {count} pictures ({count / rate:.0f} s)", key="camera_burst", icon=":material/burst_mode:",
            width="stretch", help="Pictures are taken at a steady speed from the video while you move the thing a "
                                  "little: different angles teach the model more than copies."):
        with _remembered(CONTROLS_MSG, box):
            if not cam.has_frame():
                raise CameraError("No picture from the camera yet: click Start the camera (and allow the "
                                  "camera when the browser asks), then try again.")
            cam.burst.start(chosen, count=int(count), per_second=float(rate))
            _use_camera_folder(cam)
    progress = st.empty()
    if cam.burst.active:
        # the camera's thread takes the pictures; this run shows how far it got until the burst is over (a click
        # on Stop, or anywhere, ends this run and starts the next)
        if burst_box.button("Stop the burst", key="camera_burst_stop", icon=":material/stop:", width="stretch"):
            cam.burst.stop()
        while cam.burst.active:
            status = cam.burst.status()
            progress.progress(status.saved / max(1, status.total), text=markdown_safe(status.words()))
            time.sleep(0.2)
        if st.session_state.pop("tl_camera_switched", False):
            st.rerun(scope="app")    # the camera folder is the data folder now: the page below checks it
        _redraw()                    # the counts, the last pictures and the burst button again
    status = cam.burst.status()
    if status.error:
        progress.error(markdown_safe(status.error), icon=":material/warning:")
    elif status.total:
        progress.progress(status.saved / status.total, text=markdown_safe(status.words()))
    if st.session_state.pop("tl_camera_switched", False):
        st.rerun(scope="app")    # the camera folder is the data folder now: the page below checks it
    if ui().data_root != str(cam.root) and sum(counts.values()):
        if st.button("Use the camera pictures", key="camera_use", icon=":material/photo_library:",
                     help="Make the pictures taken here the data folder (instead of the one chosen now)."):
            _use_camera_folder(cam)
            st.session_state.pop("tl_camera_switched", None)
            st.rerun(scope="app")


def _last_pictures(cam: CameraSession) -> None:
    """The counts, the last pictures, each with Remove (set aside, not deleted), and Undo for the last
    removal."""
    from tl_core.app.previews import display_picture
    from tl_core.data.images import load_image

    counts = cam.pictures.counts()
    if not counts:
        return
    box = st.empty()
    _message(PICTURES_MSG, box)
    st.markdown("**Pictures so far:** " + " · ".join(f"{markdown_safe(c)}: {n}" for c, n in counts.items()))
    recent = cam.pictures.recent(THUMBS)
    removed = cam.pictures.removed()
    if recent:
        st.caption("The last pictures, newest first. **Remove** puts one aside (next to the data folder, not "
                   "deleted); **Undo** brings it back.")
    cols = st.columns(THUMBS)
    for col, path in zip(cols, recent):
        with col:
            try:
                st.image(display_picture(load_image(path), 160), caption=markdown_safe(path.parent.name),
                         width="stretch")
            except Exception:  # noqa: BLE001 - a picture removed a moment ago by another tab
                st.caption("(gone)")
                continue
            if st.button("Remove", key=f"camera_rm_{path.parent.name}/{path.name}", width="stretch"):
                with _remembered(PICTURES_MSG, box):
                    cam.pictures.remove(path)
                    _redraw()
    if removed:
        last = removed[-1]
        words, button = st.columns([4, 1], vertical_alignment="center")
        more = f" ({len(removed)} set aside in all)" if len(removed) > 1 else ""
        words.caption(markdown_safe(f"{last.describe()}{more}."))
        if button.button("Undo", key=f"camera_undo_{last.id}", icon=":material/undo:", width="stretch"):
            with _remembered(PICTURES_MSG, box):
                cam.pictures.undo(last.id)
                _redraw()
    if ui().data_root == str(cam.root) and st.button(
            "Check these pictures", key="camera_check", icon=":material/fact_check:",
            help="Run the checks below on the pictures taken so far (copies, odd pictures, balance)."):
        st.rerun(scope="app")


# -- the Try page -------------------------------------------------------------------------------------

def live_predictions(loaded, run_dir: str) -> None:
    """The camera stream classified continuously by ``loaded`` (the run's model): the newest frame each
    time, the top categories as bars, "none of these" when it applies, and the predictions per second."""
    from tl_core.app.live_predict import LivePredictor

    if not loaded.novelty_ready():
        with st.spinner("Getting ready to say “none of these” (once for this model: it looks at the pictures it "
                        "learned from)…"):
            loaded.novelty()
    weights = Path(run_dir) / "model.safetensors"
    key = (str(run_dir), weights.stat().st_mtime if weights.is_file() else 0.0)
    held = st.session_state.get("tl_live")
    if held is None or held[0] != key:
        if held is not None:
            held[1].stop(wait=0)
        k = min(3, len(loaded.classes))
        held = (key, LivePredictor(lambda image: loaded.answer(image, k=k), slot=FrameSlot(to_image=_to_image)))
        st.session_state["tl_live"] = held
    predictor = held[1]
    st.caption("Hold something in front of the camera: the model answers the newest picture from the video, "
               "again and again, as fast as this computer allows.")
    video, answer = st.columns([5, 6], gap="medium")
    with video:
        ctx = _streamer("try_live_camera", predictor.offer, LIVE_VIDEO)
    playing = bool(ctx.state.playing)
    with answer:
        _live_answer(predictor, playing)


def _live_answer(predictor, playing: bool) -> None:
    @st.fragment(run_every=0.5 if playing else None)
    def panel() -> None:
        state = predictor.latest()
        if state.error:
            st.error(markdown_safe(state.error), icon=":material/warning:")
        result = state.answer
        if not playing and result is None:
            st.info("Click **Start the camera** under the video (and allow the camera when the browser asks).",
                    icon=":material/videocam:")
            return
        if result is None:
            st.info("Waiting for the first picture from the camera…", icon=":material/hourglass_top:")
            return
        top = result["top"]
        best = markdown_safe(top[0]["label"])
        if result.get("none_of_these"):
            st.warning(f"### None of these\nThis looks like none of the categories it learned (its best guess "
                       f"would be **{best}**, {top[0]['probability']:.0%}).", icon=":material/block:")
        elif result.get("unsure") and len(top) > 1:
            st.warning(f"### Not sure\n**{best}** or **{markdown_safe(top[1]['label'])}**?", icon=":material/help:")
        else:
            st.success(f"### {best}\n{top[0]['probability']:.0%} sure", icon=":material/check_circle:")
        for t in top:
            st.progress(min(1.0, max(0.0, float(t["probability"]))),
                        text=f"{markdown_safe(t['label'])} · {t['probability']:.0%}")
        st.caption(f"{state.per_second:.1f} predictions a second · {state.predicted} so far · the video brings "
                   f"{state.frames_per_second:.0f} frames a second"
                   + (f" · {state.dropped} skipped while the model was busy" if state.dropped else "")
                   + ("" if playing else " · camera stopped"))

    panel()
