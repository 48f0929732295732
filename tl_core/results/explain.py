"""What did the model look at? Grad-CAM heat maps.

A beginner trusts (or rightly distrusts) a model once they see *where* it looks: a cat classifier
that lights up the sofa has learned the sofa. Grad-CAM weights the last spatial feature map by
how much each channel pushes the chosen class's score up, and keeps the positive part.

We use the ``grad-cam`` library (``pytorch_grad_cam``) for the computation. What has to be chosen
per model is *where* to look:

* **Convolutional backbones** (EfficientNet/-Lite, MobileNetV3, ResNet, ConvNeXt, ...): the output
  of timm's ``forward_features``, i.e. the last feature map right before global pooling. We wrap
  the model as ``forward_head(features(x))`` and point Grad-CAM at the ``features`` wrapper. This
  is more generic than picking a module by name, and better than ``feature_info[-1]``, which for
  EfficientNet stops before the final 1x1 ``conv_head`` that the classifier actually reads. The
  hook also sits on our wrapper, not inside the shared model, so a prediction running at the same
  time in another thread is not disturbed.
* **Vision Transformers**: the tokens entering the last block (``blocks[-1].norm1``) with a
  ``reshape_transform`` that drops the class/register tokens and lays the patch tokens out on
  their grid. The output of ``forward_features`` would not work for a class-token ViT: the head
  reads only the class token, so the patch tokens there get zero gradient. In the last block the
  class token still attends to the patches, so their gradients carry the evidence.

The heat map is returned at the model's input size (the image as the model saw it, resized and
centre-cropped by :class:`~tl_core.models.preprocess.Preprocessing`), scaled to [0, 1].
"""
from __future__ import annotations

import contextlib

import math
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from tl_core.errors import TransferLabError


class _Features(nn.Module):
    """``model.forward_features`` as a module, so Grad-CAM can hook its output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _SplitModel(nn.Module):
    """``forward_head(forward_features(x))``: the same function as ``model(x)`` for timm models."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.features = _Features(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.features(x))


def _token_grid(model: nn.Module, input_hw: tuple[int, int], n_tokens: int) -> tuple[int, int]:
    """Rows and columns of patch tokens for this input size (falls back to a square grid)."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[:2]
        gh, gw = input_hw[0] // ph, input_hw[1] // pw
        if gh * gw == n_tokens:
            return gh, gw
    side = int(round(math.sqrt(n_tokens)))
    if side * side != n_tokens:
        raise TransferLabError("Grad-CAM could not lay this transformer's tokens out as an image grid.")
    return side, side


def _vit_reshape(model: nn.Module, input_hw: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    n_prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))

    def reshape(t: torch.Tensor) -> torch.Tensor:
        tokens = t[:, n_prefix:, :]
        gh, gw = _token_grid(model, input_hw, tokens.shape[1])
        return tokens.reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)

    return reshape


def cam_setup(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, list[nn.Module], Callable | None, str]:
    """(model to run, target layers, reshape_transform, kind) for Grad-CAM on this architecture.

    ``kind`` is ``"conv"`` or ``"vit"``; the shape of ``forward_features`` tells them apart, so a
    new catalogue entry needs no code here as long as timm gives it ``forward_features``.
    """
    has_split = hasattr(model, "forward_features") and hasattr(model, "forward_head")
    if has_split:
        with torch.no_grad():
            feats = model.forward_features(x[:1])
        if isinstance(feats, torch.Tensor) and feats.ndim == 4:
            reshape = None
            if getattr(model, "output_fmt", "NCHW") == "NHWC":  # e.g. Swin: channels last
                reshape = lambda t: t.permute(0, 3, 1, 2)  # noqa: E731
            wrapped = _SplitModel(model)
            return wrapped, [wrapped.features], reshape, "conv"
        if isinstance(feats, torch.Tensor) and feats.ndim == 3:
            blocks = getattr(model, "blocks", None)
            if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) > 0:
                last = blocks[-1]
                norm1 = getattr(last, "norm1", None)
                layer = norm1 if isinstance(norm1, nn.Module) else last
                return model, [layer], _vit_reshape(model, (x.shape[-2], x.shape[-1])), "vit"
    # Not a standard timm layout: fall back to the last module timm lists as a feature stage.
    info = getattr(model, "feature_info", None)
    if info:
        try:
            entry = info[-1] if isinstance(info, list) else info.info[-1]
            return model, [model.get_submodule(entry["module"])], None, "conv"
        except (AttributeError, KeyError, IndexError, TypeError):
            pass
    raise TransferLabError("Heat maps are not available for this kind of model: Transfer Lab cannot find its "
                           "last image-shaped layer.")


def _target_index(loaded: Any, target: int | str | None) -> int | None:
    if target is None:
        return None
    classes = list(loaded.classes)
    if isinstance(target, str):
        if target not in classes:
            raise TransferLabError(f"Unknown class {target!r}. The classes are: {', '.join(classes)}.")
        return classes.index(target)
    t = int(target)
    if not 0 <= t < len(classes):
        raise TransferLabError(f"There is no class number {t}; this model has {len(classes)} classes.")
    return t


def gradcam(loaded: Any, image: Image.Image, target: int | str | None = None) -> np.ndarray:
    """Heat map (H, W) in [0, 1] at the model's input size for one RGB image.

    ``target``: class index or name to explain; None explains the predicted class. ``loaded`` is a
    :class:`~tl_core.results.inference.LoadedModel`.
    """
    from pytorch_grad_cam import GradCAM  # heavy import (cv2, scipy): only when a heat map is asked for
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if not isinstance(image, Image.Image):
        raise TransferLabError("Grad-CAM needs an image (a PIL image).")
    model: nn.Module = loaded.model
    idx = _target_index(loaded, target)
    x = loaded.preprocessing.to_input([image.convert("RGB")], loaded.device)
    with _use_of(loaded):   # no other thread's picture passes the hooks while they are on
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = x.clone().requires_grad_(True)  # gradients flow even when every weight is frozen
                run_model, layers, reshape, _ = cam_setup(model, x)
                targets = None if idx is None else [ClassifierOutputTarget(idx)]
                with GradCAM(model=run_model, target_layers=layers, reshape_transform=reshape) as cam:
                    heat = cam(input_tensor=x, targets=targets)[0]
        finally:
            model.zero_grad(set_to_none=True)  # do not keep a gradient per weight alive in the app
            model.train(was_training)
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(heat, 0.0, 1.0)


def _use_of(loaded: Any):
    """The loaded model's lock (:attr:`~tl_core.results.inference.LoadedModel.lock`); nothing to hold for
    a stand-in without one."""
    return getattr(loaded, "lock", None) or contextlib.nullcontext()


def model_view(loaded: Any, image: Image.Image) -> Image.Image:
    """The image as the model saw it: resized and centre-cropped by the run's preprocessing."""
    return loaded.preprocessing.pil_transform()(image.convert("RGB"))


def _fit_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize the short side and centre-crop to ``size`` (W, H): the crop_pct=1 recipe."""
    w, h = size
    if image.size == (w, h):
        return image
    scale = max(w / image.width, h / image.height)
    rw, rh = max(w, round(image.width * scale)), max(h, round(image.height * scale))
    im = image.resize((rw, rh), Image.BICUBIC)
    left, top = (rw - w) // 2, (rh - h) // 2
    return im.crop((left, top, left + w, top + h))


def jet(heat: np.ndarray) -> np.ndarray:
    """The classic jet colour map (blue -> cyan -> yellow -> red) as uint8 RGB, in numpy only."""
    v = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0], dtype=np.float32)), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _seen_box(width: int, height: int, crop_pct: float, crop_mode: str) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the part of a ``width`` x ``height`` picture that the model's
    square input shows, in the picture's pixels: timm's eval recipe resizes the short side (the long
    one for "border", both for "squash") to ``size / crop_pct`` and centre-crops ``size``."""
    c = min(max(float(crop_pct or 1.0), 1e-3), 1.0)
    if crop_mode == "squash":
        bw, bh = width * c, height * c
    else:
        bw = bh = (max(width, height) if crop_mode == "border" else min(width, height)) * c
    return (width - bw) / 2.0, (height - bh) / 2.0, bw, bh


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.45, *, keep_shape: bool = False,
            preprocessing: Any = None, max_side: int = 1024) -> Image.Image:
    """The heat map in jet colours blended over the image.

    By default the result is the image as the model saw it, at the heat map's size: an image of
    another size is resized and centre-cropped to it, the way the model's preprocessing does it, so
    the colours sit on the pixels they describe.

    ``keep_shape=True`` keeps the picture's own shape instead (a wide photo stays wide; its long
    side at most ``max_side`` pixels): the heat map, computed on the model's square input, is
    resized onto the part of the picture that square shows (the centre, after the resize and crop
    of ``preprocessing``, the run's :class:`~tl_core.models.preprocess.Preprocessing`; the
    default recipe when None), and the parts the model never saw are shown greyed.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise TransferLabError("The heat map must be a 2-D array.")
    if not 0.0 <= alpha <= 1.0:
        raise TransferLabError("The heat map opacity must be between 0 and 1.")
    h, w = heat.shape
    if not keep_shape:
        base = np.asarray(_fit_to(image.convert("RGB"), (w, h)), dtype=np.float32)
        mixed = (1.0 - alpha) * base + alpha * jet(heat).astype(np.float32)
        return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), "RGB")

    picture = image.convert("RGB")
    if max(picture.size) > max_side:  # a 12-megapixel photo need not be blended at full size
        scale = max_side / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.BICUBIC)
    W, H = picture.size
    left, top, bw, bh = _seen_box(W, H, getattr(preprocessing, "crop_pct", 1.0),
                                  getattr(preprocessing, "crop_mode", "center"))
    # the heat map stretched over the seen box, then cut to the picture (a "border" box is bigger)
    x0, y0 = int(round(left)), int(round(top))
    bw_i, bh_i = max(1, int(round(bw))), max(1, int(round(bh)))
    resized = np.asarray(Image.fromarray(np.clip(heat, 0.0, 1.0), "F").resize((bw_i, bh_i), Image.BILINEAR),
                         dtype=np.float32)
    full = np.zeros((H, W), np.float32)
    seen = np.zeros((H, W), bool)
    px0, py0, px1, py1 = max(0, x0), max(0, y0), min(W, x0 + bw_i), min(H, y0 + bh_i)
    if px1 > px0 and py1 > py0:
        full[py0:py1, px0:px1] = resized[py0 - y0:py1 - y0, px0 - x0:px1 - x0]
        seen[py0:py1, px0:px1] = True
    base = np.asarray(picture, dtype=np.float32)
    mixed = (1.0 - alpha) * base + alpha * jet(full).astype(np.float32)
    unseen = 0.45 * base + 0.55 * 200.0  # greyed: the model never saw these parts
    out = np.where(seen[..., None], mixed, unseen)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def explain(loaded: Any, image: Image.Image, target: int | str | None = None, alpha: float = 0.45) -> dict:
    """Everything the Results page draws for one image: heat map, overlay and what was explained."""
    heat = gradcam(loaded, image, target)
    probs = loaded.predict_proba([image.convert("RGB")])[0]
    idx = _target_index(loaded, target)
    idx = int(probs.argmax()) if idx is None else idx
    return {"heat": heat, "overlay": overlay(model_view(loaded, image), heat, alpha),
            "target": idx, "label": loaded.classes[idx], "probability": float(probs[idx])}


__all__ = ["gradcam", "overlay", "explain", "model_view", "jet", "cam_setup"]
