#!/usr/bin/env python
"""Issue 16, "memory that does not grow with the data": peak resident memory and time of ``tl train``
at two data sizes, the code before the change and now, side by side in one session.

Each measurement is a fresh ``tl train`` subprocess with an empty cache folder (the converted offline
weights copied in), alternating before/now for each case so that both see the same machine load.
Peak memory is the child's ``ru_maxrss`` (``os.wait4``); wall time is from ``Popen`` to exit; the
preparation stages come from the run's events (end of the picture check -> last feature batch, or
-> last decoded picture).

    .venv/bin/python bench/mem_bench.py --before /tmp/old-tree --data /work/shared/datasets/pets/large

``--before`` is a folder holding the older ``tl_core`` package (e.g. ``git archive <commit> tl_core | tar
-x -C DIR``); without it only the current code is measured. Subsets of the data folder are made with
hard links (or copies) under ``--work``. Results: ``--work``/mem_results.json and a Markdown table on
stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MODEL = "tf_efficientnet_lite0"
# (label, freeze preset, extra flags, epochs, pictures)
CASES = [("head", "head", [], 3, 1000), ("head", "head", [], 3, 5000),
         ("last:1 full", "last:1", ["--no-feature-cache"], 1, 1000),
         ("last:1 full", "last:1", ["--no-feature-cache"], 1, 3000)]


def subset(src: Path, dest: Path, n: int) -> Path:
    """``n`` pictures of ``src`` (its category folders, equal shares, sorted names) as hard links."""
    if dest.is_dir():
        return dest
    classes = sorted(d for d in src.iterdir() if d.is_dir())
    per = n // len(classes)
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    for c in classes:
        (tmp / c.name).mkdir(parents=True)
        for f in sorted(c.iterdir())[:per]:
            try:
                os.link(f, tmp / c.name / f.name)
            except OSError:
                shutil.copy2(f, tmp / c.name / f.name)
    tmp.rename(dest)
    return dest


def stages(run_dir: Path) -> dict:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    prep = [e for e in events if e.get("event") == "on_prepare"]
    checked = max((e["time"] for e in prep if e["stage"] == "check"), default=None)
    last = {s: max((e["time"] for e in prep if e["stage"] == s), default=None) for s in ("features", "decode")}
    info = next((e["info"] for e in events if e["event"] == "on_fit_start"), {})
    epochs = [e["logs"] for e in events if e["event"] == "on_epoch_end"]
    return {"mode": info.get("mode"), "train_images": info.get("train_images"),
            "feature_seconds": last["features"] - checked if checked and last["features"] else None,
            "decode_seconds": last["decode"] - checked if checked and last["decode"] else None,
            "epoch_seconds": [e["epoch_seconds"] for e in epochs],
            "val_accuracy": epochs[-1]["val_accuracy"] if epochs else None}


def one(side: str, code: Path | None, data: Path, preset: str, flags: list[str], epochs: int, work: Path,
        weights: Path, threads: int | None) -> dict:
    cache = work / f"cache-{side}-{data.name}-{preset.replace(':', '')}"
    runs = work / "runs"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(weights, cache / "weights")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TL_OFFLINE="1", TL_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(code) if code else str(REPO)
    cmd = [PY, "-m", "tl_core", "train", str(data), "--model", MODEL, "--freeze", preset, *flags, "--epochs",
           str(epochs), "--weights", "offline", "--patience", "0", "--seed", "0", "--runs-dir", str(runs), "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = "", ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    line = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    row = {"side": side, "data": str(data), "preset": preset, "flags": flags, "epochs": epochs,
           "peak_rss_gb": usage.ru_maxrss / 2**20, "wall_seconds": wall, "load_before": load,
           "rc": os.waitstatus_to_exitcode(status), "status": line.get("status"), "stderr_tail": err[-500:]}
    if line.get("run_dir"):
        row.update(stages(Path(line["run_dir"])))
    shutil.rmtree(cache, ignore_errors=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/datasets/pets/large"))
    ap.add_argument("--before", type=Path, default=None, help="folder holding the older tl_core package")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tl-mem-bench"))
    ap.add_argument("--weights", type=Path, default=REPO / "bench/out/cache/base/weights",
                    help="converted offline weights to copy into each fresh cache")
    ap.add_argument("--only", default="", help="comma-separated case numbers (0-3)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sides = ([("before", args.before)] if args.before else []) + [("now", None)]
    picked = [int(i) for i in args.only.split(",") if i.strip()] or list(range(len(CASES)))
    rows = []
    for i in picked:
        label, preset, flags, epochs, n = CASES[i]
        data = subset(args.data, args.work / f"data-{n}", n)
        for side, code in sides:
            r = one(side, code, data, preset, flags, epochs, args.work, args.weights, args.threads)
            r.update(case=label, pictures=n)
            rows.append(r)
            print(f"{label:12s} {n:5d} {side:6s} peak {r['peak_rss_gb']:.2f} GB  wall {r['wall_seconds']:.1f} s  "
                  f"features {r.get('feature_seconds') or 0:.1f} s  decode {r.get('decode_seconds') or 0:.1f} s  "
                  f"status {r['status']}  load {r['load_before']:.1f}", flush=True)
            (args.work / "mem_results.json").write_text(json.dumps(rows, indent=2))
    print("\n| case | pictures | code | peak RSS | wall | feature pass / decode | load |\n|---|---|---|---|---|---|---|")
    for r in rows:
        stage = r.get("feature_seconds") or r.get("decode_seconds")
        print(f"| {r['case']} | {r['pictures']} | {r['side']} | {r['peak_rss_gb']:.2f} GB | {r['wall_seconds']:.0f} s | "
              f"{stage:.1f} s | {r['load_before']:.1f} |" if stage else
              f"| {r['case']} | {r['pictures']} | {r['side']} | {r['peak_rss_gb']:.2f} GB | {r['wall_seconds']:.0f} s | "
              f"n/a | {r['load_before']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
