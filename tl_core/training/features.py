"""Frozen-prefix split and feature cache.

When every layer group from the input up to some point is frozen (and kept in eval mode), that
prefix is a fixed function: running it again each epoch is wasted work. We run it once per
image, keep its output (the "features" at the boundary) and train only the layers after it. For
the ``head`` preset the boundary is the pooled pre-logits vector, so training is one forward pass
per image plus a linear layer that trains in a fraction of a second. Features are also cached on
disk, keyed by data, backbone, weights and boundary, so a second run on the same data (a new
learning rate, more epochs) skips the forward pass entirely.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tl_core import __version__
from tl_core.models.freezing import module_is_frozen
from tl_core.files import save_safetensors_atomic
from tl_core.runtime.cache_space import after_write, mark_used


@dataclass
class PrefixSplit:
    """``model(x) == suffix(prefix(x))`` in eval mode, with every prefix parameter frozen."""

    boundary: str                       # "pre_logits" or the name of the first trainable module
    prefix: Callable[[torch.Tensor], torch.Tensor]
    suffix: Callable[[torch.Tensor], torch.Tensor]

    def describe(self) -> str:
        return ("pooled features before the classifier" if self.boundary == "pre_logits"
                else f"activations entering '{self.boundary}'")


def _forward_sequence(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The modules ``forward_features`` runs one after another, for families where it is a plain
    chain (verified against the real model in the tests). ``None`` for other architectures."""
    kind = type(model).__name__

    def children(prefix: str, seq: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(f"{prefix}.{n}", m) for n, m in seq.named_children()]

    if kind == "EfficientNet":
        return [("conv_stem", model.conv_stem), ("bn1", model.bn1), *children("blocks", model.blocks),
                ("conv_head", model.conv_head), ("bn2", model.bn2)]
    if kind == "MobileNetV3":
        return [("conv_stem", model.conv_stem), ("bn1", model.bn1), *children("blocks", model.blocks)]
    if kind == "ResNet":
        return [("conv1", model.conv1), ("bn1", model.bn1), ("act1", model.act1), ("maxpool", model.maxpool),
                ("layer1", model.layer1), ("layer2", model.layer2), ("layer3", model.layer3),
                ("layer4", model.layer4)]
    if kind == "ConvNeXt":
        return [("stem", model.stem), *children("stages", model.stages), ("norm_pre", model.norm_pre)]
    return None


def _only_classifier_trains(model: nn.Module) -> bool:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Module):
        return False
    cls_params = {id(p) for p in classifier.parameters()}
    return all((p.requires_grad == (id(p) in cls_params)) for p in model.parameters())


def find_prefix_split(model: nn.Module) -> PrefixSplit | None:
    """The deepest frozen prefix we can cut the model at, or None when nothing is frozen or the
    architecture's forward is not a chain we know."""
    if _only_classifier_trains(model) and hasattr(model, "forward_head"):
        classifier = model.get_classifier()
        drop = float(getattr(model, "drop_rate", 0.0) or 0.0)

        def prefix(x: torch.Tensor) -> torch.Tensor:
            return model.forward_head(model.forward_features(x), pre_logits=True)

        def suffix(f: torch.Tensor) -> torch.Tensor:
            if drop and classifier.training:
                f = F.dropout(f, p=drop, training=True)
            return classifier(f)

        return PrefixSplit("pre_logits", prefix, suffix)

    seq = _forward_sequence(model)
    if seq is None:
        return None
    k = next((i for i, (_, m) in enumerate(seq) if not module_is_frozen(m)), len(seq))
    if k == 0:
        return None
    head_part, tail = seq[:k], seq[k:]

    def prefix(x: torch.Tensor) -> torch.Tensor:
        for _, m in head_part:
            x = m(x)
        return x

    def suffix(x: torch.Tensor) -> torch.Tensor:
        for _, m in tail:
            x = m(x)
        return model.forward_head(x)

    return PrefixSplit(tail[0][0] if tail else "forward_head", prefix, suffix)


# -- disk cache ---------------------------------------------------------------------------------

def _file_fingerprint(path: str) -> list:
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


def feature_cache_key(paths: Sequence[str], labels: Sequence[int], model_name: str, weights_id: str,
                      boundary: str, prep: dict, extra: dict | None = None) -> str:
    """Changes whenever any input file, label, the backbone, its weights, the boundary or the
    preprocessing changes; stable otherwise."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": __version__, "model": model_name, "weights": weights_id, "boundary": boundary,
                         "prep": prep, "extra": extra or {}}, sort_keys=True).encode())
    for p, y in zip(paths, labels):
        h.update(json.dumps(_file_fingerprint(p) + [int(y)]).encode())
    return h.hexdigest()[:32]


def weights_fingerprint(path: str | None) -> str:
    if not path:
        return "none"
    try:
        st = os.stat(path)
        return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return str(path)


def load_cached_features(cache_root: Path, key: str) -> dict[str, torch.Tensor] | None:
    path = cache_root / "features" / f"{key}.safetensors"
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception:  # a damaged cache file is just a miss
        path.unlink(missing_ok=True)
        return None
    mark_used(path)
    return tensors


def save_cached_features(cache_root: Path, key: str, tensors: dict[str, torch.Tensor]) -> Path | None:
    """Keep features for the next run on the same data; None when they could not be written (a
    full disk, a read-only cache folder). The cache is only an optimisation, so that never fails
    training, and no partial file is left behind."""
    final = cache_root / "features" / f"{key}.safetensors"
    try:
        saved = save_safetensors_atomic(final, {k: v.contiguous().cpu() for k, v in tensors.items()})
    except OSError:
        return None
    after_write(cache_root, saved)
    return saved


@torch.no_grad()  # not inference_mode: the features feed autograd later
def compute_features(prefix: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     normalize: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                     batch_size: int = 64, amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                     progress: Callable[[int, int], None] | None = None,
                     store_dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the frozen prefix over uint8 images once, ``batch_size`` at a time (their activations
    are what this costs in memory); returns features on the CPU, written into ``out`` (the first
    ``len(images)`` rows of it, returned) when given."""
    outs = []
    n = len(images)
    for i in range(0, n, batch_size):
        x = normalize(images[i:i + batch_size].to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            f = prefix(x)
        if out is not None:
            out[i:i + len(f)] = f.float()
        else:
            outs.append(f.float().to("cpu", store_dtype).contiguous())
        del x, f
        if progress:
            progress(min(i + batch_size, n), n)
    if out is not None:
        return out[:n]
    return torch.cat(outs) if outs else torch.empty(0)
