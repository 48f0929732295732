"""Building timm networks: the one place in tl_core that calls ``timm.create_model``.

Transfer Lab builds networks for several jobs: a model to train (:func:`tl_core.models.create_model`
then loads its pretrained weights), a meta-device skeleton to count parameters or to convert a
checkpoint's key names, the bare architecture of a saved run for inference, and a model to time on
this computer. They all come through :func:`build_network`, so how a network is built is decided once:

* **never a download here**: timm is always called with ``pretrained=False``. Weights are found,
  loaded and verified only by :mod:`tl_core.models.weights`, which knows the offline choices and
  refuses a silent random start;
* ``on_meta_device=True`` builds on PyTorch's ``meta`` device: real shapes, no memory and no
  random initialisation, which is exact and cheap for counting parameters or reading key names.

The one exception is the standalone ``predict.py`` copied into exported bundles
(``tl_core/results/templates``): it cannot import tl_core, so it calls timm itself.
"""
from __future__ import annotations

import torch
from torch import nn

from tl_core.errors import ConfigError


def build_network(timm_name: str, num_classes: int | None = None, *, on_meta_device: bool = False,
                  **timm_kwargs) -> nn.Module:
    """The timm network ``timm_name`` with freshly initialised (or, on the meta device, no) weights.

    ``timm_name`` is a timm architecture or pretrained tag (``"resnet18"``,
    ``"mobilenetv3_large_100.ra_in1k"``); the tag also sets ``model.pretrained_cfg``.
    ``num_classes=None`` keeps the architecture's own classifier (1000 ImageNet classes for the
    catalogue's tags). Other keyword arguments go to ``timm.create_model`` (``drop_rate``,
    ``img_size``...), except ``pretrained``: weights come from :mod:`tl_core.models.weights`.
    """
    if "pretrained" in timm_kwargs:
        raise ConfigError("build_network never downloads weights: use tl_core.models.create_model(..., weights=...) "
                          "to get a model with pretrained weights.")
    if ":" in timm_name:  # "hf-hub:..." / "local-dir:...": timm reads those from the Hub or a folder even unweighted
        raise ConfigError(f"build_network builds timm models by name only, never {timm_name!r}: choose a model "
                          "from the catalogue.")
    import timm

    if num_classes is not None:
        timm_kwargs["num_classes"] = int(num_classes)
    if on_meta_device:
        with torch.device("meta"):
            return timm.create_model(timm_name, pretrained=False, **timm_kwargs)
    return timm.create_model(timm_name, pretrained=False, **timm_kwargs)


__all__ = ["build_network"]
