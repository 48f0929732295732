"""The pretrained network's view of each picture (its pooled features before the classifier), kept
per picture by content, so that work done once is not done again when pictures move.

Training caches the frozen layers' output per *set* of pictures (``training.features``: one file
per train or validation list, keyed by every path in it). That is right for a training run, but a
fix changes a path (a picture moved to another category) or the split, and the whole set misses.
Here the same features are kept per picture, keyed by the file's bytes (a moved picture keeps its
bytes, so it keeps its features), in one bank per model, weights and preprocessing:
``<cache>/picture-features/<bank>.safetensors``.

Users: :mod:`tl_core.results.mistakes` (the features it cross-validates on), the data check's odd
pictures and the Lab (they share the bank), and :func:`warm_training_cache`, which, before a
retrain, assembles the training cache's set files for the new lists from the bank, so the retrain
after a fix reads no picture through the network again (only pictures never seen before are
computed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from tl_core import __version__
from tl_core.config import RunConfig
from tl_core.files import save_safetensors_atomic
from tl_core.models.preprocess import Preprocessing
from tl_core.paths import cache_dir
from tl_core.runtime.cache_space import after_write, mark_used

log = logging.getLogger(__name__)

BANK_DIR = "picture-features"
BOUNDARY = "pre_logits"          # training.features' name for the pooled features before the classifier
MAX_BANK_ROWS = 200_000          # beyond this a bank keeps only the pictures of the latest request
CHUNK = 128                      # pictures decoded and run through the network at a time

Progress = Callable[[int, int], None]


@dataclass
class Extractor:
    """The pretrained network of a run's settings, ready to give pooled features."""

    config: RunConfig
    prep: Preprocessing
    model: torch.nn.Module
    weights_id: str
    device: object           # tl_core.runtime.device.DeviceInfo

    @property
    def bank_key(self) -> str:
        blob = json.dumps({"v": __version__, "model": self.config.model.name, "weights": self.weights_id,
                           "boundary": BOUNDARY, "prep": self.prep.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        from tl_core.training.features import compute_features

        def prefix(x: torch.Tensor) -> torch.Tensor:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

        dev = self.device
        return compute_features(prefix, images, self.prep.normalizer(dev.device), dev.device,
                                amp_dtype=dev.amp_dtype, channels_last=dev.channels_last)


def extractor(config: RunConfig, prep: Preprocessing | None = None) -> Extractor:
    """The network ``config`` starts from, with its pretrained weights (as training loads them; a
    "from scratch" run has none, so its model's usual pretrained weights stand in), in eval mode.
    ``prep``: the run's saved preprocessing (else the model's own at the configured size)."""
    from tl_core.models.weights import create_model
    from tl_core.runtime.device import pick_device
    from tl_core.training.features import weights_fingerprint

    weights = config.model.weights if config.freeze.kind != "scratch" else "auto"
    model, source = create_model(config.model.name, 2, weights)
    dev = pick_device(config.train.device, config.train.amp, config.train.channels_last)
    model.to(dev.device).eval().requires_grad_(False)   # only ever read (a freeze plan may be applied to look)
    if dev.channels_last:
        model.to(memory_format=torch.channels_last)
    prep = prep or Preprocessing.for_model(model, config.model.image_size)
    return Extractor(config, prep, model, weights_fingerprint(source.path), dev)


_known_keys: dict[tuple[str, int, int], str] = {}   # (path, size, mtime_ns) -> content key, this process


def content_key(path: str | Path) -> str | None:
    """What identifies a picture's bytes (None when it cannot be read). Remembered per path, size and
    modification time, so a list is read once per process, not once per use."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    seen = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if seen in _known_keys:
        return _known_keys[seen]
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    if len(_known_keys) > 500_000:
        _known_keys.clear()
    _known_keys[seen] = h.hexdigest()
    return _known_keys[seen]


# -- the bank -------------------------------------------------------------------------------------

def _bank_path(ex: Extractor) -> Path:
    return cache_dir() / BANK_DIR / f"{ex.bank_key}.safetensors"


def load_bank(ex: Extractor) -> dict[str, torch.Tensor]:
    """content key -> feature vector; empty when there is none yet (or it is damaged)."""
    path = _bank_path(ex)
    if not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = json.loads((fh.metadata() or {}).get("keys", "[]"))
            x = fh.get_tensor("x")
    except Exception as err:  # noqa: BLE001 - a damaged cache is only a miss
        log.info("picture feature bank %s unreadable: %s", path, err)
        return {}
    if len(keys) != len(x):
        return {}
    mark_used(path)
    return dict(zip(keys, x))


def save_bank(ex: Extractor, bank: dict[str, torch.Tensor], keep: Sequence[str] = ()) -> None:
    """Write the bank (whole or not at all); a full disk only costs the next time's work."""
    if len(bank) > MAX_BANK_ROWS:
        bank = {k: bank[k] for k in keep if k in bank}
    if not bank:
        return
    keys = list(bank)
    try:
        save_safetensors_atomic(_bank_path(ex), {"x": torch.stack([bank[k] for k in keys]).float().contiguous()},
                                metadata={"keys": json.dumps(keys)})
    except OSError as err:
        log.info("picture feature bank not saved: %s", err)
        return
    after_write(cache_dir(), _bank_path(ex))


# -- features for a list of pictures ----------------------------------------------------------------

@dataclass
class PictureFeatures:
    """Features of the readable pictures among those asked for, in the order asked."""

    x: torch.Tensor                 # (N, D) float32
    paths: list[str]                # the pictures they belong to (unreadable ones left out)
    computed: int                   # how many went through the network now (the others came from the bank)
    failed: list[tuple[str, str]]   # (path, reason) of pictures that could not be read


def picture_features(ex: Extractor, paths: Sequence[str], progress: Progress | None = None,
                     bank: dict[str, torch.Tensor] | None = None, save: bool = True) -> PictureFeatures:
    """Features for ``paths``: from the bank when their bytes were seen before, else computed (in
    chunks, reading the next while the network runs) and added to the bank."""
    from tl_core.runtime.allocator import training_allocator
    from tl_core.training.decoded import decode_records

    bank = load_bank(ex) if bank is None else bank
    keys = [content_key(p) for p in paths]
    missing = [i for i, k in enumerate(keys) if k is None or k not in bank]
    failed: list[tuple[str, str]] = [(paths[i], "could not be read") for i in missing if keys[i] is None]
    todo = [i for i in missing if keys[i] is not None]
    computed = 0
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]

    def read(part: list[int]):
        return decode_records([paths[i] for i in part], list(range(len(part))), ex.prep, allow_empty=True)

    # as training does: the next chunk is read while this one runs through the network, under the
    # malloc setting training runs with (~1.6x faster on a CPU, see runtime/allocator.py)
    with training_allocator(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="tl-read") as reader:
        pending = reader.submit(read, chunks[0]) if chunks else None
        for k, part in enumerate(chunks):
            dec = pending.result()
            pending = reader.submit(read, chunks[k + 1]) if k + 1 < len(chunks) else None
            failed += dec.failed
            if len(dec.images):
                feats = ex.features(dec.images)
                for row, pos in zip(feats, dec.labels.tolist()):
                    bank[keys[part[pos]]] = row.clone()
                computed += len(dec.images)
            if progress:
                progress(min((k + 1) * CHUNK, len(todo)), len(todo))
    if computed and save:
        save_bank(ex, bank, keep=[k for k in keys if k])
    kept = [i for i, k in enumerate(keys) if k is not None and k in bank]
    x = torch.stack([bank[keys[i]] for i in kept]).float() if kept else torch.empty(0)
    return PictureFeatures(x, [paths[i] for i in kept], computed, failed)


def add_to_bank(ex: Extractor, paths: Sequence[str], x: torch.Tensor, bank: dict[str, torch.Tensor]) -> int:
    """Put features computed elsewhere (training's set cache) into ``bank``; how many were new."""
    new = 0
    for path, row in zip(paths, x):
        key = content_key(path)
        if key is not None and key not in bank:
            bank[key] = row.float().clone()
            new += 1
    return new


# -- training's set cache ---------------------------------------------------------------------------

def training_cache_root(config: RunConfig) -> Path:
    return Path(config.train.cache_dir).expanduser() if config.train.cache_dir else cache_dir()


def training_set_key(ex: Extractor, paths: Sequence[str], labels: Sequence[int]) -> str:
    """The training cache's key for this list of pictures at the pooled-features boundary (the one a
    "classifier only" run caches), as :mod:`tl_core.training.prepare` computes it."""
    from tl_core.training.features import feature_cache_key

    return feature_cache_key(paths, labels, ex.config.model.name, ex.weights_id, BOUNDARY, ex.prep.to_dict())


def from_training_cache(ex: Extractor, sets: Sequence[tuple[Sequence[str], Sequence[int]]],
                        bank: dict[str, torch.Tensor]) -> int:
    """Fill ``bank`` from the training cache's files for ``sets`` (lists of paths and labels in
    training's order) where they exist and hold one row per picture; how many pictures were added."""
    from tl_core.training.features import load_cached_features

    added = 0
    for paths, labels in sets:
        cached = load_cached_features(training_cache_root(ex.config), training_set_key(ex, paths, labels))
        if cached is not None and len(cached["x"]) == len(paths):   # no unreadable picture left out
            added += add_to_bank(ex, paths, cached["x"], bank)
    return added


@dataclass
class Warmed:
    """What :func:`warm_training_cache` did: ``applies`` is False when the run trains more than
    the classifier (its frozen part ends elsewhere, so these features are not what it caches)."""

    applies: bool
    reused: int = 0
    computed: int = 0
    ready: bool = False

    def words(self) -> str:
        if not self.applies:
            return ("This run trains layers of the network itself, so it reads every picture through the network "
                    "again: it takes about as long as the first time.")
        if not self.ready:
            return "Some pictures could not be prepared ahead, so training reads them again."
        if self.computed == 0:
            return (f"All {self.reused} pictures reuse what the network saw the first time (moved pictures too), "
                    "so it takes seconds.")
        return (f"{self.reused} pictures reuse what the network saw the first time; {self.computed} new ones were "
                "read now.")


def warm_training_cache(config: RunConfig, progress: Progress | None = None) -> Warmed:
    """Before a retrain on fixed data: write the training cache's files for the train and
    validation lists training is about to make, assembled from the bank (pictures it has not seen
    are computed now, which training would do anyway). A "classifier only" run then finds its
    features cached and trains in seconds. Runs that train more of the network are left alone."""
    from tl_core.data.dataset import prepare_dataset
    from tl_core.models.freezing import apply_freeze_plan, make_freeze_plan
    from tl_core.training.features import find_prefix_split, load_cached_features, save_cached_features

    if not config.train.feature_cache:
        return Warmed(applies=False)
    ex = extractor(config)
    trial = _with_freeze_plan(ex, config, make_freeze_plan, apply_freeze_plan)
    split = find_prefix_split(trial)
    if split is None or split.boundary != BOUNDARY:
        return Warmed(applies=False)
    data = prepare_dataset(config.data)
    bank = load_bank(ex)
    out = Warmed(applies=True, ready=True)
    root = training_cache_root(config)
    for records in (data.train, data.val):
        paths, labels = [r.path for r in records], data.labels(records)
        key = training_set_key(ex, paths, labels)
        if load_cached_features(root, key) is not None:
            out.reused += len(paths)
            continue
        got = picture_features(ex, paths, progress, bank=bank)
        out.computed += got.computed
        out.reused += len(got.paths) - got.computed
        if got.failed:          # training leaves unreadable pictures out in its own way: let it
            out.ready = False
            continue
        y = torch.tensor(labels, dtype=torch.long)
        if save_cached_features(root, key, {"x": got.x, "y": y}) is None:
            out.ready = False
    return out


def _with_freeze_plan(ex: Extractor, config: RunConfig, make_plan, apply_plan) -> torch.nn.Module:
    """The extractor's model with the run's freeze plan applied (to see where its frozen part ends)."""
    plan = make_plan(ex.model, config.freeze)
    apply_plan(ex.model, plan)
    return ex.model


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)
