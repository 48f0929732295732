"""Reference measurements for the benchmark, each run as its own subprocess by ``run_bench.py``.

* ``floor DATA_DIR``: the time of one forward pass (eval mode, inference) of the model over every
  image of ``DATA_DIR`` at the model's resolution, batch 64. Images are decoded and normalised
  *before* the clock starts, and the imports and model creation are outside it too: this is the
  pure model cost, the floor no training recipe that looks at every image once can beat. Two
  passes are timed (``cold``: the first, with one-time allocator/kernel set-up, and ``warm``).
* ``synthetic``: a full fine-tune training loop (forward, backward, AdamW step) on random tensors
  already in memory, with the settings ``tl train --freeze none`` uses on this device (batch size,
  resolution, threads, AMP, channels_last, label smoothing, weight decay): the throughput the
  model itself allows, with no data handling at all.
* ``datapath``: only the per-batch data handling of ``tl train`` in full mode (index the decoded
  uint8 tensor, float, augment, normalise), without the model: how much of a training step it is.
* ``testacc RUN_DIR TEST_DIR``: test accuracy of a ``tl`` run through
  ``tl_core.results.inference.load_run_model`` (used when ``tl evaluate`` is not available).

Each prints one JSON object as its last stdout line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _images_in(folder: str) -> tuple[list[str], list[int], list[str]]:
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    paths, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, c))):
            paths.append(os.path.join(folder, c, f))
            labels.append(i)
    return paths, labels, classes


def cmd_floor(args: argparse.Namespace) -> dict:
    import torch

    from tl_core.training.decoded import decode_records
    from tl_core.runtime.device import configure_threads
    from tl_core.models.preprocess import Preprocessing
    from tl_core.models import create_model

    threads = configure_threads(None)  # what tl train uses: one thread per core
    paths, labels, classes = _images_in(args.data_dir)
    model, _ = create_model(args.model, len(classes), weights="offline")
    model.eval()
    prep = Preprocessing.for_model(model, args.image_size)
    images = decode_records(paths, labels, prep).images
    x = prep.normalizer()(images)
    del images
    passes = []
    with torch.inference_mode():
        for _ in range(2):
            t0 = time.perf_counter()
            for i in range(0, len(x), args.batch_size):
                model(x[i:i + args.batch_size])
            passes.append(time.perf_counter() - t0)
    return {"probe": "floor", "model": args.model, "images": len(x), "image_size": prep.size,
            "batch_size": args.batch_size, "threads": threads, "cold_seconds": passes[0], "warm_seconds": passes[1],
            "floor_seconds": min(passes)}


def cmd_synthetic(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from tl_core.config import FreezeConfig, TrainConfig
    from tl_core.runtime.device import configure_threads, pick_device
    from tl_core.models.freezing import apply_freeze_plan, make_freeze_plan, optimizer_param_groups
    from tl_core.models import create_model

    tcfg = TrainConfig()  # the defaults tl train uses (label smoothing, weight decay, AMP, channels_last)
    threads = configure_threads(None)
    dev = pick_device("auto", tcfg.amp, tcfg.channels_last)
    torch.manual_seed(0)
    model, _ = create_model(args.model, args.classes, weights=args.weights)
    model.to(dev.device)
    if dev.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    lr = tcfg.resolved_lr("none")
    # the very optimizer tl builds for --freeze none: AdamW over its per-group parameter groups
    plan = make_freeze_plan(model, FreezeConfig(preset="none"))
    apply_freeze_plan(model, plan)
    groups = optimizer_param_groups(model, plan, lr, tcfg.weight_decay, 1.0)
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=dev.device.type == "cuda")
    x = torch.randn(args.images, 3, args.image_size, args.image_size, device=dev.device)
    if dev.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.images,), device=dev.device)
    bs = args.batch_size
    steps = max(1, args.images // bs)
    epochs = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        seen = 0
        for b in range(steps):
            xb, yb = x[b * bs:(b + 1) * bs], y[b * bs:(b + 1) * bs]
            with torch.autocast(dev.device.type, dtype=dev.amp_dtype, enabled=dev.amp_dtype is not None):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=tcfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
            seen += len(yb)
        epochs.append({"seconds": time.perf_counter() - t0, "images": seen})
    for e in epochs:
        e["images_per_sec"] = e["images"] / e["seconds"]
    return {"probe": "synthetic", "model": args.model, "device": dev.to_dict(), "threads": threads,
            "batch_size": bs, "image_size": args.image_size, "images_per_epoch": steps * bs, "lr": lr,
            "epochs": epochs, "images_per_sec_last": epochs[-1]["images_per_sec"],
            "images_per_sec_best": max(e["images_per_sec"] for e in epochs)}


def cmd_datapath(args: argparse.Namespace) -> dict:
    """Time only what tl does to a batch before the model in full mode (index the decoded uint8
    tensor, convert to float, augment, normalise), exactly as ``Trainer._forward`` does it."""
    import torch

    from tl_core.training.augment import BatchAugment
    from tl_core.config import TrainConfig
    from tl_core.runtime.device import configure_threads
    from tl_core.models.preprocess import Preprocessing

    threads = configure_threads(None)
    n, bs, size = args.images, args.batch_size, args.image_size
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    norm = Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).normalizer()
    level = TrainConfig().augment
    augment = BatchAugment(level, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        idx = torch.randperm(n, generator=gen)[:bs]
        xb, yb = images[idx], labels[idx]
        xf = norm(augment(xb.float()))
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"probe": "datapath", "augment": level, "batch_size": bs, "image_size": size, "threads": threads,
            "iters": args.iters, "median_batch_seconds": times[len(times) // 2], "min_batch_seconds": times[0],
            "max_batch_seconds": times[-1], "checksum": float(xf[0, 0, 0, 0]) + int(yb[0])}


def cmd_testacc(args: argparse.Namespace) -> dict:
    import torch

    from tl_core.training.decoded import decode_records
    from tl_core.results.inference import load_run_model

    loaded = load_run_model(args.run_dir)
    paths, labels, classes = _images_in(args.test_dir)
    index = {c: i for i, c in enumerate(loaded.classes)}
    remap = [index[c] for c in classes]
    dec = decode_records(paths, [remap[y] for y in labels], loaded.preprocessing)
    pred = loaded.predict_uint8(dec.images).argmax(1)
    acc = float((pred == dec.labels).float().mean())
    return {"probe": "testacc", "accuracy": acc, "n": int(len(dec.labels)), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("floor")
    f.add_argument("data_dir")
    f.add_argument("--model", default="tf_efficientnet_lite0")
    f.add_argument("--batch-size", type=int, default=64)
    f.add_argument("--image-size", type=int, default=None)
    s = sub.add_parser("synthetic")
    s.add_argument("--model", default="tf_efficientnet_lite0")
    s.add_argument("--images", type=int, default=160)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--image-size", type=int, default=224)
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--weights", default="offline", help="'none' for random weights (same speed)")
    d = sub.add_parser("datapath")
    d.add_argument("--images", type=int, default=160)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--image-size", type=int, default=224)
    d.add_argument("--iters", type=int, default=30)
    t = sub.add_parser("testacc")
    t.add_argument("run_dir")
    t.add_argument("test_dir")
    args = ap.parse_args()
    from tl_core.runtime.allocator import training_allocator

    # the probes run under the same process settings tl train applies (tl_core.runtime.allocator)
    with training_allocator() as tuned:
        out = {"floor": cmd_floor, "synthetic": cmd_synthetic, "datapath": cmd_datapath,
               "testacc": cmd_testacc}[args.cmd](args)
    out["allocator_tuned"] = tuned
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
