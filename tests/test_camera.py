"""The camera's pictures and live predictions, headless (issue 15): categories by name, single
pictures and bursts (timed on an injected clock, never the wall clock), counts, removal with undo,
plain refusals, and the live predictor that answers the newest frame only. Real photos from
shared/datasets/pets; one test trains a tiny model on pictures "taken" here and predicts live with it.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tl_core.app.camera import (Burst, CameraError, CameraPictures, CameraSession, FrameSlot, camera_data_dir,
                                clean_category_name)
from tl_core.app.live_predict import LivePredictor, RateMeter, threads_for_this_thread

PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets" / "few"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def pet_photos(label: str, n: int, split: str = "train") -> list[Image.Image]:
    if not PETS.is_dir():
        pytest.skip(f"the pets photos are not at {PETS}")
    files = sorted((PETS / split / label).iterdir())[:n]
    return [Image.open(f).convert("RGB") for f in files]


@pytest.fixture()
def cats() -> list[Image.Image]:
    return pet_photos("cat", 6)


# -- where and what -----------------------------------------------------------------------------------

def test_camera_folder_is_in_the_sessions_part_of_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "ws"))
    assert camera_data_dir("abcdef123") == tmp_path / "ws" / "sessions" / "abcdef123" / "camera"
    with pytest.raises(ValueError):
        camera_data_dir("../../etc")


@pytest.mark.parametrize("name, words", [
    ("", "Type a name"), ("   ", "Type a name"), ("../x", "cannot be a category name"),
    ("a/b", "cannot be a category name"), ("a\\b", "cannot be a category name"), ("..", "cannot be a category name"),
    (".hidden", "cannot be a category name"), ("x" * 61, "under 60 characters"), ("train", "choose another name"),
    ("Val", "choose another name"), ("Cup", "already a category called 'cup'"),
])
def test_camera_category_name_refused_in_plain_words(name, words):
    with pytest.raises(CameraError, match=words.replace("(", r"\(")):
        clean_category_name(name, ["cup"])


def test_camera_category_name_accepted_trimmed():
    assert clean_category_name("  thumbs up ", ["cup"]) == "thumbs up"
    assert clean_category_name("Café", []) == "Café"


def test_camera_add_category_makes_folder_and_refuses_duplicates(tmp_path):
    pics = CameraPictures(tmp_path / "camera")
    assert pics.categories() == [] and pics.counts() == {}
    assert pics.add_category("mug") == "mug"
    assert pics.add_category("pen") == "pen"
    assert (tmp_path / "camera" / "mug").is_dir()
    assert pics.counts() == {"mug": 0, "pen": 0}
    with pytest.raises(CameraError, match="already a category called 'mug'"):
        pics.add_category("MUG")
    (tmp_path / "camera" / "notes").write_text("a file, not a folder")
    with pytest.raises(CameraError, match="already something called 'notes'"):
        pics.add_category("notes")


# -- single pictures ------------------------------------------------------------------------------------

def test_camera_snap_saves_a_jpeg_into_the_category_and_counts(tmp_path, cats):
    session = CameraSession(tmp_path / "camera")
    session.pictures.add_category("cat")
    session.on_frame(cats[0])
    path = session.snap("cat")
    assert path.parent == tmp_path / "camera" / "cat" and path.suffix == ".jpg"
    with Image.open(path) as saved:
        assert saved.format == "JPEG" and saved.size == cats[0].size
    session.on_frame(cats[1])
    second = session.snap("cat")
    assert second != path
    assert session.pictures.counts() == {"cat": 2}
    assert session.pictures.recent(5) == [second, path]          # newest first
    assert not list((tmp_path / "camera" / "cat").glob(".*"))    # no half-written temporary file left


def test_camera_snap_without_a_frame_or_category_says_what_to_do(tmp_path, cats):
    session = CameraSession(tmp_path / "camera")
    with pytest.raises(CameraError, match="Make a category first"):
        session.snap(None)
    session.pictures.add_category("cat")
    with pytest.raises(CameraError, match="No picture from the camera yet: click Start"):
        session.snap("cat")
    session.on_frame(cats[0])
    with pytest.raises(CameraError, match="no category 'dog'"):
        session.snap("dog")


def test_camera_snap_refuses_a_camera_that_stopped(tmp_path, cats):
    clock = Clock()
    session = CameraSession(tmp_path / "camera", clock=clock)
    session.pictures.add_category("cat")
    session.on_frame(cats[0])
    clock.advance(30)
    with pytest.raises(CameraError, match="stopped sending pictures"):
        session.snap("cat")


def test_camera_frames_are_converted_only_when_used(tmp_path, cats):
    converted = []

    def to_image(frame):
        converted.append(frame)
        return cats[frame]

    session = CameraSession(tmp_path / "camera", to_image=to_image)
    session.pictures.add_category("cat")
    for i in range(5):   # a camera sending frames while nobody takes a picture costs no conversion
        session.on_frame(i)
    assert converted == []
    session.snap("cat")
    assert converted == [4]


def test_camera_refuses_pictures_over_a_classroom_limit(tmp_path, cats):
    clock = Clock()
    session = CameraSession(tmp_path / "camera", clock=clock)
    session.pictures.max_pictures = 3
    session.pictures.add_category("cat")
    session.on_frame(cats[0])
    for _ in range(3):
        session.snap("cat")
    with pytest.raises(CameraError, match="at most 3. Remove some"):
        session.snap("cat")
    session.burst.start("cat", count=5, per_second=2)    # a burst stops at the limit, saying why
    session.on_frame(cats[1])
    status = session.burst.status()
    assert not status.active and status.saved == 0 and "at most 3" in status.words()
    assert session.pictures.counts() == {"cat": 3}


# -- bursts -------------------------------------------------------------------------------------------

def feed(session: CameraSession, clock: Clock, frames: list[Image.Image], seconds: float, fps: float) -> None:
    """The camera sends a new frame every 1/fps seconds for ``seconds``."""
    n = int(round(seconds * fps))
    for i in range(n):
        session.on_frame(frames[i % len(frames)])
        clock.advance(1.0 / fps)


def test_camera_burst_takes_count_pictures_at_the_rate(tmp_path, cats):
    clock = Clock()
    session = CameraSession(tmp_path / "camera", clock=clock)
    session.pictures.add_category("cat")
    session.burst.start("cat", count=6, per_second=3.0)
    taken_at = []
    for i in range(30 * 4):   # 4 seconds of a 30 fps camera
        before = session.burst.status().saved
        session.on_frame(cats[i % len(cats)])
        if session.burst.status().saved > before:
            taken_at.append(clock())
        clock.advance(1 / 30)
    assert len(taken_at) == 6
    gaps = [b - a for a, b in zip(taken_at, taken_at[1:])]
    assert all(abs(g - 1 / 3) < 1 / 30 + 1e-9 for g in gaps), gaps      # a steady 3 a second, to a frame
    status = session.burst.status()
    assert not status.active and status.saved == 6 and status.words() == "Took 6 pictures of 'cat'."
    assert session.pictures.counts() == {"cat": 6}


def test_camera_burst_never_saves_one_frame_twice(tmp_path, cats):
    """A slow camera (1 frame a second) and a fast burst (5 a second): one picture per new frame."""
    clock = Clock()
    session = CameraSession(tmp_path / "camera", clock=clock)
    session.pictures.add_category("cat")
    session.burst.start("cat", count=10, per_second=5.0)
    for i in range(4):
        session.on_frame(cats[i])
        for _ in range(10):     # the burst is asked many times between frames
            clock.advance(0.1)
            session.burst.tick(session.slot)
    assert session.burst.status().saved == 4 and session.burst.active


def test_camera_burst_late_does_not_rush_to_catch_up(tmp_path, cats):
    clock = Clock()
    session = CameraSession(tmp_path / "camera", clock=clock)
    session.pictures.add_category("cat")
    session.burst.start("cat", count=10, per_second=2.0)
    session.on_frame(cats[0])                 # t=0: first picture
    clock.advance(3.0)                        # the computer was busy for 3 s (6 pictures "late")
    session.on_frame(cats[1])                 # one picture now, and the next one interval later
    for i in range(5):
        clock.advance(0.1)
        session.on_frame(cats[2 + i % 4])
    assert session.burst.status().saved == 2
    clock.advance(0.1)
    session.on_frame(cats[0])                 # 0.6 s after the late one
    assert session.burst.status().saved == 3


def test_camera_burst_refuses_bad_numbers_and_stops_on_a_vanished_category(tmp_path, cats):
    clock = Clock()
    session = CameraSession(tmp_path / "camera", clock=clock)
    with pytest.raises(CameraError, match="Make a category first"):
        session.burst.start(None)
    session.pictures.add_category("cat")
    for count, rate, words in ((0, 2.0, "1 to 100 pictures"), (500, 2.0, "1 to 100 pictures"),
                               (5, 0.0, "0.2 to 10 pictures a second"), (5, 60, "0.2 to 10 pictures a second")):
        with pytest.raises(CameraError, match=words):
            session.burst.start("cat", count=count, per_second=rate)
    session.burst.start("cat", count=5, per_second=2)
    (tmp_path / "camera" / "cat").rename(tmp_path / "camera" / "kitten")   # renamed outside the app
    session.on_frame(cats[0])
    status = session.burst.status()
    assert not status.active and "no category 'cat'" in status.words()


def test_camera_burst_from_the_camera_thread_while_the_page_snaps(tmp_path, cats):
    """The camera's thread runs the burst while the page takes single pictures: no name clash, all saved."""
    session = CameraSession(tmp_path / "camera")
    session.pictures.add_category("cat")
    session.on_frame(cats[0])
    session.burst.start("cat", count=8, per_second=10.0)
    stop = threading.Event()

    def camera():
        i = 0
        while not stop.is_set():
            session.on_frame(cats[i % len(cats)])
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=camera)
    t.start()
    try:
        snaps = [session.snap("cat") for _ in range(5)]
        deadline = time.monotonic() + 20
        while session.burst.active and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join()
    assert session.burst.status().saved == 8
    assert len(set(snaps)) == 5 and session.pictures.counts() == {"cat": 13}


# -- removing with an undo -----------------------------------------------------------------------------

def test_camera_remove_sets_aside_and_undo_puts_back(tmp_path, cats):
    session = CameraSession(tmp_path / "camera")
    session.pictures.add_category("cat")
    paths = []
    for im in cats[:3]:
        session.on_frame(im)
        paths.append(session.snap("cat"))
    fix = session.pictures.remove(paths[1])       # one category only: still removable
    assert not paths[1].exists()
    assert (tmp_path / "camera-set-aside" / "cat" / paths[1].name).is_file()   # nothing deleted
    assert session.pictures.counts() == {"cat": 2}
    assert [f.id for f in session.pictures.removed()] == [fix.id]
    assert paths[1] not in session.pictures.recent(8)
    session.pictures.undo(fix.id)
    assert paths[1].is_file() and session.pictures.counts() == {"cat": 3}
    assert session.pictures.removed() == []


def test_camera_remove_refuses_what_is_not_its_picture(tmp_path, cats):
    pics = CameraPictures(tmp_path / "camera")
    pics.add_category("cat")
    outside = tmp_path / "elsewhere.jpg"
    cats[0].save(outside)
    pics.save("cat", cats[1])
    with pytest.raises(CameraError.__mro__[1], match="not inside the data folder"):
        pics.remove(outside)


def test_camera_folder_is_an_ordinary_data_folder(tmp_path):
    """Two categories taken with the camera scan like any folder: categories, counts, no problems."""
    from tl_core.data.scan import scan_folder

    session = CameraSession(tmp_path / "camera")
    for label in ("cat", "dog"):
        session.pictures.add_category(label)
        for im in pet_photos(label, 4):
            session.on_frame(im)
            session.snap(label)
    scan = scan_folder(session.root)
    assert list(scan.classes) == ["cat", "dog"] and scan.counts() == {"cat": 4, "dog": 4}
    assert {p.kind for p in scan.problems} <= {"too_few_images"}


# -- live predictions ----------------------------------------------------------------------------------

def test_camera_rate_meter_rolling_per_second():
    clock = Clock(0.0)
    meter = RateMeter(window=3.0, clock=clock)
    assert meter.rate() == 0.0
    for _ in range(5):                       # 5 a second for the first second: said as 5, not 5/3
        meter.add()
        clock.advance(0.2)
    assert meter.rate() == pytest.approx(5.0)
    for _ in range(40):                      # then 10 a second, for longer than the window
        meter.add()
        clock.advance(0.1)
    assert meter.rate() == pytest.approx(10.0, rel=0.05)
    clock.advance(5.0)                       # the camera stopped: no rate left
    assert meter.rate() == 0.0


def test_camera_live_predictor_answers_the_newest_frame_and_drops_the_rest(cats):
    clock = Clock()
    seen = []

    def predict(image):
        seen.append(image)
        clock.advance(0.1)                   # the model takes 0.1 s
        return {"label": "cat", "probability": 0.9, "top": [], "none_of_these": False, "unsure": False}

    live = LivePredictor(predict, max_per_second=100, clock=clock)
    assert live.step() is False              # no frame yet: nothing to do
    for im in cats[:4]:                      # four frames arrive while the model is busy
        live.slot.put(im)
    assert live.step() is True
    assert seen == [cats[3]]                 # only the newest one
    assert live.step() is False              # nothing new: no repeat of an old frame
    state = live.latest()
    assert state.predicted == 1 and state.dropped == 3 and state.frame == 4
    assert state.answer["label"] == "cat"


def test_camera_live_predictor_keeps_under_its_ceiling(cats):
    clock = Clock()
    calls = []
    live = LivePredictor(lambda im: calls.append(clock()) or {"label": "x"}, max_per_second=5, clock=clock)
    for _ in range(100):                     # a 50 fps camera for 2 s, a model that takes no time
        live.slot.put(cats[0])
        live.step()
        clock.advance(0.02)
    assert 9 <= len(calls) <= 11             # 5 a second
    assert live.latest().per_second == pytest.approx(5.0, rel=0.1)


def test_camera_live_predictor_says_why_when_the_model_fails(cats):
    from tl_core.errors import RunError

    def broken(image):
        raise RunError("Model x gave no usable answer.")

    live = LivePredictor(broken, max_per_second=100, clock=Clock())
    live.slot.put(cats[0])
    live.step()
    state = live.latest()
    assert state.error == "Model x gave no usable answer." and state.answer is None and state.predicted == 0


def test_camera_threads_for_this_thread_leaves_the_others_alone():
    import torch

    before = torch.get_num_threads()
    inside = []

    def work():
        threads_for_this_thread(1)
        inside.append(torch.get_num_threads())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    others = []
    t2 = threading.Thread(target=lambda: others.append(torch.get_num_threads()))
    t2.start()
    t2.join()
    assert inside == [1] and torch.get_num_threads() == before and others == [before]


@pytest.fixture(scope="module")
def camera_run(tmp_path_factory) -> Path:
    """Bursts of real photos into two categories with the camera's classes, then a tiny training on that folder
    (64 px, 2 passes, the offline weights): the run the live tests predict with."""
    import tl_core
    from tl_core import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig

    tmp = tmp_path_factory.mktemp("camera-run")
    session = CameraSession(tmp / "camera")
    for label in ("cat", "dog"):
        session.pictures.add_category(label)
        photos = pet_photos(label, 12)
        for im in photos[:2]:
            session.on_frame(im)
            session.snap(label)
        session.burst.start(label, count=10, per_second=5.0)
        deadline = time.monotonic() + 30
        i = 2
        while session.burst.active and time.monotonic() < deadline:
            session.on_frame(photos[i % len(photos)])
            i += 1
            time.sleep(0.05)
        assert session.burst.status().saved == 10
    assert session.pictures.counts() == {"cat": 12, "dog": 12}
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's per-test folders
        mp.setenv("TL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tl-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = tl_core.train(RunConfig(data=DataConfig(root=str(session.root)),
                                         model=ModelConfig("tf_efficientnet_lite0", weights="offline", image_size=64),
                                         freeze=FreezeConfig("head"), train=TrainConfig(epochs=2)),
                               runs_dir=tmp / "runs")
    assert result.status == "finished", result.message
    return Path(result.run_dir)


def test_camera_take_pictures_train_and_predict_live(camera_run):
    """The whole camera story headless: pictures taken (the fixture), a training on that folder, then the
    live predictor thread answering a stream of frames with the trained model."""
    from tl_core.results.inference import load_run_model

    loaded = load_run_model(camera_run)
    loaded.novelty()
    live = LivePredictor(lambda im: loaded.answer(im, k=2), max_per_second=20)
    frames = pet_photos("cat", 3, split="test") + pet_photos("dog", 3, split="test")
    deadline = time.monotonic() + 30
    i = 0
    while live.latest().predicted < 5 and time.monotonic() < deadline:
        live.offer(frames[i % len(frames)])
        i += 1
        time.sleep(0.03)
    state = live.latest()
    live.stop()
    assert state.predicted >= 5 and state.error is None and state.running
    assert state.answer["label"] in ("cat", "dog") and len(state.answer["top"]) == 2
    assert state.answer["none_of_these"] in (True, False) and state.per_second > 0


def test_camera_live_mode_on_the_try_page(camera_run, monkeypatch, tmp_path, cats):
    """Try & export, Live camera, headless: the live answer drawn from the predictor the page keeps (the frames
    come from the test here: the video itself needs a browser)."""
    import av
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TL_RUNS_DIR", str(camera_run.parent))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.query_params["session"] = "camera-try"
    at.switch_page("pages/6_Try_and_export.py")
    at.run()
    at.radio(key="try_source").set_value("Live camera").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Start the camera" in i.value for i in at.info)
    predictor = at.session_state["tl_live"][1]
    deadline = time.monotonic() + 30
    while predictor.latest().predicted < 2 and time.monotonic() < deadline:
        predictor.offer(av.VideoFrame.from_image(cats[0]))   # as streamlit-webrtc hands frames over
        time.sleep(0.05)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    words = [s.value for s in at.success] + [w.value for w in at.warning]
    assert any(w.startswith("### ") for w in words), words            # the answer: a category, None of these, Not sure
    bars = [p.value for p in at.get("progress")]
    assert len(bars) == 2, bars                                         # the top categories as bars
    assert any("predictions a second" in c.value for c in at.caption)
    predictor.stop()


def test_camera_live_predictor_counts_the_video_frames(cats):
    clock = Clock()
    live = LivePredictor(lambda im: {"label": "x"}, clock=clock, threads=None)
    try:
        for _ in range(40):                   # a 10 fps camera for 4 s
            live.offer(cats[0])
            clock.advance(0.1)
        assert live.latest().frames_per_second == pytest.approx(10.0, rel=0.05)
    finally:
        live.stop()


# -- the Data page's Camera tab, headless (the video itself needs a browser: tests/test_browser_camera.py) ---

def test_camera_tab_on_the_data_page(tmp_path, monkeypatch, cats):
    import json

    import av
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.query_params["session"] = "camera-apptest"
    at.switch_page("pages/1_Data.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    def add(name: str) -> None:
        at.text_input(key="camera_new_name").input(name)
        next(b for b in at.button if b.label == "Add").click()
        at.run()

    def button(label: str):
        return next(b for b in at.button if b.label == label or b.label.startswith(label))

    add("cup")
    add("../x")
    assert any("cannot be a category name" in e.value for e in at.error)
    add("pen")
    assert any("Take pictures of" == r.label for r in at.radio)
    button("Take a picture").click()
    at.run()
    assert any("No picture from the camera yet" in e.value for e in at.error)

    cam = at.session_state["tl_camera"]
    folder = tmp_path / "workspace" / "sessions" / "camera-apptest" / "camera"
    assert cam.root == folder
    cam.on_frame(av.VideoFrame.from_image(cats[0]))     # a frame as streamlit-webrtc hands it over
    next(r for r in at.radio if r.label == "Take pictures of").set_value("cup")
    button("Take a picture").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(list((folder / "cup").glob("*.jpg"))) == 1
    state = json.loads((folder.parent / "ui_state.json").read_text())
    assert state["data_root"] == str(folder) and state["data_source"] == "camera"   # the camera folder is the data
    assert any("Pictures so far" in m.value and "cup: 1" in m.value for m in at.markdown)

    at.run()   # (the first picture made the folder the data folder and the page redrew itself: st.rerun(),
    #            which AppTest leaves to the next run)
    button("Remove").click()
    at.run()
    at.run()   # (the page redraws itself after a removal: st.rerun(), which AppTest leaves to the next run)
    assert not list((folder / "cup").glob("*.jpg"))
    assert any("Set aside" in c.value for c in at.caption), [c.value for c in at.caption]
    at.run()
    button("Undo").click()
    at.run()
    assert len(list((folder / "cup").glob("*.jpg"))) == 1


def test_camera_video_asks_no_server_elsewhere():
    """Offline: the WebRTC configuration the pages give streamlit-webrtc names no STUN/TURN server, and neither
    the library (it fills in public servers when none are set) nor aiortc (Google's STUN by default) adds one."""
    from aiortc.rtcicetransport import RTCIceGatherer
    from streamlit_webrtc.component import enhance_frontend_rtc_configuration
    from streamlit_webrtc.config import compile_rtc_configuration

    from tl_core.app.camera import RTC_CONFIGURATION

    assert RTC_CONFIGURATION == {"iceServers": []}
    assert enhance_frontend_rtc_configuration(RTC_CONFIGURATION)["iceServers"] == []    # what the browser gets
    server = compile_rtc_configuration(RTC_CONFIGURATION)                               # what aiortc gets
    assert server.iceServers == []
    gatherer = RTCIceGatherer(iceServers=server.iceServers)    # how aiortc's peer connection gathers addresses
    assert gatherer._connection.stun_server is None and gatherer._connection.turn_server is None
    assert RTCIceGatherer()._connection.stun_server is not None  # (the default it would use: public STUN)
