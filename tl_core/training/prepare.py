"""The one-time work before the first epoch: seed, device, data check, model and freeze plan, then
the training inputs, either the frozen prefix's features (computed once in a streamed pass whose
memory does not grow with the pictures, cached on disk) or the images decoded once into a
memory-mapped cache file; then the batches, with the class balance the loss or the sampler
corrects for; and what the run says about all this as training starts (``on_fit_start`` info,
summary.json)."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from tl_core.config import RunConfig
from tl_core.errors import ConfigError, DataError
from tl_core.files import short_path
from tl_core.models.freezing import FreezePlan, apply_freeze_plan, make_freeze_plan
from tl_core.models.preprocess import Preprocessing
from tl_core.paths import cache_dir
from tl_core.runs import RunFolder
from tl_core.runtime.allocator import covers_this_thread
from tl_core.runtime.device import DeviceInfo, configure_threads, pick_device
from tl_core.training.augment import BatchAugment
from tl_core.training.callbacks import Callback
from tl_core.training.decoded import PageRelease, decode_records, decode_to_cache, decoded_cache_key, load_decoded_cache
from tl_core.training.distributed import Dist
from tl_core.training.features import (compute_features, feature_cache_key, find_prefix_split, load_cached_features,
                                       save_cached_features, weights_fingerprint)

FEATURE_MEMORY_BUDGET = 1.5 * 2**30   # beyond this the boundary activations are not cached
CACHE_NOT_SAVED = ("The frozen layers' output could not be kept on disk for the next run (the cache folder {folder} "
                   "is full or cannot be written). This run goes on; the next one computes it again. Free some "
                   "space there, or set the TL_CACHE_DIR environment variable to a folder on another disk.")
DECODED_NOT_SAVED = ("The decoded pictures could not be kept on disk (the cache folder {folder} is full or cannot be "
                     "written), so this run keeps them in memory, which needs more memory for many pictures. Free "
                     "some space there, or set the TL_CACHE_DIR environment variable to a folder on another disk.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reset_classifier_init(model: nn.Module) -> None:
    """Start the new classifier near zero. Some timm families initialise it with a range of
    1/sqrt(num_classes), which for 4 classes gives logits of +-5 on pretrained features: the head
    then spends its first dozens of steps unlearning noise, which small data sets cannot afford."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    for m in classifier.modules() if isinstance(classifier, nn.Module) else ():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def class_weights(labels: torch.Tensor, num_classes: int, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Loss weights per class, inversely proportional to its pictures (``counts`` when given, e.g.
    summed over several processes, else counted in ``labels``)."""
    counts = (torch.bincount(labels, minlength=num_classes) if counts is None else counts).float().clamp(min=1)
    w = counts.sum() / (num_classes * counts)
    return w / w.mean()


@dataclass
class Prepared:
    """What one fit is made of. :func:`prepare_model` fills the first part; :func:`load_inputs`
    the training inputs (``mode`` says which kind: ``"features"`` or ``"full"``)."""
    dev: DeviceInfo
    data: Any                       # tl_core.data.dataset.PreparedDataset
    classes: list[str]
    model: nn.Module
    net: nn.Module                  # the model, compiled where asked
    weights_source: Any
    plan: FreezePlan
    prep: Preprocessing
    normalize: Callable[[torch.Tensor], torch.Tensor]
    train_paths: list[str]
    train_labels: list[int]
    val_paths: list[str]
    val_labels: list[int]
    mode: str | None = None
    split: Any = None               # tl_core.training.features prefix split, in "features" mode
    feature_cache_hit: bool | None = None
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    # several processes (tl_core.training.distributed): how many, whether the inputs above are this
    # process's block only (decoded pictures) or all of them (features), which validation inputs this
    # process evaluates (None: all it holds), and the trainable part under DistributedDataParallel
    world_size: int = 1
    sharded: bool = False
    val_total: int = 0
    val_index: torch.Tensor | None = None
    ddp: nn.Module | None = None
    # "none of these" calibration data gathered from every process's share at the end (sharded inputs only)
    calibration: Any = None
    # decoded pictures read from memory-mapped cache files (tl_core.training.decoded): the loop reports
    # the bytes it reads so that the pages are handed back; empty when the pictures are in memory
    pages: PageRelease = field(default_factory=PageRelease)


def prepare_model(config: RunConfig, run: RunFolder | None, events: Callback, dist: Dist = Dist()) -> Prepared:
    """Seed, device, the checked data set and the model with its freeze plan applied. With several
    processes each has its own seed (rank 0 the run's), shares the CPU cores, and receives rank 0's
    data check and split."""
    tcfg = config.train
    seed_everything(tcfg.seed + dist.rank)
    configure_threads(tcfg.num_threads or _cpu_share(dist))
    dev = pick_device(tcfg.device, tcfg.amp, tcfg.channels_last)
    if dist.active and dev.device.type == "mps":
        raise ConfigError("Training with several processes works on NVIDIA GPUs or on the CPU, not on Apple's GPU "
                          "(MPS). Use --device cpu, or train in one process.")

    from tl_core.models.catalogue import get_model_info
    get_model_info(config.model.name)  # a typo in the model name is answered before reading pictures
    from tl_core.data.dataset import prepare_dataset, training_warnings
    data = dist.from_main(lambda: prepare_dataset(config.data, progress=lambda d, t: events.on_prepare("check", d, t)))
    classes = data.classes
    for kind, message in training_warnings(data):  # said (and recorded) before any time is spent
        events.on_warning(kind, message)

    from tl_core.models.weights import create_model
    weights = "none" if config.freeze.kind == "scratch" else config.model.weights
    model, weights_source = dist.main_first(lambda: create_model(config.model.name, len(classes), weights))
    reset_classifier_init(model)
    plan = make_freeze_plan(model, config.freeze)
    apply_freeze_plan(model, plan)
    model.to(dev.device)
    if dev.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if tcfg.compile and dev.device.type == "cuda":  # pays off for long GPU runs only
        net = torch.compile(model)
    prep = Preprocessing.for_model(model, config.model.image_size)

    label_of = {c: i for i, c in enumerate(classes)}
    p = Prepared(dev=dev, data=data, classes=classes, model=model, net=net, weights_source=weights_source,
                 plan=plan, prep=prep, normalize=prep.normalizer(dev.device),
                 train_paths=[r.path for r in data.train], train_labels=[label_of[r.label] for r in data.train],
                 val_paths=[r.path for r in data.val], val_labels=[label_of[r.label] for r in data.val],
                 world_size=dist.world_size)
    if run is not None:
        run.save_labels(classes)
        run.save_preprocessing(prep.to_dict())
    return p


def _cpu_share(dist: Dist) -> int | None:
    """CPU threads per process when several share this computer's cores (None: all of them)."""
    from tl_core.runtime.device import cpu_cores

    return max(1, cpu_cores() // dist.local_world_size) if dist.active else None


def load_inputs(p: Prepared, config: RunConfig, events: Callback, dist: Dist = Dist()) -> None:
    """The training inputs: the frozen prefix's features where there is a prefix to cache and
    they fit in memory, else the decoded images (the whole model then runs every step). With
    several processes each computes its block of the features and all are gathered, or each decodes
    and keeps its own share of the pictures (dealt, so that every category is in every share)."""
    split = find_prefix_split(p.model) if config.train.feature_cache else None
    p.split = split
    p.model.eval()
    if split is not None and _load_or_compute_features(p, split, config, events, dist):
        p.mode = "features"
        p.val_index = dist.stride(len(p.val_y))
    else:
        p.mode = "full"
        p.split = None
        p.sharded = dist.active
        total = len(p.train_paths) + len(p.val_paths)
        tb, vb = dist.deal(len(p.train_paths)), dist.deal(len(p.val_paths))
        cache_root = _cache_root(config)
        p.train_x, p.train_y = _decode(p, p.train_paths[tb], p.train_labels[tb], events, 0, total, dist,
                                       len(p.train_paths), cache_root)
        p.val_x, p.val_y = _decode(p, p.val_paths[vb], p.val_labels[vb], events, len(p.train_paths), total, dist,
                                   len(p.val_paths), cache_root)
        if dist.any(len(p.train_y) == 0):
            raise ConfigError(f"There are more training processes ({dist.world_size}) than pictures to learn from "
                              f"({len(p.train_paths)}): each process needs some. Use fewer processes.")


def _decode(p: Prepared, paths, labels, events: Callback, done_before: int = 0, total: int | None = None,
            dist: Dist = Dist(), n_all: int | None = None, cache_root: Path | None = None):
    """The pictures decoded once: memory-mapped from the decoded cache (decoded into it first on a
    miss), or, when the cache cannot be written, into memory. With several processes each has its
    own share and its own cache file."""
    # train and val pictures are read one after the other: progress counts both as one stage (with
    # several processes, rank 0 tells its own share's progress as the whole's)
    total = len(paths) if total is None else total
    n_all = len(paths) if n_all is None else n_all

    def progress(d, _t):
        events.on_prepare("decode", done_before + _shown(d, len(paths), n_all, dist), total)

    dec = None
    if cache_root is not None and len(paths):
        key = decoded_cache_key(paths, p.prep)
        cached = load_decoded_cache(cache_root, key, labels, p.prep, paths)
        if cached is not None:
            progress(len(paths), len(paths))
        else:
            cached = decode_to_cache(paths, labels, p.prep, cache_root, key, progress=progress,
                                     workers=_cpu_share(dist))
            if cached is None:
                events.on_warning("cache_not_saved", DECODED_NOT_SAVED.format(folder=short_path(cache_root)))
        if cached is not None:
            dec, rows = cached
            p.pages.add(rows)
    if dec is None:
        dec = decode_records(paths, labels, p.prep, progress=progress, workers=_cpu_share(dist))
    for path, reason in dec.failed:
        events.on_warning("unreadable", f"Skipped {path}: {reason}.")
    images = dec.images
    if p.dev.device.type == "cuda" and images.nbytes < 0.5 * torch.cuda.mem_get_info()[0]:
        images = images.to(p.dev.device)   # keep the whole data set on the GPU when it fits
        p.pages.release()
    return images, dec.labels.to(images.device)


def _shown(done: int, n: int, n_all: int, dist: Dist) -> int:
    """Progress through ``n_all`` pictures as rank 0 tells it from its own share of ``n``."""
    return done if not dist.active else (n_all if done >= n else min(done * dist.world_size, n_all))


def _cache_root(config: RunConfig) -> Path:
    return Path(config.train.cache_dir).expanduser() if config.train.cache_dir else cache_dir()


def _load_or_compute_features(p: Prepared, split, config: RunConfig, events: Callback, dist: Dist = Dist()) -> bool:
    cache_root = _cache_root(config)
    wid = weights_fingerprint(p.weights_source.path)
    sets = (("train", p.train_paths, p.train_labels), ("val", p.val_paths, p.val_labels))
    keys = {name: feature_cache_key(paths, labels, config.model.name, wid, split.boundary, p.prep.to_dict())
            for name, paths, labels in sets}
    feats: dict[str, torch.Tensor] = {}
    p.feature_cache_hit = True
    for name in ("train", "val"):
        cached = load_cached_features(cache_root, keys[name])
        if cached is None:
            p.feature_cache_hit = False
            break
        feats[name + "_x"], feats[name + "_y"] = cached["x"], cached["y"]
    if dist.any(not p.feature_cache_hit):   # every process computes, or none (a miss on another computer)
        p.feature_cache_hit = False
        feats, unsaved = {}, False
        total, done = len(p.train_paths) + len(p.val_paths), 0
        for name, paths, labels in sets:
            block, skipped = dist.block(len(paths)), ([] if dist.active else None)
            streamed = _stream_features(p, split, paths[block], labels[block], events, done, total, dist,
                                        len(paths), skipped)
            if dist.any(streamed is None):
                return False
            x, y = dist.gather_rows(streamed[0]), dist.gather_rows(streamed[1])
            for path, reason in sum(dist.gather_objects(skipped), []) if skipped is not None else ():
                events.on_warning("unreadable", f"Skipped {path}: {reason}.")
            if not len(x):
                raise DataError("None of the images could be read. Run the data check to see why.")
            feats[name + "_x"], feats[name + "_y"] = x, y
            if dist.local_rank == 0 and save_cached_features(cache_root, keys[name], {"x": x, "y": y}) is None:
                unsaved = True
            done += len(paths)
        if unsaved:
            events.on_warning("cache_not_saved", CACHE_NOT_SAVED.format(folder=short_path(cache_root)))
    device = p.dev.device
    p.train_x, p.train_y = feats["train_x"].to(device), feats["train_y"].to(device)
    p.val_x, p.val_y = feats["val_x"].to(device), feats["val_y"].to(device)
    return True


STREAM_CHUNK = 128   # pictures decoded at a time while the previous chunk runs through the prefix
# pictures that go through the frozen prefix at once. On a CPU the activations of a batch are what the
# feature pass's memory is made of (tf_efficientnet_lite0 at 224 px: ~10 MB a picture in the first blocks)
# and the allocator keeps the largest it has seen, while a larger batch is no faster there: measured on
# 1,000 pets photos (2 cores), batch 64 peaked at 2.6 GB, 16 at 1.3 GB and 8 at 1.1 GB, all at the same
# speed (bench/RESULTS.md). A GPU wants large batches and has its own memory.
FEATURE_BATCH = {"cpu": 8}
FEATURE_BATCH_DEFAULT = 64


def feature_batch(device: torch.device) -> int:
    return FEATURE_BATCH.get(device.type, FEATURE_BATCH_DEFAULT)


def _stream_features(p: Prepared, split, paths, labels, events: Callback, done_before: int,
                     total: int, dist: Dist = Dist(), n_all: int | None = None,
                     skipped: list | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Read the pictures and run the frozen prefix in one streamed pass: a chunk is decoded (in
    threads) while the previous one runs through the network (on all cores), so reading and
    computing overlap, progress is one stage that only moves forward, and only a chunk of decoded
    pictures is ever in memory. None when the features would not fit in memory (the caller then
    trains the whole model each step). With several processes ``paths`` is this process's block of
    ``n_all`` pictures, whose size decides whether all features fit; unreadable ones go to ``skipped``
    (rank 0 reports everyone's) and an empty block gives empty features."""
    from concurrent.futures import ThreadPoolExecutor

    dev = p.dev
    n_all = len(paths) if n_all is None else n_all
    workers = _cpu_share(dist)
    chunks = [(paths[i:i + STREAM_CHUNK], labels[i:i + STREAM_CHUNK]) for i in range(0, len(paths), STREAM_CHUNK)]
    # two decode buffers, used in turn, and one features tensor for the whole block, all allocated once:
    # a fresh 19 MB buffer per chunk left small long-lived blocks between the freed ones, and the
    # process grew by about a chunk each chunk (bench/RESULTS.md, issue 16)
    size = p.prep.size
    buffers = [torch.empty((min(STREAM_CHUNK, len(paths)), 3, size, size), dtype=torch.uint8) for _ in range(2)]
    feats: torch.Tensor | None = None
    ys: list[torch.Tensor] = []
    filled = 0
    done = 0

    def read(k: int):
        return reader.submit(decode_records, *chunks[k], p.prep, None, workers, True, buffers[k % 2])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tl-read") as reader:
        pending = read(0) if chunks else None
        for k in range(len(chunks)):
            dec = pending.result()
            # the next chunk goes into the other buffer: the one whose pictures went through last time
            pending = read(k + 1) if k + 1 < len(chunks) else None
            for path, reason in dec.failed:
                if skipped is not None:
                    skipped.append((path, reason))
                else:
                    events.on_warning("unreadable", f"Skipped {path}: {reason}.")
            if len(dec.images) and feats is None:
                # the size of one picture's features decides whether caching all of them fits in memory
                probe = compute_features(split.prefix, dec.images[:1], p.normalize, dev.device,
                                         amp_dtype=dev.amp_dtype, channels_last=dev.channels_last)
                if probe[0].numel() * 4 * n_all > FEATURE_MEMORY_BUDGET:
                    events.on_warning("no_feature_cache", "The frozen layers' output is too large to keep in "
                                      "memory for this many images; training runs the whole model each step.")
                    if pending is not None:
                        pending.cancel()
                    return None
                feats = torch.empty((len(paths), *probe.shape[1:]), dtype=torch.float32)
            if len(dec.images):
                compute_features(split.prefix, dec.images, p.normalize, dev.device,
                                 batch_size=feature_batch(dev.device), amp_dtype=dev.amp_dtype,
                                 channels_last=dev.channels_last, out=feats[filled:filled + len(dec.images)])
                filled += len(dec.images)
                ys.append(dec.labels)
            del dec
            done += len(chunks[k][0])
            events.on_prepare("features", done_before + _shown(done, len(paths), n_all, dist), total)
    if not filled:
        if dist.active:   # this block had nothing readable; the gathered whole decides
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        raise DataError("None of the images could be read. Run the data check to see why.")
    return (feats if filled == len(feats) else feats[:filled].clone()), torch.cat(ys)


@dataclass
class Balance:
    """How the training corrects for classes of very different sizes."""
    mode: str                           # "weights" (in the loss), "sampler" or "none"
    imbalance_ratio: float              # largest class / smallest class
    weight: torch.Tensor | None         # per-class loss weights, on the device
    sample_p: torch.Tensor | None       # per-image sampling weights, for "sampler"


def balance_classes(train_y: torch.Tensor, num_classes: int, setting: str, device: torch.device,
                    counts: torch.Tensor | None = None) -> Balance:
    """``counts``: the pictures per class of the whole run, when ``train_y`` is only this process's block."""
    labels = train_y.cpu()
    counts = torch.bincount(labels, minlength=num_classes) if counts is None else counts.cpu()
    imbalance = float(counts.max() / counts.clamp(min=1).min())
    mode = setting
    if mode == "auto":
        from tl_core.data.checks import IMBALANCE_WARN_RATIO
        mode = "weights" if imbalance >= IMBALANCE_WARN_RATIO else "none"
    weight = class_weights(labels, num_classes, counts).to(device) if mode == "weights" else None
    sample_p = (1.0 / counts.float().clamp(min=1))[labels] if mode == "sampler" else None
    return Balance(mode, imbalance, weight, sample_p)


@dataclass
class Batches:
    """How each epoch is cut into batches, and what a training step needs beyond the model."""
    size: int
    steps_per_epoch: int
    total_steps: int
    balance: Balance
    generator: torch.Generator        # epoch orders and augmentation draw from it, in that order
    augment: BatchAugment
    n_train: int                      # pictures to learn from (in all processes together)
    order: Callable[[int], torch.Tensor] | None = None   # several processes: this one's share of an epoch

    def epoch_order(self, epoch: int = 1) -> torch.Tensor:
        """The training images of one epoch, in order (drawn by class weight with the sampler)."""
        if self.order is not None:
            return self.order(epoch)
        if self.balance.sample_p is not None:
            return torch.multinomial(self.balance.sample_p, self.n_train, replacement=True, generator=self.generator)
        return torch.randperm(self.n_train, generator=self.generator)


def make_batches(p: Prepared, config: RunConfig, dist: Dist = Dist()) -> Batches:
    """One process: ``batch_size`` pictures a step. Several: the same step size for the whole run,
    each process taking its part, and the same number of steps in each process."""
    tcfg = config.train
    n_here = len(p.train_y)
    n_train = n_here
    counts = None
    if p.sharded:   # each process holds its own share: the class counts and the total are summed
        counts = dist.sum_tensor(torch.bincount(p.train_y.cpu(), minlength=len(p.classes)))
        n_train = int(counts.sum())
        p.val_total = int(dist.sum([len(p.val_y)])[0])
    n_rank = dist.rank_count(n_here, p.sharded)
    size = min(dist.rank_batch(tcfg.batch_size), n_rank)
    steps_per_epoch = max(1, n_rank // size) if n_rank >= size else 1
    balance = balance_classes(p.train_y, len(p.classes), tcfg.balance, p.dev.device, counts)
    gen = torch.Generator().manual_seed(tcfg.seed + dist.rank)
    augment = BatchAugment(tcfg.augment if p.mode == "full" else "none", generator=gen)
    order = dist.epoch_sampler(n_here, n_rank, tcfg.seed, balance.sample_p, gen, p.sharded)
    return Batches(size, steps_per_epoch, steps_per_epoch * tcfg.epochs, balance, gen, augment, n_train, order)


def fit_start_info(p: Prepared, config: RunConfig, b: Batches, lr: float, prepare_seconds: float) -> dict:
    """The ``on_fit_start`` payload: what is about to be trained, on what, and how."""
    return {"model": config.model.name, "weights": p.weights_source.description, "device": p.dev.to_dict(),
            "mode": p.mode, "boundary": p.split.boundary if p.split else None,
            "feature_cache_hit": p.feature_cache_hit if p.mode == "features" else None,
            "epochs": config.train.epochs, "steps_per_epoch": b.steps_per_epoch, "batch_size": b.size * p.world_size,
            "lr": lr, "train_images": b.n_train, "val_images": p.val_total if p.sharded else len(p.val_y),
            "classes": p.classes,
            "trainable_params": p.plan.trainable_params, "total_params": p.plan.total_params,
            "frozen_groups": p.plan.frozen, "balance": b.balance.mode, "imbalance_ratio": b.balance.imbalance_ratio,
            "allocator_tuned": covers_this_thread(), "prepare_seconds": prepare_seconds, "world_size": p.world_size}


def run_summary(p: Prepared, config: RunConfig, info: dict) -> dict:
    """The run folder's summary.json as training starts (the end adds the results)."""
    counts = {c: 0 for c in p.classes}
    for r in p.data.train:
        counts[r.label] += 1
    val_counts = {c: 0 for c in p.classes}
    for r in p.data.val:
        val_counts[r.label] += 1
    report = p.data.report
    split = getattr(p.data, "split", None)  # how val was chosen: {"kind": "folder"|"random", "val_fraction", ...}
    split = split.to_dict() if split is not None else None
    return {"classes": p.classes, "counts": counts, "val_counts": val_counts, "split": split,
            "freeze": p.plan.to_dict(), "train": asdict(config.train), "model": config.model.name,
            "weights": p.weights_source.description, "device": p.dev.to_dict(), "mode": p.mode,
            "problems": [problem.to_dict() for problem in report.problems],
            "unchecked_classes": p.data.unchecked,
            "imbalance_ratio": getattr(report, "imbalance_ratio", info.get("imbalance_ratio")),
            "val_records": [{"path": r.path, "label": r.label} for r in p.data.val],
            "preprocessing": p.prep.to_dict(), "world_size": p.world_size, "info": info}
