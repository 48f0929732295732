#!/usr/bin/env python
"""Live camera predictions (issue 15): predictions per second of the Try page's live path vs a plain
batch-of-1 forward loop, side by side on the same model and machine.

* baseline: ``model(x)`` in a loop on one already-preprocessed 224x224 picture, with the process's
  default PyTorch threads (all cores), and again with 1 thread;
* live path: what the app runs: a fake camera thread offers 640x480 ``av.VideoFrame``s at 30 frames a
  second to :class:`tl_core.app.live_predict.LivePredictor` (the newest frame only, its own thread with
  half the cores' PyTorch threads: 1 on 2 cores), which converts the frame, preprocesses it and calls ``LoadedModel.answer`` (top 3,
  "none of these", "unsure"); its rate is counted over the measured seconds (and its rolling meter);
* the live path with the process's default threads, to show why the predictor uses one.

The model is ``tf_efficientnet_lite0`` (the recommended one) trained for 1 pass on the bundled sample with
its offline weights. The measurements alternate (baseline, live, ...) ``--reps`` times; medians are
reported with the load average, because other programs on a shared machine change them a lot.

    .venv/bin/python bench/live_camera.py              # ~2 minutes on 2 cores
    .venv/bin/python bench/live_camera.py --seconds 5  # quicker

Writes bench/out/live_camera.json and prints the rows for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import tl_core  # noqa: E402,F401 - before PyTorch, as in the app (it sets OpenMP's wait policy)
PETS = REPO.parent / "shared" / "datasets" / "pets" / "few" / "test"


def trained_run(out: Path) -> str:
    import tl_core
    from tl_core import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.data.sample import sample_dir

    result = tl_core.train(RunConfig(data=DataConfig(root=str(sample_dir())),
                                     model=ModelConfig("tf_efficientnet_lite0", weights="offline"),
                                     train=TrainConfig(epochs=1)), runs_dir=out / "runs")
    assert result.status == "finished", result.message
    return str(result.run_dir)


def camera_frames(n: int = 8):
    """640x480 video frames as the app receives them (``av.VideoFrame``, yuv420p like a WebRTC decoder gives)."""
    import av
    from PIL import Image

    files = sorted(p for p in PETS.rglob("*.jpg"))[:n] if PETS.is_dir() else []
    pictures = [Image.open(f).convert("RGB").resize((640, 480)) for f in files]
    if not pictures:   # no photos here: the sample's pictures, blown up
        from tl_core.data.sample import sample_dir

        pictures = [Image.open(f).convert("RGB").resize((640, 480)) for f in sorted(sample_dir().rglob("*.png"))[:n]]
    return [av.VideoFrame.from_image(p).reformat(format="yuv420p") for p in pictures]


def forward_loop(loaded, picture, seconds: float, threads: int | None) -> dict:
    """The plain loop, in a fresh thread (so its thread setting is its own)."""
    import torch

    from tl_core.app.live_predict import threads_for_this_thread

    out = {}

    def work():
        if threads:
            threads_for_this_thread(threads)
        x = loaded.preprocessing.to_input([picture], loaded.device)
        with torch.inference_mode():
            for _ in range(3):
                loaded.model(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                loaded.model(x)
                n += 1
        out["per_second"] = n / (time.perf_counter() - start)
        out["threads"] = torch.get_num_threads()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out


def live_path(loaded, frames, seconds: float, threads: int | None) -> dict:
    from tl_core.app.camera import FrameSlot
    from tl_core.app.live_predict import LivePredictor

    predictor = LivePredictor(lambda image: loaded.answer(image, k=3), slot=FrameSlot(to_image=lambda f: f.to_image()),
                              threads=threads)   # "auto": as the app (half the cores); None: the process's setting
    stop = threading.Event()

    def camera():   # 30 frames a second, whatever the predictor does
        i = 0
        while not stop.is_set():
            predictor.offer(frames[i % len(frames)])
            i += 1
            stop.wait(1 / 30)

    cam = threading.Thread(target=camera)
    cam.start()
    while predictor.latest().predicted < 3:   # warm-up (the thread's first passes)
        time.sleep(0.05)
    first = predictor.latest().predicted
    start = time.perf_counter()
    time.sleep(seconds)
    state = predictor.latest()
    elapsed = time.perf_counter() - start
    stop.set()
    cam.join()
    predictor.stop()
    return {"per_second": (state.predicted - first) / elapsed, "rolling": state.per_second,
            "seconds_each": state.seconds_each, "dropped": state.dropped, "predicted": state.predicted}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--run", default=None, help="a run folder to use instead of training one")
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = ap.parse_args()

    import torch

    from tl_core.app.live_predict import live_threads
    from tl_core.results.inference import load_run_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("TL_CACHE_DIR", str(Path(tmp) / "cache"))
        run = args.run or trained_run(Path(tmp))
        loaded = load_run_model(run)
        loaded.novelty()
        frames = camera_frames()
        picture = frames[0].to_image()
        results: dict[str, list[dict]] = {"forward_default": [], "forward_1": [], "live": [], "live_default": []}
        load_before = os.getloadavg()
        for _ in range(args.reps):
            results["forward_default"].append(forward_loop(loaded, picture, args.seconds, None))
            results["live"].append(live_path(loaded, frames, args.seconds, "auto"))
            results["forward_1"].append(forward_loop(loaded, picture, args.seconds, 1))
            results["live_default"].append(live_path(loaded, frames, args.seconds, None))
        load_after = os.getloadavg()
    med = {k: statistics.median(r["per_second"] for r in v) for k, v in results.items()}
    summary = {"medians": med, "raw": results, "load_before": load_before, "load_after": load_after,
               "cpu_cores": os.cpu_count(), "torch": torch.__version__, "default_threads": torch.get_num_threads(),
               "seconds": args.seconds, "reps": args.reps, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "live_camera.json").write_text(json.dumps(summary, indent=2))
    each = statistics.median(r["seconds_each"] for r in results["live"])
    print(f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores")
    print(f"| Live camera (issue 15): predictions/s of the Try page's live path (640x480 frames at 30/s, newest only, "
          f"{live_threads()} PyTorch thread(s); convert + preprocess + answer with none-of-these) / a plain batch-of-1 `model(x)` loop "
          f"(default {torch.get_num_threads()} threads) | {med['live']:.1f} / {med['forward_default']:.1f} | "
          f"{med['live'] / med['forward_default']:.2f}x | live >= 5/s | {'PASS' if med['live'] >= 5 else 'FAIL'} |")
    print(f"| Live camera: the same loop with 1 thread; the live path with the default threads (why it uses one) | "
          f"{med['forward_1']:.1f}; {med['live_default']:.1f} |  | (info) |  |")
    print(f"| Live camera: one live prediction takes (median) | {each * 1000:.0f} ms |  | (info) |  |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
