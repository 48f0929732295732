"""How long will an epoch take on this computer? A quick measurement, not a guess.

A beginner choosing between models needs "about 20 seconds per epoch here", not FLOP counts.
We build the model (no weights needed: speed does not depend on the values), apply the freeze
plan, and time a small batch at the model's input size on the device training would use:

* when a frozen prefix can be cached (see :mod:`tl_core.training.features`; always for the 'head'
  preset), the prefix costs **one forward pass per image, once**, and each epoch only runs the
  trainable rest (tiny for a lone classifier);
* otherwise every epoch runs a forward and backward pass over every training image (backward
  stops at the first trainable layer, so freezing early groups still saves time), plus a
  forward pass over the validation images.

Three things keep the numbers honest on a real laptop (a busy one included):

* each timing is the **best of several short runs**, so a burst of other work on the machine
  does not turn 23 seconds into 23 minutes;
* the preparation is priced with **the user's own pictures**: a few are opened and timed (a
  12-megapixel phone photo costs a hundred times a small PNG), and every picture is read twice
  (the check, then the decoding), spread over the cores;
* every finished run on this computer is remembered (``timings.json`` in the cache folder, see
  :func:`record_run`), and later estimates for the same model and setting are **corrected by how
  far the formula was from the real runs** (the median ratio of the last few).

Measurements are kept per model, freeze plan, image size and device, in memory and on disk (the
same ``timings.json``), so the pages pay for each one once per computer, not once per server
start. :func:`estimate` is the one entry point the CLI (``tl estimate``) and every page use.
Nothing here imports Streamlit or :mod:`tl_core.app`: measuring in a background thread, paused
while a model trains, is the app's job (:mod:`tl_core.app.timing`).
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import torch

from tl_core.config import FreezeConfig, RunConfig
from tl_core.files import write_json_atomic
from tl_core.paths import cache_dir
from tl_core.runtime.device import cpu_cores, pick_device

# Reading one picture (open, decode, resize) on one core, in seconds, when no picture of the
# user's can be timed: Fashion-MNIST PNGs take ~1 ms, phone JPEGs 20-60 ms.
DECODE_SECONDS_PER_IMAGE = 0.008
# Preparation reads every picture twice: the check opens it, then it is decoded for training.
READS_PER_IMAGE = 2
TIMINGS_FILE = "timings.json"
HISTORY_LIMIT = 200            # real runs remembered
CALIBRATION_RUNS = 5           # the most recent matching runs that correct an estimate
FACTOR_RANGE = (0.25, 4.0)     # a correction outside this says the run was unusual, not the formula

_CACHE: dict[tuple, "Measurement"] = {}
_LOCK = threading.Lock()
_READ_CACHE: dict[tuple, float] = {}


@dataclass(frozen=True)
class Measurement:
    """Seconds per image for each kind of work, measured on this device."""

    model_name: str
    image_size: int
    device: str
    mode: str                    # "features" (frozen prefix cached once) or "full"
    prefix_seconds: float        # one forward of the frozen prefix (features mode; 0 otherwise)
    train_seconds: float         # one training step's share (forward + backward of what trains)
    eval_seconds: float          # one validation forward (of the suffix in features mode)
    trainable_params: int
    total_params: int
    batch: int
    build_seconds: float = 0.0   # building the network once (a run also loads its weights: about as long)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "Measurement":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True)
class Estimate:
    """Expected time for one run: a one-time preparation, then each epoch."""

    model_name: str
    mode: str
    prepare_seconds: float       # checking and reading the pictures (and the frozen prefix) once
    epoch_seconds: float         # each epoch after the preparation
    n_train: int
    n_val: int
    measurement: Measurement
    read_seconds: float = DECODE_SECONDS_PER_IMAGE   # one picture read on one core
    runs_used: int = 0           # real runs on this computer that corrected the numbers

    @property
    def first_epoch_seconds(self) -> float:
        return self.prepare_seconds + self.epoch_seconds

    def total_seconds(self, epochs: int) -> float:
        return self.prepare_seconds + self.epoch_seconds * max(1, int(epochs))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["first_epoch_seconds"] = self.first_epoch_seconds
        return d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, repeats: int) -> float:
    """The best of ``repeats`` timings after a warm-up: other work on the machine only ever makes
    a run slower, so the fastest one is the closest to what the step really costs."""
    fn()  # warm-up (allocations, cudnn autotune, lazy init)
    _sync(device)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _default_batch(device: torch.device) -> int:
    # Small on a CPU (it runs at the same per-image speed and answers fast); a GPU only shows
    # its real throughput with a real batch.
    return 32 if device.type == "cuda" else 4


# -- the timings file: measurements and real runs, per computer -----------------------------------

def _timings_path() -> Path:
    return cache_dir() / TIMINGS_FILE


def _load_timings() -> dict:
    try:
        raw = json.loads(_timings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"measurements": {}, "runs": []}
    if not isinstance(raw, dict):
        return {"measurements": {}, "runs": []}
    measurements = raw.get("measurements") if isinstance(raw.get("measurements"), dict) else {}
    runs = [r for r in raw.get("runs") or [] if isinstance(r, dict)]
    return {"measurements": measurements, "runs": runs}


def _save_timings(data: dict) -> None:
    try:
        write_json_atomic(_timings_path(), data)
    except OSError:  # a read-only cache only means the next start measures again
        pass


def _machine_key() -> str:
    """Measurements are only reused on the same computer with the same software."""
    return f"torch{torch.__version__}|threads{torch.get_num_threads()}|cores{cpu_cores()}"


def _disk_key(key: tuple) -> str:
    return json.dumps([_machine_key(), *[list(k) if isinstance(k, tuple) else k for k in key]])


def measure(model_name: str, frozen_groups: list[str] | tuple[str, ...] | None = None, preset: str = "head",
            num_classes: int = 2, image_size: int | None = None, device: str = "auto",
            batch: int | None = None, feature_cache: bool = True) -> Measurement:
    """Time the model with this freeze plan on this device (kept in memory and on disk).

    ``frozen_groups`` overrides ``preset`` exactly like :class:`FreezeConfig`. The number of
    classes barely matters for speed; it only sizes the new classifier.
    """
    key = _key(model_name, frozen_groups, preset, num_classes, image_size, device, batch, feature_cache)
    hit = _cached(key)
    if hit is not None:
        return hit
    from tl_core.runtime.allocator import training_allocator

    dev = pick_device(device, amp=True, channels_last=True)
    with training_allocator():  # time the steps under the settings training runs with
        result = _measure_uncached(model_name, FreezeConfig(preset=preset, frozen_groups=frozen_groups),
                                   num_classes, image_size, dev, batch, feature_cache)
    with _LOCK:
        _CACHE[key] = result
        data = _load_timings()
        data["measurements"][_disk_key(key)] = result.to_dict()
        _save_timings(data)
    return result


def _key(model_name, frozen_groups, preset, num_classes, image_size, device, batch, feature_cache) -> tuple:
    frozen_key = tuple(frozen_groups) if frozen_groups is not None else None
    dev = pick_device(device, amp=True, channels_last=True)
    return (model_name, preset if frozen_key is None else None, frozen_key, int(num_classes), image_size,
            str(dev.device), batch, feature_cache)


def _cached(key: tuple) -> Measurement | None:
    """From memory, else from this computer's timings file (then remembered in memory)."""
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        raw = _load_timings()["measurements"].get(_disk_key(key))
        if isinstance(raw, dict):
            try:
                hit = _CACHE[key] = Measurement.from_dict(raw)
            except TypeError:
                hit = None
        return hit


def cached_measure(model_name: str, frozen_groups: list[str] | tuple[str, ...] | None = None,
                   preset: str = "head", num_classes: int = 2, image_size: int | None = None,
                   device: str = "auto", feature_cache: bool = True) -> Measurement | None:
    """:func:`measure`'s result when it has been taken on this computer already, else None."""
    return _cached(_key(model_name, frozen_groups, preset, num_classes, image_size, device, None, feature_cache))


def _measure_uncached(model_name, freeze: FreezeConfig, num_classes, image_size, dev, batch, feature_cache):
    from tl_core.models.builder import build_network
    from tl_core.training.features import find_prefix_split
    from tl_core.models.freezing import apply_freeze_plan, make_freeze_plan, set_train_mode

    device = dev.device
    t_build = time.perf_counter()
    model = build_network(model_name, max(2, int(num_classes)))
    build_seconds = time.perf_counter() - t_build
    plan = make_freeze_plan(model, freeze)
    apply_freeze_plan(model, plan)
    model.to(device)
    if dev.channels_last:
        model.to(memory_format=torch.channels_last)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = int(image_size or (cfg.get("input_size") or (3, 224, 224))[-1])
    b = int(batch or _default_batch(device))
    x = torch.randn(b, 3, size, size, device=device)
    if dev.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, max(2, int(num_classes)), (b,), device=device)
    amp = dict(device_type=device.type, dtype=dev.amp_dtype, enabled=dev.amp_dtype is not None)
    repeats = 3
    trainable = [p for p in model.parameters() if p.requires_grad]

    model.eval()
    split = find_prefix_split(model) if feature_cache else None

    def step(inp, forward):
        set_train_mode(model)
        with torch.autocast(**amp):
            out = forward(inp)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        for p in trainable:
            p.grad = None

    def infer(inp, forward):
        model.eval()
        with torch.inference_mode(), torch.autocast(**amp):
            return forward(inp)

    if split is not None:
        mode = "features"
        prefix_t = _timed(lambda: infer(x, split.prefix), device, repeats)
        feats = infer(x, split.prefix).float().clone()
        train_t = _timed(lambda: step(feats, split.suffix), device, repeats)
        eval_t = _timed(lambda: infer(feats, split.suffix), device, repeats)
    else:
        mode = "full"
        prefix_t = 0.0
        train_t = _timed(lambda: step(x, model), device, repeats)
        eval_t = _timed(lambda: infer(x, model), device, repeats)
    return Measurement(model_name=model_name, image_size=size, device=str(device), mode=mode,
                       prefix_seconds=prefix_t / b, train_seconds=train_t / b, eval_seconds=eval_t / b,
                       trainable_params=plan.trainable_params, total_params=plan.total_params, batch=b,
                       build_seconds=build_seconds)


# -- the user's pictures ----------------------------------------------------------------------------

def sample_read_seconds(paths: Sequence[str], k: int = 3, size: int = 224) -> float:
    """Seconds to open, decode and resize one of these pictures on one core: the median of ``k``
    pictures spread over the list (remembered per list). Unreadable ones are skipped."""
    paths = list(paths)
    if not paths:
        return DECODE_SECONDS_PER_IMAGE
    picks = [paths[int(i * (len(paths) - 1) / max(1, k - 1))] for i in range(min(k, len(paths)))]
    key = (tuple(picks), size)
    if key in _READ_CACHE:
        return _READ_CACHE[key]
    from tl_core.data.images import load_image

    times = []
    for path in dict.fromkeys(picks):
        t0 = time.perf_counter()
        try:
            load_image(path).resize((size, size))
        except Exception:  # noqa: BLE001 - the check reports unreadable pictures; here they cost nothing
            continue
        times.append(time.perf_counter() - t0)
    result = statistics.median(times) if times else DECODE_SECONDS_PER_IMAGE
    _READ_CACHE[key] = result
    return result


def planned_split(data_root: str, val_fraction: float) -> tuple[int, int, list[str]]:
    """(pictures to learn from, pictures to check with, every picture's path) as training will
    split the folder (:func:`tl_core.data.dataset.split_facts`: its own val/ folder when it has
    one, else ``val_fraction`` of each category). Names only: no picture is opened."""
    from tl_core.config import DataConfig
    from tl_core.data.dataset import split_facts
    from tl_core.data.scan import scan_folder

    scan = scan_folder(data_root)
    facts = split_facts(DataConfig(root=str(data_root), val_fraction=val_fraction), scan=scan)
    return facts.n_train, facts.n_val, [r.path for r in scan.records]


# -- estimates ----------------------------------------------------------------------------------------

def estimate_from_measurement(m: Measurement, n_train: int, n_val: int, read_seconds: float | None = None,
                              prepare_factor: float = 1.0, epoch_factor: float = 1.0,
                              runs_used: int = 0) -> Estimate:
    n_all = max(0, int(n_train)) + max(0, int(n_val))
    read = DECODE_SECONDS_PER_IMAGE if read_seconds is None else float(read_seconds)
    reads = n_all * READS_PER_IMAGE * read / max(1, min(cpu_cores(), 8))
    prepare = reads + 2 * m.build_seconds + (n_all * m.prefix_seconds if m.mode == "features" else 0.0)
    epoch = max(0, int(n_train)) * m.train_seconds + max(0, int(n_val)) * m.eval_seconds
    return Estimate(model_name=m.model_name, mode=m.mode, prepare_seconds=prepare * prepare_factor,
                    epoch_seconds=epoch * epoch_factor, n_train=int(n_train), n_val=int(n_val), measurement=m,
                    read_seconds=read, runs_used=runs_used)


def measure_forward(model_name: str, image_size: int | None = None, device: str = "auto",
                    batch: int | None = None) -> Measurement:
    """Only the forward pass of the whole model: the cheapest measurement, enough for the 'head'
    preset (the Model page takes it for every catalogue entry)."""
    return measure(model_name, None, "head", 2, image_size, device, batch, feature_cache=True)


def _rough_full(m: Measurement) -> Measurement:
    """A full-training measurement derived from a forward-only one (backward ~ 2x forward)."""
    fwd = m.prefix_seconds + m.eval_seconds
    return Measurement(model_name=m.model_name, image_size=m.image_size, device=m.device, mode="full",
                       prefix_seconds=0.0, train_seconds=3.0 * fwd, eval_seconds=fwd,
                       trainable_params=m.total_params, total_params=m.total_params, batch=m.batch,
                       build_seconds=m.build_seconds)


def estimate_run(model_name: str, n_images: int, val_fraction: float = 0.2,
                 freeze: FreezeConfig | None = None, num_classes: int = 2, image_size: int | None = None,
                 device: str = "auto", feature_cache: bool = True, exact: bool = True) -> Estimate:
    """Expected preparation and per-epoch seconds for ``n_images`` pictures in total, from the
    formula alone (no pictures timed, no real runs): see :func:`estimate` for the full answer.

    ``exact=True`` times this very freeze plan (forward and backward). ``exact=False`` times only
    a forward pass (cheap, shared by every plan of the model): exact for the 'head' preset, and an
    upper bound (everything trains) for the others.
    """
    freeze = freeze or FreezeConfig()
    n_val = int(round(max(0, n_images) * val_fraction))
    n_train = max(0, int(n_images) - n_val)
    is_head = freeze.frozen_groups is None and freeze.kind == "head"
    if exact or (is_head and feature_cache):
        m = measure(model_name, freeze.frozen_groups, freeze.preset, num_classes if exact else 2, image_size,
                    device, feature_cache=feature_cache)
    else:
        m = _rough_full(measure_forward(model_name, image_size, device))
    return estimate_from_measurement(m, n_train, n_val)


def measurement_job(config: RunConfig) -> tuple[str, str, tuple[str, ...] | None, int | None]:
    """(model, preset, frozen groups, image size): what :func:`estimate` needs measured for
    ``config`` ('scratch' trains everything, so it is timed as 'none'). The classifier's width
    barely changes the time, so one measurement (with 2 classes) serves every data folder."""
    freeze = config.freeze
    if freeze.kind == "scratch":
        return config.model.name, "none", None, config.model.image_size
    frozen = tuple(freeze.frozen_groups) if freeze.frozen_groups is not None else None
    return config.model.name, freeze.preset, frozen, config.model.image_size


def estimate(config: RunConfig, *, measure_now: bool = True, n_train: int | None = None,
             n_val: int | None = None, paths: Sequence[str] | None = None) -> Estimate | None:
    """How long ``config`` will take to train on this computer: the one estimate the CLI
    (``tl estimate``) and every page show.

    The split is the one training will make (the folder's own val/ or the share kept aside); the
    reading cost comes from timing a few of the user's own pictures; the model's steps are timed
    with this freeze plan (once per computer: ``measure_now=False`` returns None instead of timing
    when it has not been measured yet, so a page never waits); and the result is corrected by the
    real runs of the same model and setting on this computer (:func:`record_run`).
    """
    if n_train is None or n_val is None:
        n_train, n_val, found = planned_split(config.data.root, config.data.val_fraction)
        paths = found if paths is None else paths
    name, preset, frozen, size = measurement_job(config)
    args = (name, frozen, preset, 2, size, config.train.device, None, config.train.feature_cache)
    forward_only = preset == "head" and frozen is None and config.train.feature_cache  # the same key
    m = cached_forward(name, size, config.train.device) if forward_only else _cached(_key(*args))
    if m is None:
        if not measure_now:
            return None
        m = measure(*args)
    read = sample_read_seconds(paths, size=m.image_size) if paths else None
    prepare_factor, epoch_factor, used = calibration(m, _history_key(config, m.mode))
    return estimate_from_measurement(m, n_train, n_val, read, prepare_factor, epoch_factor, used)


# -- learning from real runs -------------------------------------------------------------------------

def _history_key(config: RunConfig, mode: str) -> dict:
    dev = pick_device(config.train.device, amp=True, channels_last=True)
    return {"model": config.model.name, "preset": config.freeze.preset,
            "frozen_groups": list(config.freeze.frozen_groups) if config.freeze.frozen_groups is not None else None,
            "image_size": config.model.image_size, "device": str(dev.device), "mode": mode,
            "machine": _machine_key()}


def record_run(config: RunConfig, mode: str, n_train: int, n_val: int, prepare_seconds: float | None,
               epoch_seconds: list[float], read_seconds: float | None = None,
               feature_cache_hit: bool | None = None) -> None:
    """Remember how long a real run took on this computer, so the next estimate for the same model
    and setting can be corrected (see :func:`calibration`). The first epoch is left out when there
    are more (it carries one-time warm-up)."""
    steady = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    if not steady or n_train <= 0:
        return
    record = {**_history_key(config, mode), "n_train": int(n_train), "n_val": int(n_val),
              "prepare_seconds": prepare_seconds, "epoch_seconds": statistics.median(steady),
              "read_seconds": read_seconds, "feature_cache_hit": feature_cache_hit, "time": time.time()}
    with _LOCK:
        data = _load_timings()
        data["runs"] = (data["runs"] + [record])[-HISTORY_LIMIT:]
        _save_timings(data)


def run_history() -> list[dict]:
    """The real runs remembered on this computer, oldest first."""
    with _LOCK:
        return _load_timings()["runs"]


def calibration(m: Measurement, key: dict) -> tuple[float, float, int]:
    """(preparation factor, epoch factor, runs used): the median of real / formula over the last
    :data:`CALIBRATION_RUNS` runs with the same model, setting, device and computer."""
    same = [r for r in run_history() if all(r.get(k) == v for k, v in key.items())][-CALIBRATION_RUNS:]
    epoch_ratios, prepare_ratios = [], []
    for r in same:
        formula = estimate_from_measurement(m, r["n_train"], r["n_val"], r.get("read_seconds"))
        if formula.epoch_seconds > 0 and r.get("epoch_seconds"):
            epoch_ratios.append(r["epoch_seconds"] / formula.epoch_seconds)
        # a warm feature cache skips most of the preparation: it says nothing about a cold one
        if formula.prepare_seconds > 0 and r.get("prepare_seconds") and not r.get("feature_cache_hit"):
            prepare_ratios.append(r["prepare_seconds"] / formula.prepare_seconds)
    lo, hi = FACTOR_RANGE

    def factor(ratios: list[float]) -> float:
        return min(max(statistics.median(ratios), lo), hi) if ratios else 1.0

    return factor(prepare_ratios), factor(epoch_ratios), len(same)


# -- what the pages use ---------------------------------------------------------------------------------

def cached_forward(model_name: str, image_size: int | None = None, device: str = "auto") -> Measurement | None:
    """The forward measurement when it has been taken already, else None (never measures)."""
    return _cached(_key(model_name, None, "head", 2, image_size, device, None, True))


def estimate_if_known(model_name: str, n_images: int, val_fraction: float = 0.2, preset: str = "head",
                      image_size: int | None = None, device: str = "auto") -> Estimate | None:
    """:func:`estimate_run` from measurements already taken (never measures): this preset's own
    measurement when there is one, else the forward-only one (exact for 'head', an upper bound
    otherwise); None when the model has not been timed yet (the app times them in the background:
    :mod:`tl_core.app.timing`)."""
    from tl_core.config import parse_preset

    n_val = int(round(max(0, n_images) * val_fraction))
    n_train = max(0, int(n_images) - n_val)
    exact = cached_measure(model_name, None, preset, 2, image_size, device)
    if exact is not None:
        return estimate_from_measurement(exact, n_train, n_val)
    m = cached_forward(model_name, image_size, device)
    if m is None:
        return None
    if parse_preset(preset)[0] != "head":
        m = _rough_full(m)
    return estimate_from_measurement(m, n_train, n_val)


def cached_measurement_count() -> int:
    with _LOCK:
        return len(_CACHE)


def clear_cache() -> None:
    """Forget every measurement (in memory and in this computer's timings file); real runs stay."""
    with _LOCK:
        _CACHE.clear()
        _READ_CACHE.clear()
        data = _load_timings()
        if data["measurements"]:
            data["measurements"] = {}
            _save_timings(data)


__all__ = ["Measurement", "Estimate", "estimate", "measure", "measure_forward", "cached_measure", "estimate_run",
           "estimate_if_known", "cached_forward", "estimate_from_measurement", "sample_read_seconds",
           "planned_split", "measurement_job", "record_run", "run_history", "calibration", "cached_measurement_count",
           "clear_cache", "DECODE_SECONDS_PER_IMAGE", "TIMINGS_FILE"]
