"""Load a trained run back into memory and classify images with it.

Used by ``tl predict``, ``tl evaluate``, the Try page, Grad-CAM and the exporters, so they all
see exactly the model and preprocessing the run saved. :meth:`LoadedModel.answers` adds the two
warnings of :mod:`tl_core.results.novelty` ("none of these", "unsure") to each answer; the run's
calibration for them is read (or, for an older run, prepared) the first time it is needed, not
when the model is loaded, so evaluating or explaining never waits for it.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from PIL import Image
from torch import nn

from tl_core.errors import RunError
from tl_core.models.builder import build_network
from tl_core.models.preprocess import Preprocessing
from tl_core.runs.validate import check_run

if TYPE_CHECKING:  # pragma: no cover - type hints only
    from tl_core.results.novelty import Novelty

log = logging.getLogger(__name__)


@dataclass
class _NoveltyState:
    """The calibration once looked for: prepared at most once per loaded model, even when the app's
    sessions ask at the same time."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    novelty: "Novelty | None" = None
    problem: str | None = None


@dataclass
class LoadedModel:
    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    model_name: str
    device: torch.device
    source: Path | None = None          # the run folder or bundle: where its "none of these" calibration lives
    # what an older run says while its calibration is prepared (the CLI shows warnings on stderr)
    say: Callable[[str], None] = log.warning
    _novelty: _NoveltyState = field(default_factory=_NoveltyState, repr=False, compare=False)
    # one use of the network at a time: the app shares a loaded model between sessions and threads (the
    # live camera's predictor, a Grad-CAM on the Try page), and Grad-CAM puts hooks on it that would
    # otherwise record another thread's picture and explain the wrong one
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def novelty(self) -> "Novelty | None":
        """The run's "none of these" / "unsure" rule: read from its folder, or prepared from its
        pictures the first time (said through :attr:`say`); None when it cannot be had (see
        :attr:`novelty_problem`)."""
        state = self._novelty
        with state.lock:
            if not state.done:
                if self.source is None:
                    state.problem = "It cannot say “none of these”: it was not loaded from a run folder."
                else:
                    from tl_core.results.novelty import ensure_novelty

                    state.novelty, state.problem = ensure_novelty(self.source, self, self.say)
                    if state.problem:
                        self.say(state.problem)
                state.done = True
            return state.novelty

    @property
    def novelty_problem(self) -> str | None:
        """Why this model cannot say "none of these" (after :meth:`novelty` was asked), else None."""
        return self._novelty.problem

    def novelty_ready(self) -> bool:
        """Whether :meth:`novelty` answers at once (the page shows a spinner otherwise)."""
        return self._novelty.done

    def answers(self, images: Sequence[Image.Image], k: int = 3, batch_size: int = 32) -> list[dict]:
        """One plain dict per RGB picture: ``label``, ``probability``, ``top`` (the ``k`` most probable
        categories), ``none_of_these`` (True/False, or None when the run has no calibration) and
        ``unsure`` (the calibrated top two are less than the margin apart)."""
        from tl_core.results.novelty import features_and_logits, unsure

        novelty = self.novelty()  # before inference mode: a calibration prepared now is kept as plain tensors
        k = max(1, min(k, len(self.classes)))
        out: list[dict] = []
        for i in range(0, len(images), batch_size):
            x = self.preprocessing.to_input(list(images[i:i + batch_size]), self.device)
            with torch.inference_mode(), self.lock:
                features, logits = features_and_logits(self.model, x)
            probs = self._checked(torch.softmax(logits.float(), dim=1).cpu())
            far = novelty.none_of_these(features.float()).cpu().tolist() if novelty else [None] * len(x)
            close = (novelty.unsure(logits) if novelty else unsure(logits)).cpu().tolist()
            for row, none, hesitates in zip(probs, far, close):
                vals, idx = row.topk(k)
                top = [{"label": self.classes[j], "probability": float(v)} for v, j in zip(vals.tolist(), idx.tolist())]
                out.append({"label": top[0]["label"], "probability": top[0]["probability"], "top": top,
                            "none_of_these": none, "unsure": bool(hesitates)})
        return out

    def answer(self, image: Image.Image, k: int = 3) -> dict:
        """:meth:`answers` for one picture."""
        return self.answers([image], k=k)[0]

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
        with self.lock:
            logits = self.model(x)
        return self._checked(torch.softmax(logits.float(), dim=1).cpu())

    def _checked(self, probs: torch.Tensor) -> torch.Tensor:
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
    return LoadedModel(model, checked.classes, prep, checked.model_name, device, source=Path(checked.path))
