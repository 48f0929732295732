#!/usr/bin/env python
"""Transfer Lab speed benchmark: the classic PyTorch recipe and ``tl train``, side by side.

One invocation builds the data once (Fashion-MNIST from Debian's ``dataset-fashion-mnist``) and
runs every measurement as a fresh subprocess, one after another, on the same machine:

  (a) classic recipe, head only, E epochs, 400 training images   (bench/classic_recipe.py)
  (b) ``tl train --freeze head``, same folder, empty feature cache
  (c) the same ``tl train`` again, warm feature cache
  (d) the floor: one inference forward pass over the 400 training images  (bench/probes.py floor)
  (e) ``last:1``: classic with the last layer group trainable vs ``tl train --freeze last:1``
  (f) ``none``: ``tl train --freeze none`` images/sec vs a synthetic in-memory training loop
  (g) peak resident memory of ``tl train --freeze head`` on 3,000 training images at 224 px
  (j) the Lab: ``tl lab data-size`` (4 shares x 3 picks = 12 runs) vs one ``tl train --freeze head``, and
      ``tl lab models`` (the 3 offline-ready models) vs one feature pass per model, all on the same folder

Wall times are measured here, from ``Popen`` to the child's exit, so they include interpreter
start-up and imports. Peak memory is the child's ``ru_maxrss`` from ``os.wait4`` (exact, per
child; for a process with children, such as the classic recipe's DataLoader workers, it is the
largest single process) and, as a cross-check, the sum of RSS over the child's process tree
(polled every 0.1 s).

    .venv/bin/python bench/run_bench.py            # full run, ~15 minutes on 2 cores
    .venv/bin/python bench/run_bench.py --quick    # smoke version, ~3 minutes

Raw results go to bench/out/results.json, the table to stdout and bench/out/results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PY = sys.executable
MODEL = "tf_efficientnet_lite0"

# none: 200 images -> tl trains on 160 (5 steps of 32 per epoch). One epoch is only ~10 s on two
# cores; the first NONE_WARMUP_EPOCHS epochs of any process run up to 2x slower (oneDNN primitive
# creation, allocator growth) in tl and in the synthetic loop alike, and back-to-back runs of the same
# loop differ by up to 25%. So tl and the synthetic loop run alternately (none_reps times each) and
# the medians of the epochs after the warm-up are compared.
NONE_WARMUP_EPOCHS = 2
FULL = {"train_per_class": 40, "test_per_class": 100, "head_epochs": 10, "last_epochs": 3,
        "none_per_class": 20, "none_epochs": 5, "none_reps": 2, "mem_per_class": 300, "mem_epochs": 10}
QUICK = {"train_per_class": 10, "test_per_class": 20, "head_epochs": 2, "last_epochs": 1,
         "none_per_class": 10, "none_epochs": 2, "none_reps": 1, "mem_per_class": 30, "mem_epochs": 2}
SECTIONS = ("head", "last1", "none", "mem", "estimate", "gpu", "lab")
# lab (issue 14): the data-size experiment must cost at most 2.5x one ordinary head run on the same data
# (its 12 runs share one feature pass), and the models experiment at most one feature pass per model
# plus seconds: LAB_EXTRA_PER_MODEL is the "seconds" (model, weights, check, decoding, epochs, saving).
LAB_MODELS = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
# estimate: `tl estimate` (fresh cache, no earlier runs) vs the real `tl train` that follows, for
# the 400- and 3,000-image sets with 'head' and 'last:1', then `tl estimate` again (corrected by
# that one run). The target is the issue's: within 1.5x either way.
ESTIMATE_CASES = (("train", "head", 10), ("mem", "head", 10), ("train", "last:1", 3), ("mem", "last:1", 3))
# gpu: tl train (AMP, channels_last, data on the GPU) vs the synthetic loop for each model, on the
# 3,000-image 224 px set. resnet50 has no offline weights, so it trains with the 'scratch' preset
# (random weights, every layer trains: the same work per step as 'none').
GPU_MODELS = (("tf_efficientnet_lite0", "none", "offline"), ("resnet50", "scratch", "none"))
GPU_EPOCHS = {"full": 4, "quick": 2}

TARGETS = {"head_speedup": 5.0, "head_floor_ratio": 1.5, "warm_speedup": 20.0, "last_epoch_speedup": 3.0,
           "none_throughput_ratio": 0.85, "mem_peak_gb": 3.0, "estimate_within": 1.5, "lab_data_size_ratio": 2.5,
           "lab_extra_per_model": 10.0}


# -- machine ------------------------------------------------------------------------------------

def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import timm
    import torch
    import torchvision
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "physical_cores": psutil.cpu_count(logical=False), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": torch.cuda.is_available() and torch.cuda.get_device_name(0) or None,
            "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "torch_threads_default": torch.get_num_threads(), "platform": platform.platform()}


def wait_for_quiet(max_load: float, max_wait: float) -> dict:
    t0 = time.time()
    seen = []
    while True:
        la = loadavg()
        seen.append(la[0])
        if la[0] < max_load:
            return {"waited_seconds": time.time() - t0, "quiet": True, "loadavg": la}
        if time.time() - t0 > max_wait:
            return {"waited_seconds": time.time() - t0, "quiet": False, "loadavg": la, "max_seen": max(seen)}
        print(f"  waiting for a quiet machine: 1-min load {la[0]:.2f} >= {max_load}", flush=True)
        time.sleep(30)


# -- one measured child process -----------------------------------------------------------------

def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def run_child(label: str, cmd: list[str], env: dict, logs: Path) -> dict:
    """Run ``cmd``; wall time, exit code, exact peak RSS (wait4) and polled tree RSS."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{label}.out", logs / f"{label}.err"
    la_before = loadavg()
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {' '.join(cmd[1:])}  (load {la_before[0]:.2f})", flush=True)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        popen = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        peak = {"tree_rss": 0}
        done = threading.Event()

        def poll() -> None:
            try:
                proc = psutil.Process(popen.pid)
                while not done.is_set():
                    peak["tree_rss"] = max(peak["tree_rss"], _tree_rss(proc))
                    done.wait(0.1)
            except psutil.Error:
                pass

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(popen.pid, 0)   # this child's own rusage, not all children's
        wall = time.perf_counter() - t0
        done.set()
        poller.join()
        popen.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    result = {"label": label, "cmd": cmd, "wall_seconds": wall, "returncode": popen.returncode,
              "maxrss_bytes": usage.ru_maxrss * 1024, "tree_rss_peak_bytes": peak["tree_rss"],
              "cpu_seconds": usage.ru_utime + usage.ru_stime, "loadavg_before": la_before, "loadavg_after": loadavg(),
              "json": None}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result["json"] = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if popen.returncode != 0:
        result["stderr_tail"] = err_path.read_text(errors="replace")[-2000:]
        print(f"  !! {label} exited with {popen.returncode}:\n{result['stderr_tail']}", flush=True)
    else:
        print(f"  {label}: {wall:.1f}s wall, peak RSS {result['maxrss_bytes'] / 2**20:.0f} MiB", flush=True)
    return result


# -- tl helpers ---------------------------------------------------------------------------------

def tl_train_cmd(data: Path, preset: str, epochs: int, runs: Path, model: str = MODEL,
                 weights: str = "offline") -> list[str]:
    # --patience 0: no early stopping, so tl runs exactly the epochs the classic recipe runs
    return [PY, "-m", "tl_core", "train", str(data), "--model", model, "--freeze", preset, "--epochs", str(epochs),
            "--weights", weights, "--patience", "0", "--seed", "0", "--runs-dir", str(runs)]


def read_events(run_dir: str) -> dict:
    events = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    info = next((e["info"] for e in events if e["event"] == "on_fit_start"), {})
    epochs = [e["logs"] for e in events if e["event"] == "on_epoch_end"]
    prep = [e for e in events if e["event"] == "on_prepare"]
    first_decode = next((e["time"] for e in prep if e["stage"] == "decode"), None)
    last_feat = next((e["time"] for e in reversed(prep) if e["stage"] == "features"), None)
    return {"info": info, "epochs": epochs,
            "mode": info.get("mode"), "feature_cache_hit": info.get("feature_cache_hit"),
            "prepare_seconds": info.get("prepare_seconds"), "train_images": info.get("train_images"),
            "val_images": info.get("val_images"), "steps_per_epoch": info.get("steps_per_epoch"),
            "batch_size": info.get("batch_size"),
            "epoch_seconds": [e["epoch_seconds"] for e in epochs],
            "images_per_sec": [e["images_per_sec"] for e in epochs],
            "val_accuracy": [e["val_accuracy"] for e in epochs],
            # approximate (events are throttled to one per 0.5 s): first decode -> last feature batch
            "decode_and_features_seconds_approx": (last_feat - first_decode) if first_decode and last_feat else None}


def tl_run(label: str, data: Path, preset: str, epochs: int, out: Path, env: dict, model: str = MODEL,
           weights: str = "offline") -> dict:
    r = run_child(label, tl_train_cmd(data, preset, epochs, out / "runs", model, weights), env, out / "logs")
    if r["returncode"] == 0 and r["json"] and r["json"].get("run_dir"):
        r["events"] = read_events(r["json"]["run_dir"])
    return r


def tl_test_accuracy(run_dir: str, test_dir: Path, out: Path, env: dict, label: str) -> dict:
    """``tl evaluate RUN TEST``; falls back to load_run_model + predict when evaluate fails."""
    r = run_child(label, [PY, "-m", "tl_core", "evaluate", run_dir, str(test_dir)], env, out / "logs")
    j = r.get("json") or {}
    if r["returncode"] == 0 and isinstance(j.get("accuracy"), (int, float)):
        return {"accuracy": float(j["accuracy"]), "n": j.get("n"), "via": "tl evaluate",
                "balanced_accuracy": j.get("balanced_accuracy"), "wall_seconds": r["wall_seconds"]}
    r2 = run_child(label + "-fallback", [PY, str(BENCH / "probes.py"), "testacc", run_dir, str(test_dir)], env,
                   out / "logs")
    j2 = r2.get("json") or {}
    return {"accuracy": j2.get("accuracy"), "n": j2.get("n"), "via": "load_run_model (tl evaluate failed)",
            "wall_seconds": r2["wall_seconds"]}


def fresh_cache(out: Path, name: str) -> Path:
    """An empty TL cache with only the converted offline weights (a one-time install step, shared
    by both recipes and done before any timing)."""
    path = out / "cache" / name
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(out / "cache" / "base" / "weights", path / "weights")
    return path


# -- the benchmark ------------------------------------------------------------------------------

DATA_SETS = {"train": "train", "test": "test", "none": "none", "mem": "mem224"}


def build_data(out: Path, p: dict, reuse: Path | None = None) -> dict:
    """The bench's image folders, from Debian's dataset-fashion-mnist; or, with ``reuse``, folders a
    previous run built (for a machine without the Debian package, such as a lent GPU machine)."""
    t0 = time.perf_counter()
    if reuse is not None:
        sets = {k: reuse / name for k, name in DATA_SETS.items()}
        missing = [str(v) for v in sets.values() if not v.is_dir()]
        if missing:
            raise SystemExit(f"--data {reuse}: missing {', '.join(missing)} (run the bench once where "
                             "dataset-fashion-mnist is installed and pass its out/data folder)")
        counts = {k: sum(1 for _ in v.rglob("*.png")) for k, v in sets.items()}
        return {"paths": {k: str(v) for k, v in sets.items()}, "counts": counts, "seconds": 0.0, "reused": str(reuse)}
    from tl_core.data.sample import write_fashion_mnist
    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    sets = {"train": write_fashion_mnist(data / "train", p["train_per_class"], split="train"),
            "test": write_fashion_mnist(data / "test", p["test_per_class"], split="test"),
            # disjoint from "train" (offset) so nothing is shared through the OS file cache
            "none": write_fashion_mnist(data / "none", p["none_per_class"], split="train",
                                        offset=p["train_per_class"]),
            "mem": write_fashion_mnist(data / "mem224", p["mem_per_class"], split="train", size=224)}
    counts = {k: sum(1 for _ in v.rglob("*.png")) for k, v in sets.items()}
    return {"paths": {k: str(v) for k, v in sets.items()}, "counts": counts, "seconds": time.perf_counter() - t0}


def ratio(a, b):
    return (a / b) if (a is not None and b) else None


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description="Transfer Lab vs the classic recipe, side by side.")
    ap.add_argument("--quick", action="store_true", help="small smoke version (numbers are not the results)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    ap.add_argument("--out", default=str(BENCH / "out"))
    ap.add_argument("--data", default=None, help="reuse image folders an earlier run built (its out/data)")
    ap.add_argument("--wait-load", type=float, default=None,
                    help="before starting, wait until the 1-minute load average is below this")
    ap.add_argument("--wait-max", type=float, default=2400, help="give up waiting after this many seconds")
    args = ap.parse_args()
    sections = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    p = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("runs", "cache", "logs"):
        shutil.rmtree(out / sub, ignore_errors=True)

    results: dict = {"quick": args.quick, "sections": sections, "params": p, "targets": TARGETS,
                     "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if args.wait_load is not None:
        results["wait"] = wait_for_quiet(args.wait_load, args.wait_max)
    results["loadavg_start"] = loadavg()
    results["measuring_from"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t_bench = time.perf_counter()

    env = dict(os.environ, HF_HUB_OFFLINE="1", TL_OFFLINE="1", TL_RUNS_DIR=str(out / "runs"),
               PYTHONUNBUFFERED="1")
    env.pop("TL_DEBUG", None)
    print("Building the data...", flush=True)
    data = build_data(out, p, Path(args.data).resolve() if args.data else None)
    results["data"] = data
    train, test = Path(data["paths"]["train"]), Path(data["paths"]["test"])

    # Untimed warm-up: convert the offline weights once (an install step) and pull the libraries
    # into the OS file cache, so the first timed process is not penalised for a cold disk.
    base = dict(env, TL_CACHE_DIR=str(out / "cache" / "base"))
    results["prewarm"] = run_child("prewarm", [PY, "-c", (
        "import torch, torchvision, timm, tl_core.training.loop, tl_core.cli, tl_core.results.evaluate\n"
        f"from tl_core.models import create_model; create_model({MODEL!r}, 10, weights='offline')")], base, out / "logs")

    def classic(label: str, trainable: str, epochs: int) -> dict:
        return run_child(label, [PY, str(BENCH / "classic_recipe.py"), str(train), str(test), "--model", MODEL,
                                 "--epochs", str(epochs), "--trainable", trainable], base, out / "logs")

    if "head" in sections:  # (a) (b) (c) (d)
        results["classic_head"] = classic("a-classic-head", "head", p["head_epochs"])
        # fairness check: the classic recipe under the same glibc allocator settings tl applies
        # (set through glibc's environment variables, which reach its DataLoader workers too)
        results["classic_head_tuned"] = run_child(
            "a2-classic-head-tuned", [PY, str(BENCH / "classic_recipe.py"), str(train), str(test), "--model", MODEL,
                                      "--epochs", str(p["head_epochs"]), "--trainable", "head"],
            dict(base, MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30)), out / "logs")
        head_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, "head")))
        results["tl_head_cold"] = tl_run("b-tl-head-cold", train, "head", p["head_epochs"], out, head_env)
        results["tl_head_warm"] = tl_run("c-tl-head-warm", train, "head", p["head_epochs"], out, head_env)
        results["floor"] = run_child("d-floor", [PY, str(BENCH / "probes.py"), "floor", str(train), "--model", MODEL,
                                                 "--batch-size", "64"], base, out / "logs")
        for key in ("tl_head_cold", "tl_head_warm"):
            if _j(results[key]).get("run_dir"):
                results[key]["test"] = tl_test_accuracy(_j(results[key])["run_dir"], test, out, base,
                                                        f"{key}-evaluate")

    if "last1" in sections:  # (e)
        results["classic_last1"] = classic("e-classic-last1", "last:1", p["last_epochs"])
        last_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, "last1")))
        results["tl_last1"] = tl_run("e-tl-last1", train, "last:1", p["last_epochs"], out, last_env)

    if "none" in sections:  # (f) tl's throughput vs the same model on tensors already in memory, alternately
        results["tl_none"], results["synthetic_none"] = [], []
        for rep in range(1, p["none_reps"] + 1):
            none_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, f"none{rep}")))
            r = tl_run(f"f-tl-none-{rep}", Path(data["paths"]["none"]), "none", p["none_epochs"], out, none_env)
            results["tl_none"].append(r)
            ev = r.get("events") or {}
            bs = ev.get("batch_size") or 32
            results["synthetic_none"].append(run_child(f"f-synthetic-{rep}", [
                PY, str(BENCH / "probes.py"), "synthetic", "--model", MODEL,
                "--images", str((ev.get("steps_per_epoch") or 5) * bs), "--batch-size", str(bs),
                "--image-size", "224", "--epochs", str(p["none_epochs"])], base, out / "logs"))
            # the same tl run with the CPU allocator tuning off (tl_core.runtime.allocator): what it buys
            plain_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, f"none{rep}-plain")), TL_MALLOC_TUNING="0")
            results.setdefault("tl_none_untuned", []).append(
                tl_run(f"f-tl-none-untuned-{rep}", Path(data["paths"]["none"]), "none", p["none_epochs"], out,
                       plain_env))
        results["datapath"] = run_child("f-datapath", [PY, str(BENCH / "probes.py"), "datapath", "--batch-size", "32",
                                                       "--image-size", "224"], base, out / "logs")

    if "mem" in sections:  # (g) memory on 3,000 images at 224 px
        mem_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, "mem")))
        results["tl_mem"] = tl_run("g-tl-head-3000", Path(data["paths"]["mem"]), "head", p["mem_epochs"], out,
                                   mem_env)

    if "estimate" in sections:  # (i) the time estimate vs the real run, on this machine
        results["estimate"] = []
        cases = ESTIMATE_CASES[:1] if args.quick else ESTIMATE_CASES
        for key, preset, epochs in cases:
            tag = f"{key}-{preset.replace(':', '')}"
            eenv = dict(env, TL_CACHE_DIR=str(fresh_cache(out, f"est-{tag}")))
            path = Path(data["paths"][key])
            est_cmd = [PY, "-m", "tl_core", "estimate", str(path), "--model", MODEL, "--freeze", preset,
                       "--epochs", str(epochs), "--weights", "offline"]
            before = run_child(f"i-estimate-{tag}", est_cmd, eenv, out / "logs")
            real = tl_run(f"i-tl-{tag}", path, preset, epochs, out, eenv)
            after = run_child(f"i-estimate-again-{tag}", est_cmd, eenv, out / "logs")
            results["estimate"].append({"data": key, "images": data["counts"].get(key), "preset": preset,
                                        "epochs": epochs, "before": before, "real": real, "after": after})

    if "gpu" in sections:  # (h) GPU throughput: tl vs synthetic, per model
        import torch

        explicit = "gpu" in [x.strip() for x in args.only.split(",")] and args.only != ",".join(SECTIONS)
        if not torch.cuda.is_available() and not explicit:
            results["gpu_skipped"] = "no CUDA GPU on this machine"
        else:
            results["gpu_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)"
            epochs = GPU_EPOCHS["quick" if args.quick else "full"]
            results["gpu"] = {}
            for model, preset, weights in GPU_MODELS:
                genv = dict(env, TL_CACHE_DIR=str(fresh_cache(out, f"gpu-{model}")))
                r = tl_run(f"h-tl-{model}", Path(data["paths"]["mem"]), preset, epochs, out, genv, model, weights)
                ev = r.get("events") or {}
                bs = ev.get("batch_size") or 32
                syn = run_child(f"h-synthetic-{model}", [
                    PY, str(BENCH / "probes.py"), "synthetic", "--model", model, "--weights", weights,
                    "--images", str((ev.get("steps_per_epoch") or 8) * bs), "--batch-size", str(bs),
                    "--image-size", "224", "--epochs", str(epochs)], base, out / "logs")
                results["gpu"][model] = {"tl": r, "synthetic": syn, "preset": preset}

    if "lab" in sections:  # (j) the Lab's experiments against the runs and passes they replace, side by side
        lab_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, "lab-train")))
        results["lab_one_train"] = tl_run("j-tl-head-one", train, "head", p["head_epochs"], out, lab_env)
        ds_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, "lab-data-size")))
        results["lab_data_size"] = run_child("j-lab-data-size", [
            PY, "-m", "tl_core", "lab", "data-size", str(train), "--fractions", "0.1,0.25,0.5,1", "--repeats", "3",
            "--epochs", str(p["head_epochs"]), "--weights", "offline", "--seed", "0", "--quiet",
            "--experiments-dir", str(out / "experiments")], ds_env, out / "logs")
        results["lab_floors"] = {m: run_child(f"j-floor-{m}", [PY, str(BENCH / "probes.py"), "floor", str(train),
                                                                "--model", m, "--batch-size", "64"], base, out / "logs")
                                 for m in LAB_MODELS}
        models_env = dict(env, TL_CACHE_DIR=str(fresh_cache(out, "lab-models")))
        results["lab_models"] = run_child("j-lab-models", [
            PY, "-m", "tl_core", "lab", "models", str(train), "--models", ",".join(LAB_MODELS),
            "--epochs", str(p["head_epochs"]), "--weights", "offline", "--seed", "0", "--quiet",
            "--experiments-dir", str(out / "experiments")], models_env, out / "logs")

    results["bench_seconds"] = time.perf_counter() - t_bench
    results["loadavg_end"] = loadavg()
    results["summary"] = summarise(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = render(results)
    (out / "results.md").write_text(table + "\n")
    print()
    print(table)
    print(f"\nRaw results: {out / 'results.json'}")
    return 0


# -- summary and table --------------------------------------------------------------------------

def _j(r: dict | None) -> dict:
    return (r or {}).get("json") or {}


def _ev(r: dict | None) -> dict:
    return (r or {}).get("events") or {}


def _children(R: dict) -> list[dict]:
    out = []
    for v in R.values():
        for r in (v if isinstance(v, list) else [v]):
            if isinstance(r, dict) and "returncode" in r:
                out.append(r)
            for part in ("test", "before", "real", "after"):
                if isinstance(r, dict) and isinstance(r.get(part), dict) and "returncode" in r[part]:
                    out.append(r[part])
    return out


def summarise(R: dict) -> dict:
    S: dict = {"failed_children": [r["label"] for r in _children(R) if r.get("returncode")]}
    if "classic_head" in R:
        ch, tc, tw = R["classic_head"], R["tl_head_cold"], R["tl_head_warm"]
        chj = _j(ch)
        # The classic script also evaluates the test folder; tl's test evaluation is a separate
        # command, so the classic's training wall time is its wall time minus its test evaluation.
        S["classic_head_wall"] = ch["wall_seconds"]
        S["classic_head_train_wall"] = ch["wall_seconds"] - chj.get("test_seconds", 0.0) if chj else None
        S["classic_head_inprocess"] = (chj.get("seconds", 0) - chj.get("test_seconds", 0)) if chj else None
        S["classic_head_test_accuracy"] = chj.get("test_accuracy")
        S["classic_head_epoch_seconds"] = chj.get("epoch_seconds")
        S["classic_head_peak_rss_gb"] = ch["maxrss_bytes"] / 2**30
        S["classic_head_tree_rss_peak_gb"] = ch["tree_rss_peak_bytes"] / 2**30
        S["tl_cold_wall"] = tc["wall_seconds"]
        S["tl_cold_inprocess"] = _j(tc).get("train_seconds")
        S["tl_cold_prepare"] = _ev(tc).get("prepare_seconds")
        S["tl_cold_mode"] = _j(tc).get("mode")
        S["tl_cold_train_images"] = _ev(tc).get("train_images")
        S["tl_cold_val_images"] = _ev(tc).get("val_images")
        S["tl_cold_test_accuracy"] = (tc.get("test") or {}).get("accuracy")
        S["tl_test_via"] = (tc.get("test") or {}).get("via")
        S["tl_cold_peak_rss_gb"] = tc["maxrss_bytes"] / 2**30
        S["tl_warm_wall"] = tw["wall_seconds"]
        S["tl_warm_inprocess"] = _j(tw).get("train_seconds")
        S["tl_warm_cache_hit"] = _ev(tw).get("feature_cache_hit")
        S["tl_warm_test_accuracy"] = (tw.get("test") or {}).get("accuracy")
        S["head_speedup_wall"] = ratio(S["classic_head_train_wall"], S["tl_cold_wall"])
        cht = R.get("classic_head_tuned")
        if cht:
            chtj = _j(cht)
            S["classic_head_tuned_train_wall"] = (cht["wall_seconds"] - chtj.get("test_seconds", 0.0)
                                                  if chtj else None)
            S["classic_head_tuned_test_accuracy"] = chtj.get("test_accuracy")
            S["head_speedup_vs_tuned_classic"] = ratio(S["classic_head_tuned_train_wall"], S["tl_cold_wall"])
        S["head_speedup_inprocess"] = ratio(S["classic_head_inprocess"], S["tl_cold_inprocess"])
        S["warm_speedup_wall"] = ratio(S["classic_head_train_wall"], S["tl_warm_wall"])
        S["warm_speedup_inprocess"] = ratio(S["classic_head_inprocess"], S["tl_warm_inprocess"])
        fj = _j(R["floor"])
        S["floor_seconds"] = fj.get("floor_seconds")
        S["floor_cold_seconds"] = fj.get("cold_seconds")
        S["floor_images"] = fj.get("images")
        S["floor_process_wall"] = R["floor"]["wall_seconds"]
        S["tl_cold_over_floor_wall"] = ratio(S["tl_cold_wall"], S["floor_seconds"])
        S["tl_cold_over_floor_inprocess"] = ratio(S["tl_cold_inprocess"], S["floor_seconds"])
        # like for like with tl's wall time: the floor process (start-up, imports, model, decoding)
        # with one forward pass instead of its two
        S["floor_one_pass_process_wall"] = (S["floor_process_wall"] - S["floor_seconds"]
                                            if S["floor_seconds"] is not None else None)
        S["tl_cold_over_floor_process_wall"] = ratio(S["tl_cold_wall"], S["floor_one_pass_process_wall"])

    if "classic_last1" in R:
        cl, tl = R["classic_last1"], R["tl_last1"]
        clj, tle = _j(cl), _ev(tl)
        ce, te = clj.get("epoch_seconds") or [], tle.get("epoch_seconds") or []
        S["classic_last1_epoch_seconds"], S["tl_last1_epoch_seconds"] = ce, te
        S["classic_last1_epoch_mean"] = sum(ce) / len(ce) if ce else None
        S["tl_last1_epoch_mean"] = sum(te) / len(te) if te else None
        S["tl_last1_mode"] = tle.get("mode")
        S["tl_last1_boundary"] = (tle.get("info") or {}).get("boundary")
        S["tl_last1_prepare"] = tle.get("prepare_seconds")
        S["tl_last1_decode_features_approx"] = tle.get("decode_and_features_seconds_approx")
        S["last1_epoch_speedup"] = ratio(S["classic_last1_epoch_mean"], S["tl_last1_epoch_mean"])
        ci, ti = clj.get("train_images"), tle.get("train_images")
        S["classic_last1_train_images"], S["tl_last1_train_images"] = ci, ti
        S["last1_epoch_speedup_per_image"] = (ratio(S["classic_last1_epoch_mean"] / ci, S["tl_last1_epoch_mean"] / ti)
                                              if ci and ti and S["tl_last1_epoch_mean"] else None)
        S["classic_last1_train_wall"] = cl["wall_seconds"] - clj.get("test_seconds", 0.0) if clj else None
        S["tl_last1_wall"] = tl["wall_seconds"]
        S["last1_wall_speedup"] = ratio(S["classic_last1_train_wall"], S["tl_last1_wall"])
        S["classic_last1_test_accuracy"] = clj.get("test_accuracy")

    if "tl_none" in R:
        tl_runs = [_ev(r).get("images_per_sec") or [] for r in R["tl_none"]]
        sy_runs = [[e["images_per_sec"] for e in _j(r).get("epochs", [])] for r in R["synthetic_none"]]
        S["tl_none_images_per_sec"], S["synthetic_images_per_sec"] = tl_runs, sy_runs
        S["tl_none_mode"] = _ev(R["tl_none"][0]).get("mode") if R["tl_none"] else None
        # steady state: the epochs after each process's warm-up (quick mode has no epochs to spare)
        w = NONE_WARMUP_EPOCHS
        tl_steady = [x for run in tl_runs for x in run[w:]] or [x for run in tl_runs for x in run[-1:]]
        sy_steady = [x for run in sy_runs for x in run[w:]] or [x for run in sy_runs for x in run[-1:]]
        S["tl_none_steady_median"], S["synthetic_steady_median"] = median(tl_steady), median(sy_steady)
        S["none_throughput_ratio"] = ratio(S["tl_none_steady_median"], S["synthetic_steady_median"])
        S["none_throughput_ratio_epoch1"] = ratio(median([r[0] for r in tl_runs if r]),
                                                  median([r[0] for r in sy_runs if r]))
        S["none_ratio_per_rep"] = [ratio(median(a[w:] or a[-1:]), median(b[w:] or b[-1:]))
                                    for a, b in zip(tl_runs, sy_runs)]
        incl = []
        for r in R["tl_none"]:
            ev = _ev(r)
            per_epoch = (ev.get("steps_per_epoch") or 0) * (ev.get("batch_size") or 0)
            ips = ev.get("images_per_sec") or []
            busy = sum(per_epoch / v for v in ips if v) + (ev.get("prepare_seconds") or 0)
            incl.append(per_epoch * len(ips) / busy if busy else None)
        S["tl_none_images_per_sec_incl_prepare"] = median(incl)
        un_runs = [_ev(r).get("images_per_sec") or [] for r in R.get("tl_none_untuned", [])]
        S["tl_none_untuned_images_per_sec"] = un_runs
        un_steady = [x for run in un_runs for x in run[w:]] or [x for run in un_runs for x in run[-1:]]
        S["tl_none_untuned_steady_median"] = median(un_steady)
        S["allocator_speedup"] = ratio(S["tl_none_steady_median"], S["tl_none_untuned_steady_median"])
        S["tl_none_allocator_tuned"] = (_ev(R["tl_none"][0]).get("info") or {}).get("allocator_tuned") \
            if R["tl_none"] else None
        dp = _j(R.get("datapath"))
        S["datapath_batch_seconds"] = dp.get("median_batch_seconds")
        step = ratio(32, S["synthetic_steady_median"])
        S["datapath_share_of_step"] = ratio(S["datapath_batch_seconds"], step)
        S["tl_none_peak_rss_gb"] = max((r["maxrss_bytes"] for r in R["tl_none"]), default=0) / 2**30

    if R.get("gpu"):
        S["gpu"] = {}
        for model, g in R["gpu"].items():
            tl_ips = _ev(g["tl"]).get("images_per_sec") or []
            sy_ips = [e["images_per_sec"] for e in _j(g["synthetic"]).get("epochs", [])]
            w = min(NONE_WARMUP_EPOCHS, max(len(tl_ips) - 1, 0))
            tl_med, sy_med = median(tl_ips[w:]), median(sy_ips[w:])
            S["gpu"][model] = {"preset": g["preset"], "tl_images_per_sec": tl_ips, "synthetic_images_per_sec": sy_ips,
                               "tl_median": tl_med, "synthetic_median": sy_med, "ratio": ratio(tl_med, sy_med),
                               "device": (_ev(g["tl"]).get("info") or {}).get("device"),
                               "batch_size": _ev(g["tl"]).get("batch_size")}
    if "tl_mem" in R:
        tm = R["tl_mem"]
        S["mem_train_images"] = _ev(tm).get("train_images")
        S["mem_images_total"] = R["data"]["counts"]["mem"]
        S["mem_mode"] = _ev(tm).get("mode")
        S["mem_peak_rss_gb"] = tm["maxrss_bytes"] / 2**30
        S["mem_tree_rss_peak_gb"] = tm["tree_rss_peak_bytes"] / 2**30
        S["mem_wall"] = tm["wall_seconds"]
    if R.get("estimate"):
        S["estimate"] = []
        for case in R["estimate"]:
            before, after, real = _j(case["before"]), _j(case["after"]), _j(case["real"])
            actual = real.get("train_seconds")
            S["estimate"].append({
                "data": case["data"], "images": case["images"], "preset": case["preset"], "epochs": case["epochs"],
                "estimate": before.get("total_seconds"), "refined": after.get("total_seconds"), "actual": actual,
                "actual_wall": case["real"]["wall_seconds"], "runs_used": after.get("runs_used"),
                "ratio": ratio(before.get("total_seconds"), actual), "refined_ratio": ratio(after.get("total_seconds"),
                                                                                          actual)})
    if "lab_data_size" in R:
        one, ds, mo = R["lab_one_train"], R["lab_data_size"], R["lab_models"]
        dsj, moj = _j(ds), _j(mo)
        S["lab_one_train_wall"] = one["wall_seconds"]
        S["lab_one_train_inprocess"] = _j(one).get("train_seconds")
        S["lab_data_size_wall"] = ds["wall_seconds"]
        S["lab_data_size_inprocess"] = dsj.get("seconds")
        S["lab_data_size_runs"] = dsj.get("runs_done")
        S["lab_data_size_once"] = dsj.get("features_computed_once")
        S["lab_data_size_ratio"] = ratio(ds["wall_seconds"], one["wall_seconds"])
        S["lab_data_size_ratio_inprocess"] = ratio(dsj.get("seconds"), _j(one).get("train_seconds"))
        floors = {m: _j(r).get("cold_seconds") for m, r in R["lab_floors"].items()}
        S["lab_floor_passes"] = floors
        S["lab_floor_sum"] = sum(v for v in floors.values() if v) if all(floors.values()) else None
        S["lab_models_wall"] = mo["wall_seconds"]
        S["lab_models_inprocess"] = moj.get("seconds")
        # each model's feature pass measured inside its own run of the experiment (same process, same
        # moment): from the end of the picture check to the last batch through the frozen layers
        # (building the model and loading its weights included); everything else is the "plus seconds"
        passes, runs = {}, {}
        for r in moj.get("results") or []:
            runs[r["model"]] = r.get("seconds")
            passes[r["model"]] = _feature_pass_seconds(r.get("run_dir"))
        S["lab_models_per_model"] = runs
        S["lab_models_feature_passes"] = passes
        known = [m for m in runs if runs[m] is not None and passes.get(m) is not None]
        S["lab_models_pass_sum"] = sum(passes[m] for m in known) if known else None
        S["lab_models_runs_sum"] = sum(runs[m] for m in known) if known else None
        S["lab_models_extra_per_model"] = ((S["lab_models_inprocess"] - S["lab_models_pass_sum"]) / len(known)
                                           if known and S["lab_models_inprocess"] is not None else None)
        S["lab_load"] = [ds.get("loadavg_before"), mo.get("loadavg_after")]
    return S


def _feature_pass_seconds(run_dir: str | None) -> float | None:
    """End of the picture check -> last batch through the frozen layers, from a run's events."""
    if not run_dir or not (Path(run_dir) / "metrics.jsonl").is_file():
        return None
    events = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    prep = [e for e in events if e.get("event") == "on_prepare"]
    checked = max((e["time"] for e in prep if e.get("stage") == "check"), default=None)
    computed = max((e["time"] for e in prep if e.get("stage") == "features"), default=None)
    return computed - checked if checked is not None and computed is not None else None


def _f(x, fmt="{:.1f}"):
    return "n/a" if x is None else fmt.format(x)


def _verdict(ok) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _ge(a, b):
    return None if a is None else a >= b


def _le(a, b):
    return None if a is None else a <= b


def render(R: dict) -> str:
    S, T, p = R["summary"], TARGETS, R["params"]
    E, n_train, n_test = p["head_epochs"], R["data"]["counts"]["train"], R["data"]["counts"]["test"]
    rows = []
    extra = ["", "Details:"]
    if "head_speedup_wall" in S:
        acc_ok = (None if S["tl_cold_test_accuracy"] is None or S["classic_head_test_accuracy"] is None
                  else S["tl_cold_test_accuracy"] >= S["classic_head_test_accuracy"])
        rows += [
            (f"`head`, {E} epochs, {n_train} images: classic wall / `tl train` wall (both incl. process start-up)",
             f"{_f(S['classic_head_train_wall'])} s / {_f(S['tl_cold_wall'])} s",
             _f(S["head_speedup_wall"], "{:.1f}x"), f">= {T['head_speedup']:.0f}x",
             _verdict(_ge(S["head_speedup_wall"], T["head_speedup"]))),
            ("`head`: the same, with the classic recipe given tl's allocator settings (glibc environment "
             "variables): what remains without them",
             f"{_f(S.get('classic_head_tuned_train_wall'))} s / {_f(S['tl_cold_wall'])} s",
             _f(S.get("head_speedup_vs_tuned_classic"), "{:.1f}x"), f">= {T['head_speedup']:.0f}x",
             _verdict(_ge(S.get("head_speedup_vs_tuned_classic"), T["head_speedup"]))),
            (f"`head`: test accuracy ({n_test} test images), tl vs classic",
             f"{_f(S['tl_cold_test_accuracy'], '{:.1%}')} vs {_f(S['classic_head_test_accuracy'], '{:.1%}')}", "",
             "tl >= classic", _verdict(acc_ok)),
            ("`head`: `tl` training time in its process (check, weights, decode, features, 10 epochs, saving) "
             "/ floor (one forward pass over the training images)",
             f"{_f(S['tl_cold_inprocess'])} s / {_f(S['floor_seconds'], '{:.2f}')} s",
             _f(S["tl_cold_over_floor_inprocess"], "{:.2f}x"), f"<= {T['head_floor_ratio']}x",
             _verdict(_le(S["tl_cold_over_floor_inprocess"], T["head_floor_ratio"]))),
            ("`head`: `tl train` wall / floor process wall with one pass (both incl. Python start-up, imports, "
             "model, decoding)",
             f"{_f(S['tl_cold_wall'])} s / {_f(S['floor_one_pass_process_wall'])} s",
             _f(S["tl_cold_over_floor_process_wall"], "{:.2f}x"), f"<= {T['head_floor_ratio']}x",
             _verdict(_le(S["tl_cold_over_floor_process_wall"], T["head_floor_ratio"]))),
            ("`head`: `tl train` wall (incl. ~3 s of process start-up) / floor pass alone (no start-up): "
             "unlike things, shown for completeness",
             f"{_f(S['tl_cold_wall'])} s / {_f(S['floor_seconds'], '{:.2f}')} s",
             _f(S["tl_cold_over_floor_wall"], "{:.2f}x"), "(info)", ""),
            ("`head`, warm feature cache: classic wall / `tl train` wall (both incl. start-up)",
             f"{_f(S['classic_head_train_wall'])} s / {_f(S['tl_warm_wall'])} s",
             _f(S["warm_speedup_wall"], "{:.1f}x"), f">= {T['warm_speedup']:.0f}x",
             _verdict(_ge(S["warm_speedup_wall"], T["warm_speedup"]))),
        ]
        extra += [
            f"- classic head: in-process training {_f(S['classic_head_inprocess'])} s (excl. start-up and test "
            f"eval); epochs {', '.join(_f(x) for x in S['classic_head_epoch_seconds'] or [])} s; peak RSS "
            f"{_f(S['classic_head_peak_rss_gb'], '{:.2f}')} GB largest process, "
            f"{_f(S['classic_head_tree_rss_peak_gb'], '{:.2f}')} GB summed over its process tree (workers)",
            f"- tl head cold: mode {S['tl_cold_mode']}, trains on {S['tl_cold_train_images']} and validates on "
            f"{S['tl_cold_val_images']} of the {n_train} images (default 20% hold-out); in-process "
            f"{_f(S['tl_cold_inprocess'])} s of which preparation (check, weights, decode, features) "
            f"{_f(S['tl_cold_prepare'])} s; in-process speedup {_f(S['head_speedup_inprocess'], '{:.1f}x')}; peak RSS "
            f"{_f(S['tl_cold_peak_rss_gb'], '{:.2f}')} GB; test accuracy via {S['tl_test_via']}",
            f"- tl head warm: cache hit {S['tl_warm_cache_hit']}, in-process {_f(S['tl_warm_inprocess'], '{:.2f}')} s, "
            f"in-process speedup {_f(S['warm_speedup_inprocess'], '{:.0f}x')}, test accuracy "
            f"{_f(S['tl_warm_test_accuracy'], '{:.1%}')}",
            f"- floor: {S['floor_images']} images, batch 64, warm pass {_f(S['floor_seconds'], '{:.2f}')} s, cold "
            f"(first) pass {_f(S['floor_cold_seconds'], '{:.2f}')} s; the floor process took "
            f"{_f(S['floor_process_wall'])} s wall including its start-up, imports, model creation and decoding",
        ]
    if "last1_epoch_speedup" in S:
        rows += [
            (f"`last:1`: mean epoch time, classic ({S['classic_last1_train_images']} img) / tl "
             f"({S['tl_last1_train_images']} img + val)",
             f"{_f(S['classic_last1_epoch_mean'], '{:.2f}')} s / {_f(S['tl_last1_epoch_mean'], '{:.2f}')} s",
             _f(S["last1_epoch_speedup"], "{:.1f}x"), f">= {T['last_epoch_speedup']:.0f}x",
             _verdict(_ge(S["last1_epoch_speedup"], T["last_epoch_speedup"]))),
            ("`last:1`: same, per training image (tl's epoch includes its validation pass)",
             "", _f(S["last1_epoch_speedup_per_image"], "{:.1f}x"), f">= {T['last_epoch_speedup']:.0f}x",
             _verdict(_ge(S["last1_epoch_speedup_per_image"], T["last_epoch_speedup"]))),
        ]
        extra.append(
            f"- last:1: classic epochs {', '.join(_f(x, '{:.2f}') for x in S['classic_last1_epoch_seconds'])} s; tl "
            f"epochs {', '.join(_f(x, '{:.2f}') for x in S['tl_last1_epoch_seconds'])} s (mode {S['tl_last1_mode']}, "
            f"boundary {S['tl_last1_boundary']}); tl one-time preparation {_f(S['tl_last1_prepare'])} s (decode + "
            f"features ~{_f(S['tl_last1_decode_features_approx'])} s); total wall classic "
            f"{_f(S['classic_last1_train_wall'])} s vs tl {_f(S['tl_last1_wall'])} s "
            f"({_f(S['last1_wall_speedup'], '{:.1f}x')}); classic test accuracy "
            f"{_f(S['classic_last1_test_accuracy'], '{:.1%}')}")
    if "none_throughput_ratio" in S:
        rows.append(
            ("`none`: tl training images/s (all per-batch data handling) / synthetic in-memory loop, "
             "medians of post-warm-up epochs",
             f"{_f(S['tl_none_steady_median'])} / {_f(S['synthetic_steady_median'])}",
             _f(S["none_throughput_ratio"], "{:.2f}x"), f">= {T['none_throughput_ratio']}x",
             _verdict(_ge(S["none_throughput_ratio"], T["none_throughput_ratio"]))))
        rows.append(
            ("`none`: tl training images/s with the CPU allocator tuning / with `TL_MALLOC_TUNING=0` (not a "
             "target: what the tuning buys)",
             f"{_f(S['tl_none_steady_median'])} / {_f(S['tl_none_untuned_steady_median'])}",
             _f(S["allocator_speedup"], "{:.2f}x"), "", ""))
        runs = lambda rs: "; ".join(", ".join(_f(x) for x in r) for r in rs)  # noqa: E731
        extra.append(
            f"- none: tl images/s per epoch, per run: {runs(S['tl_none_images_per_sec'])} (mode {S['tl_none_mode']}); "
            f"synthetic: {runs(S['synthetic_images_per_sec'])}; tl with the allocator tuning off: "
            f"{runs(S['tl_none_untuned_images_per_sec'])}; ratio per run pair "
            f"{', '.join(_f(x, '{:.2f}') for x in S['none_ratio_per_rep'])}; first-epoch ratio "
            f"{_f(S['none_throughput_ratio_epoch1'], '{:.2f}x')}; including tl's one-time preparation (decode, model) "
            f"{_f(S['tl_none_images_per_sec_incl_prepare'])} images/s; tl's per-batch data handling alone (index, "
            f"float, augment, normalise; batch 32 at 224 px) {_f(S['datapath_batch_seconds'], '{:.3f}')} s = "
            f"{_f(S['datapath_share_of_step'], '{:.1%}')} of a synthetic training step; peak RSS "
            f"{_f(S['tl_none_peak_rss_gb'], '{:.2f}')} GB")
    if "mem_peak_rss_gb" in S:
        rows.append(
            (f"Peak RSS, `tl train --freeze head`, {S['mem_images_total']} images at 224 px "
             f"({S['mem_train_images']} train)", f"{_f(S['mem_peak_rss_gb'], '{:.2f}')} GB", "",
             f"< {T['mem_peak_gb']:.0f} GB", _verdict(S["mem_peak_rss_gb"] < T["mem_peak_gb"])))
        extra.append(f"- memory run: mode {S['mem_mode']}, wall {_f(S['mem_wall'])} s, polled RSS peak "
                     f"{_f(S['mem_tree_rss_peak_gb'], '{:.2f}')} GB")
    if "lab_data_size_ratio" in S:
        rows.append((f"Lab: `tl lab data-size` (4 shares x 3 picks = {S['lab_data_size_runs']} runs, {E} epochs each) "
                     "wall / one `tl train --freeze head` wall, same folder, fresh caches (both incl. start-up)",
                     f"{_f(S['lab_data_size_wall'])} s / {_f(S['lab_one_train_wall'])} s",
                     _f(S["lab_data_size_ratio"], "{:.2f}x"), f"<= {T['lab_data_size_ratio']}x",
                     _verdict(_le(S["lab_data_size_ratio"], T["lab_data_size_ratio"]))))
        rows.append((f"Lab: `tl lab models` ({len(LAB_MODELS)} offline models, {E} epochs) in-process / the sum of "
                     "each model's feature pass (measured inside its run): extra seconds per model",
                     f"{_f(S['lab_models_inprocess'])} s / {_f(S['lab_models_pass_sum'])} s",
                     f"+{_f(S['lab_models_extra_per_model'])} s/model", f"<= +{T['lab_extra_per_model']:.0f} s/model",
                     _verdict(_le(S["lab_models_extra_per_model"], T["lab_extra_per_model"]))))
        extra.append(
            f"- lab: data-size in-process {_f(S['lab_data_size_inprocess'])} s vs one tl train in-process "
            f"{_f(S['lab_one_train_inprocess'])} s ({_f(S['lab_data_size_ratio_inprocess'], '{:.2f}x')}); every run "
            f"found its features cached: {S['lab_data_size_once']}; models experiment per model "
            + ", ".join(f"{m} {_f(v)} s" for m, v in (S['lab_models_per_model'] or {}).items())
            + "; their feature passes (in the run) " + ", ".join(
                f"{m} {_f(v)} s" for m, v in (S['lab_models_feature_passes'] or {}).items())
            + "; for reference, one inference pass per model in its own process (probes.py floor, first pass) "
            + ", ".join(f"{m} {_f(v)} s" for m, v in S['lab_floor_passes'].items())
            + f"; models wall {_f(S['lab_models_wall'])} s; load before/after {S['lab_load']}")
    for e in S.get("estimate") or []:
        within = lambda r: r is not None and 1 / T["estimate_within"] <= r <= T["estimate_within"]  # noqa: E731
        rows.append((f"`tl estimate` / real `tl train` in-process time: `{e['preset']}`, {e['epochs']} epochs, "
                     f"{e['images']} images (fresh cache, no earlier runs)",
                     f"{_f(e['estimate'])} s / {_f(e['actual'])} s", _f(e["ratio"], "{:.2f}x"),
                     f"{1 / T['estimate_within']:.2f}x-{T['estimate_within']}x", _verdict(within(e["ratio"]))))
        extra.append(f"- estimate {e['preset']} on {e['images']} images: before {_f(e['estimate'])} s, real "
                     f"{_f(e['actual'])} s in-process ({_f(e['actual_wall'])} s wall with start-up), after that one run "
                     f"{_f(e['refined'])} s ({_f(e['refined_ratio'], '{:.2f}x')}; runs used {e['runs_used']})")
    if S.get("gpu"):
        for model, g in S["gpu"].items():
            dev = g.get("device") or {}
            rows.append((f"GPU ({R.get('gpu_device')}): `{model}` ({g['preset']}, batch {g['batch_size']}, AMP "
                         f"{dev.get('amp_dtype')}, channels_last {dev.get('channels_last')}): tl images/s / synthetic",
                         f"{_f(g['tl_median'])} / {_f(g['synthetic_median'])}", _f(g["ratio"], "{:.2f}x"),
                         f">= {T['none_throughput_ratio']}x",
                         _verdict(_ge(g["ratio"], T["none_throughput_ratio"]))))
            extra.append(f"- GPU {model}: tl images/s per epoch {', '.join(_f(x) for x in g['tl_images_per_sec'])}; "
                         f"synthetic {', '.join(_f(x) for x in g['synthetic_images_per_sec'])}")
    else:
        rows.append(("GPU rows", f"not measured: {R.get('gpu_skipped') or 'no GPU was lent to this task'}", "", "",
                     "not measured"))
    lines = ["| Measurement | Measured | Ratio | Target | Result |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    extra.append(f"- load average at start {R['loadavg_start']}, at end {R['loadavg_end']}; whole bench "
                 f"{_f(R['bench_seconds'] / 60)} min" + ("; QUICK MODE: smoke test, not the results" if R["quick"] else ""))
    if S["failed_children"]:
        extra.append(f"- FAILED child processes: {', '.join(S['failed_children'])} (see bench/out/logs)")
    return "\n".join(lines + extra)


if __name__ == "__main__":
    raise SystemExit(main())
