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

Measurements are cached per model, freeze plan, image size and device for the life of the
process, so the Model and Layers pages pay for each one once. Nothing here imports Streamlit or
:mod:`tl_core.app`: measuring in a background thread, paused while a model trains, is the app's
job (:mod:`tl_core.app.timing`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

import torch

from tl_core.config import FreezeConfig
from tl_core.runtime.device import cpu_cores, pick_device

# Decoding + resizing one picture, per CPU core (seconds). Fashion-MNIST PNGs take ~1 ms,
# phone JPEGs ~20 ms; this is a middle value used only for the once-per-run decode step.
DECODE_SECONDS_PER_IMAGE = 0.008

_CACHE: dict[tuple, "Measurement"] = {}
_LOCK = threading.Lock()


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


@dataclass(frozen=True)
class Estimate:
    """Expected time for one run: a one-time preparation, then each epoch."""

    model_name: str
    mode: str
    prepare_seconds: float       # decoding (and, in features mode, the frozen prefix) once
    epoch_seconds: float         # each epoch after the preparation
    n_train: int
    n_val: int
    measurement: Measurement

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
    fn()  # warm-up (allocations, cudnn autotune, lazy init)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def _default_batch(device: torch.device) -> int:
    # Small on a CPU (it runs at the same per-image speed and answers fast); a GPU only shows
    # its real throughput with a real batch.
    return 32 if device.type == "cuda" else 4


def measure(model_name: str, frozen_groups: list[str] | tuple[str, ...] | None = None, preset: str = "head",
            num_classes: int = 2, image_size: int | None = None, device: str = "auto",
            batch: int | None = None, feature_cache: bool = True) -> Measurement:
    """Time the model with this freeze plan on this device (cached per process).

    ``frozen_groups`` overrides ``preset`` exactly like :class:`FreezeConfig`. The number of
    classes barely matters for speed; it only sizes the new classifier.
    """
    frozen_key = tuple(frozen_groups) if frozen_groups is not None else None
    dev = pick_device(device, amp=True, channels_last=True)
    key = (model_name, preset if frozen_key is None else None, frozen_key, int(num_classes), image_size,
           str(dev.device), batch, feature_cache)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    from tl_core.runtime.allocator import training_allocator

    with training_allocator():  # time the steps under the settings training runs with
        result = _measure_uncached(model_name, FreezeConfig(preset=preset, frozen_groups=frozen_groups),
                                   num_classes, image_size, dev, batch, feature_cache)
    with _LOCK:
        _CACHE[key] = result
    return result


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
    repeats = 3 if device.type == "cuda" else 2
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
    del model
    return Measurement(model_name=model_name, image_size=size, device=str(device), mode=mode,
                       prefix_seconds=prefix_t / b, train_seconds=train_t / b, eval_seconds=eval_t / b,
                       trainable_params=plan.trainable_params, total_params=plan.total_params, batch=b,
                       build_seconds=build_seconds)


def estimate_from_measurement(m: Measurement, n_train: int, n_val: int) -> Estimate:
    n_all = max(0, int(n_train)) + max(0, int(n_val))
    decode = n_all * DECODE_SECONDS_PER_IMAGE / max(1, min(cpu_cores(), 8))
    prepare = decode + 2 * m.build_seconds + (n_all * m.prefix_seconds if m.mode == "features" else 0.0)
    epoch = max(0, int(n_train)) * m.train_seconds + max(0, int(n_val)) * m.eval_seconds
    return Estimate(model_name=m.model_name, mode=m.mode, prepare_seconds=prepare, epoch_seconds=epoch,
                    n_train=int(n_train), n_val=int(n_val), measurement=m)


def measure_forward(model_name: str, image_size: int | None = None, device: str = "auto",
                    batch: int | None = None) -> Measurement:
    """Only the forward pass of the whole model (cached): the cheap measurement the Model page
    takes for every catalogue entry. Training a model that is not cut at a cached prefix costs
    about three forward passes per image (forward + backward), which :func:`estimate_run` uses
    when ``exact=False``."""
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
    """Expected preparation and per-epoch seconds for ``n_images`` pictures in total.

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


def _forward_key(model_name: str, image_size: int | None, device: str) -> tuple:
    dev = pick_device(device, amp=True, channels_last=True)
    return (model_name, "head", None, 2, image_size, str(dev.device), None, True)


def cached_forward(model_name: str, image_size: int | None = None, device: str = "auto") -> Measurement | None:
    """The forward measurement when it has been taken already, else None (never measures)."""
    with _LOCK:
        return _CACHE.get(_forward_key(model_name, image_size, device))


def estimate_if_known(model_name: str, n_images: int, val_fraction: float = 0.2, preset: str = "head",
                      image_size: int | None = None, device: str = "auto") -> Estimate | None:
    """:func:`estimate_run` with ``exact=False`` from an already taken forward measurement; None when
    the model has not been timed yet (the app times them in the background: :mod:`tl_core.app.timing`)."""
    m = cached_forward(model_name, image_size, device)
    if m is None:
        return None
    n_val = int(round(max(0, n_images) * val_fraction))
    n_train = max(0, int(n_images) - n_val)
    from tl_core.config import parse_preset

    if parse_preset(preset)[0] != "head":
        m = _rough_full(m)
    return estimate_from_measurement(m, n_train, n_val)


def cached_measurement_count() -> int:
    with _LOCK:
        return len(_CACHE)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


__all__ = ["Measurement", "Estimate", "measure", "measure_forward", "estimate_run", "estimate_if_known",
           "cached_forward", "estimate_from_measurement", "cached_measurement_count", "clear_cache",
           "DECODE_SECONDS_PER_IMAGE"]
