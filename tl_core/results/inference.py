"""Load a trained run back into memory and classify images with it.

Used by ``tl predict``, ``tl evaluate``, the Try page, Grad-CAM and the exporters, so they all
see exactly the model and preprocessing the run saved.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from tl_core.errors import RunError
from tl_core.models.builder import build_network
from tl_core.models.preprocess import Preprocessing
from tl_core.runs.validate import check_run


@dataclass
class LoadedModel:
    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    model_name: str
    device: torch.device

    @torch.inference_mode()
    def predict_proba(self, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (N, C) for RGB PIL images."""
        outs = []
        for i in range(0, len(images), batch_size):
            x = self.preprocessing.to_input(list(images[i:i + batch_size]), self.device)
            outs.append(self._probabilities(x))
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))

    @torch.inference_mode()
    def predict_uint8(self, batch: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Probabilities for already-decoded uint8 (N,3,S,S) tensors."""
        norm = self.preprocessing.normalizer(self.device)
        outs = []
        for i in range(0, len(batch), batch_size):
            x = norm(batch[i:i + batch_size].to(self.device))
            outs.append(self._probabilities(x))
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax of the model's answer, refused when it is not a number: a NaN would reach the user
        as ``"probability": NaN`` (not even valid JSON) or as a confident wrong class."""
        probs = torch.softmax(self.model(x).float(), dim=1).cpu()
        if not bool(torch.isfinite(probs).all()):
            raise RunError(f"Model {self.model_name} gave no usable answer (not a number) for this picture: its "
                           "weights or preprocessing.json are damaged. Train the model again, or use an undamaged "
                           "copy of the run folder.")
        return probs

    def top_k(self, image: Image.Image, k: int = 5) -> list[dict]:
        probs = self.predict_proba([image])[0]
        k = min(k, len(self.classes))
        vals, idx = probs.topk(k)
        return [{"label": self.classes[i], "probability": float(v)} for v, i in zip(vals.tolist(), idx.tolist())]


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The run's model, ready to classify: checked first (:func:`tl_core.runs.validate.check_run`:
    a catalogue model, sound labels, preprocessing and weights), then built bare and filled with the
    run's own weights. Never downloads anything; a damaged folder is a :class:`RunError` naming the file."""
    checked = check_run(run_dir)
    prep = Preprocessing.from_dict(checked.preprocessing)
    model = build_network(checked.model_name, len(checked.classes))  # the bare architecture; the run's weights follow
    try:
        model.load_state_dict(checked.state_dict, strict=True)
    except RuntimeError as err:  # check_run compared every key and shape: only a surprise lands here
        raise RunError(f"The weights in {checked.path} do not match model {checked.model_name}: "
                       f"{str(err)[:300]}") from None
    device = torch.device(device)
    model.to(device).eval()
    return LoadedModel(model, checked.classes, prep, checked.model_name, device)
