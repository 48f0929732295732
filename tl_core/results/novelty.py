""""None of these" and "unsure": when an answer should not be trusted, and how the run knows.

A classifier always answers one of the categories it was taught, even for a photo of something
else entirely. Its confidence does not warn about that: the softmax only says on which side of the
boundary between the *known* categories a picture falls, not whether it looks like any of them (a
cat/dog model gives Fashion-MNIST clothes about the same top probability as real pets). So the two
questions get two signals:

* **none_of_these** -- distance to the training pictures in the model's own feature space: the
  pooled features just before the classifier (timm's ``forward_head(..., pre_logits=True)``; for a
  run where only the classifier trained that is the frozen pretrained space). Features are scaled
  to length 1 and a picture's *familiarity* is the mean cosine similarity to its
  :data:`NEIGHBOURS` most similar training pictures (deep nearest neighbours, Sun et al. 2022,
  "Out-of-distribution detection with deep nearest neighbors"). A picture is "none of these" when
  its familiarity is below ``threshold``, calibrated so that at most :data:`REJECT_RATE` of the run's
  held-out real pictures fall below it.
* **unsure** -- the top two categories are too close: with the probabilities calibrated by one
  temperature ``T`` fitted on the validation pictures, ``p1 - p2 < unsure_margin`` (0.2), where
  ``p = softmax(logits / T)``. ``T`` is the most probable temperature given the validation pictures
  and a prior ``log T ~ N(0, 0.5^2)``: with 16 validation pictures the plain best fit swings from
  0.2 to 2 between runs, and the prior keeps it near 1 until enough pictures say otherwise.

Calibration pictures: the validation pictures, plus -- when only the classifier trained, so the
training pictures' features were never fitted to -- every reference training picture scored
against the others (leave-one-out). A 5% cut on 16 validation pictures alone would rest on one
picture; the training pictures make it steadier without making it optimistic (their features come
from the same frozen network as any new picture's).

What a run folder holds (small; written at the end of training by
:class:`tl_core.training.calibration.NoveltyCalibration`, or prepared from the run's pictures the
first time an older run is used, see :func:`ensure_novelty`):

* ``novelty.safetensors``: ``references`` (R, D) float32, unit rows: the training pictures' features
  (all of them, or at most :data:`MAX_REFERENCES` picked evenly per category); ``reference_labels``
  (R,); metadata ``id``.
* ``novelty.json``: the rule's numbers (``threshold``, ``neighbours``, ``temperature``,
  ``unsure_margin``), what they were calibrated on and the rejection rates seen, the same ``id``
  and ``weights_fingerprint`` (sha256 of the weights' tensors, :func:`weights_fingerprint`): a
  calibration made for other weights is never used.

The bundle's standalone ``predict.py`` repeats this arithmetic with torch alone; the ONNX and
TorchScript exports compute ``familiarity`` in the graph (see :class:`ExportedNetwork`).
"""
from __future__ import annotations

import contextlib

import hashlib
import logging
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tl_core.errors import RunError, TransferLabError
from tl_core.files import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

NOVELTY_FILE = "novelty.json"
NOVELTY_TENSORS = "novelty.safetensors"
FORMAT_VERSION = 1
REJECT_RATE = 0.05        # at most this share of real held-out pictures is called "none of these"
UNSURE_MARGIN = 0.2       # calibrated p1 - p2 below this: "unsure"
NEIGHBOURS = 3            # familiarity = mean similarity to this many nearest training pictures
MAX_REFERENCES = 1024     # training pictures kept (1024 x 1280 float32 = 5 MB for EfficientNet-Lite0)
MAX_CALIBRATION = 1024    # validation pictures used for the calibration
TEMPERATURE_RANGE = (0.05, 20.0)
TEMPERATURE_PRIOR_SD = 0.5
BATCH = 32

Say = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# The arithmetic (the same lines live in templates/predict.py and in ExportedNetwork)
# ----------------------------------------------------------------------------------------------
def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled features before the classifier and the logits, from one forward pass.
    ``classifier(forward_head(forward_features(x), pre_logits=True))`` runs exactly the operations
    of ``model(x)``, so the logits are the model's own (tested for every catalogue family)."""
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    return features, model.get_classifier()(features)


def familiarity(features: torch.Tensor, references: torch.Tensor, neighbours: int) -> torch.Tensor:
    """(N,) mean cosine similarity of each picture to its ``neighbours`` most similar references."""
    sims = F.normalize(features.float(), dim=1) @ references.T
    return sims.topk(min(neighbours, references.shape[0]), dim=1).values.mean(dim=1)


def unsure(logits: torch.Tensor, temperature: float = 1.0, margin: float = UNSURE_MARGIN) -> torch.Tensor:
    """(N,) bool: the two most probable categories, after calibration, are less than ``margin`` apart."""
    top2 = torch.softmax(logits.float() / temperature, dim=1).topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) < margin


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, prior_sd: float = TEMPERATURE_PRIOR_SD) -> float:
    """The most probable temperature on a log grid: validation NLL plus the prior ``log T ~ N(0, sd^2)``.
    A grid (not an optimiser) because it is deterministic and cannot wander off."""
    if len(labels) == 0:
        return 1.0
    lo, hi = (math.log(v) for v in TEMPERATURE_RANGE)
    grid = torch.linspace(lo, hi, 241, dtype=torch.float64).exp()
    logp = torch.log_softmax(logits.double().unsqueeze(0) / grid.view(-1, 1, 1), dim=2)
    nll = -logp.gather(2, labels.view(1, -1, 1).expand(len(grid), -1, 1)).sum(dim=(1, 2))
    objective = nll + grid.log() ** 2 / (2 * prior_sd ** 2)
    return float(grid[int(objective.argmin())])


def pick_references(labels: torch.Tensor, limit: int = MAX_REFERENCES) -> torch.Tensor:
    """Indices of at most ``limit`` pictures, every category in proportion (at least one each),
    drawn with a fixed seed: the same run always keeps the same pictures."""
    labels = labels.cpu()
    if len(labels) <= limit:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(0)
    chosen = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        quota = max(1, round(limit * len(members) / len(labels)))
        chosen.append(members[torch.randperm(len(members), generator=gen)[:quota]])
    return torch.cat(chosen).sort().values


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the weights' names, types, shapes and bytes: the same for the run, its bundle and
    the model in memory, whatever file or memory layout they come from."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state_dict[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# The calibration
# ----------------------------------------------------------------------------------------------
@dataclass
class Novelty:
    """A run's rule for "none of these" and "unsure" (see the module docstring)."""

    references: torch.Tensor            # (R, D) float32, rows of length 1
    reference_labels: torch.Tensor      # (R,) int64
    threshold: float
    temperature: float
    neighbours: int = NEIGHBOURS
    unsure_margin: float = UNSURE_MARGIN
    facts: dict = field(default_factory=dict)   # what it was calibrated on, rates seen

    def familiarity(self, features: torch.Tensor) -> torch.Tensor:
        return familiarity(features, self.references.to(features.device), self.neighbours)

    def none_of_these(self, features: torch.Tensor) -> torch.Tensor:
        return self.familiarity(features) < self.threshold

    def unsure(self, logits: torch.Tensor) -> torch.Tensor:
        return unsure(logits, self.temperature, self.unsure_margin)

    def rule(self) -> dict:
        """The numbers a developer needs to repeat the answer (ONNX metadata, TorchScript extra file)."""
        return {"threshold": self.threshold, "neighbours": self.neighbours, "temperature": self.temperature,
                "unsure_margin": self.unsure_margin,
                "none_of_these": "familiarity < threshold, familiarity = mean of the `neighbours` highest cosine "
                                 "similarities between the picture's features and the reference rows",
                "unsure": "p = softmax(logits / temperature); p1 - p2 < unsure_margin"}


@dataclass
class CalibrationData:
    """Features of the run's pictures, as calibration needs them."""

    train_features: torch.Tensor        # (N, D) the reference candidates (already picked)
    train_labels: torch.Tensor
    val_features: torch.Tensor          # (M, D)
    val_logits: torch.Tensor            # (M, C)
    val_labels: torch.Tensor
    frozen_space: bool                  # only the classifier trained: training features are honest


def calibrate(data: CalibrationData) -> Novelty:
    """The rule from the run's pictures: references, threshold (at most :data:`REJECT_RATE` of the
    calibration pictures below it) and temperature. :class:`RunError` when there is nothing to
    calibrate on."""
    refs = F.normalize(data.train_features.float().cpu(), dim=1).contiguous()
    if len(refs) < 2:
        raise RunError("There are too few training pictures to tell what is unlike them.")
    k = max(1, min(NEIGHBOURS, len(refs) - 1))
    val_fam = familiarity(data.val_features.cpu(), refs, k) if len(data.val_features) else torch.empty(0)
    parts = [val_fam]
    if data.frozen_space:
        sims = refs @ refs.T
        sims.fill_diagonal_(-2.0)  # a picture is not its own neighbour
        parts.append(sims.topk(k, dim=1).values.mean(dim=1))
    scores = torch.cat(parts)
    if len(scores) == 0:
        raise RunError("No validation pictures were found to calibrate 'none of these' on.")
    threshold = float(scores.sort().values[int(REJECT_RATE * len(scores))])
    temperature = fit_temperature(data.val_logits.float().cpu(), data.val_labels.cpu().long())
    facts = {"validation_pictures": len(val_fam), "training_pictures_left_out": len(scores) - len(val_fam),
             "validation_rejected": round(float((val_fam < threshold).double().mean()), 4) if len(val_fam) else None,
             "calibration_rejected": round(float((scores < threshold).double().mean()), 4),
             "reject_rate_target": REJECT_RATE,
             "feature_space": "frozen pretrained" if data.frozen_space else "trained"}
    return Novelty(refs, data.train_labels.cpu().long(), threshold, temperature, k, UNSURE_MARGIN, facts)


# ----------------------------------------------------------------------------------------------
# On disk
# ----------------------------------------------------------------------------------------------
def save_novelty(folder: str | Path, novelty: Novelty, fingerprint: str) -> None:
    """Both files, each atomically; the tensors first, so a crash in between leaves a JSON whose
    ``id`` no longer matches (read as damaged, then prepared again), never a silent mix."""
    from safetensors.torch import save_file

    folder = Path(folder)
    ident = uuid.uuid4().hex
    tensors = {"references": novelty.references.float().contiguous(),
               "reference_labels": novelty.reference_labels.long().contiguous()}
    with atomic_path(folder / NOVELTY_TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"id": ident})
    write_json_atomic(folder / NOVELTY_FILE, {
        "format": FORMAT_VERSION, "id": ident, "weights_fingerprint": fingerprint, **novelty.rule(),
        "references": int(novelty.references.shape[0]), "feature_dim": int(novelty.references.shape[1]),
        "calibration": novelty.facts})


def _damaged(path: Path, what: str) -> RunError:
    return RunError(f"{path.name} in {path.parent} is damaged ({what}).")


def _number(raw: dict, key: str, lo: float, hi: float, path: Path) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
        raise _damaged(path, f"{key!r} is missing or impossible: {value!r}")
    return float(value)


def read_novelty(folder: str | Path, fingerprint: str, num_classes: int) -> Novelty | None:
    """The saved rule, None when the folder has none; :class:`RunError` with plain words when it is
    damaged, changed or was made for other weights."""
    import json

    folder = Path(folder)
    path, tpath = folder / NOVELTY_FILE, folder / NOVELTY_TENSORS
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _damaged(path, f"not readable as JSON: {str(err)[:80]}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_VERSION:
        raise _damaged(path, "not a calibration this version of Transfer Lab wrote")
    if raw.get("weights_fingerprint") != fingerprint:
        raise RunError(f"{path.name} in {folder} was made for other weights than the model's.")
    rule = {"threshold": _number(raw, "threshold", -1.0, 1.0, path),
            "temperature": _number(raw, "temperature", *TEMPERATURE_RANGE, path),
            "unsure_margin": _number(raw, "unsure_margin", 0.0, 1.0, path),
            "neighbours": int(_number(raw, "neighbours", 1, MAX_REFERENCES, path))}
    refs, labels = _read_tensors(tpath, raw.get("id"), num_classes)
    if rule["neighbours"] > len(refs):
        raise _damaged(path, "more neighbours than reference pictures")
    facts = raw.get("calibration") if isinstance(raw.get("calibration"), dict) else {}
    return Novelty(refs, labels, rule["threshold"], rule["temperature"], rule["neighbours"], rule["unsure_margin"],
                   facts)


def _read_tensors(path: Path, ident: object, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            refs, labels = fh.get_tensor("references"), fh.get_tensor("reference_labels")
    except FileNotFoundError:
        raise RunError(f"{path.name} is missing from {path.parent}.") from None
    except Exception as err:  # noqa: BLE001 - safetensors has its own error kinds for broken files
        raise _damaged(path, f"cannot be read: {type(err).__name__}") from None
    if meta.get("id") != ident:
        raise _damaged(path, "it does not belong with novelty.json")
    ok = (refs.dim() == 2 and refs.dtype == torch.float32 and len(refs) >= 1 and labels.shape == (len(refs),)
          and bool(torch.isfinite(refs).all()) and bool(((refs.norm(dim=1) - 1).abs() < 1e-3).all())
          and labels.dtype == torch.int64 and bool(((labels >= 0) & (labels < num_classes)).all()))
    if not ok:
        raise _damaged(path, "the reference pictures' features are not what Transfer Lab wrote")
    return refs, labels


# ----------------------------------------------------------------------------------------------
# Prepared from the run's pictures (older runs, damaged files)
# ----------------------------------------------------------------------------------------------
@dataclass
class RunPictures:
    """The pictures a run learned from and was checked on, as (path, class index) lists."""

    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    frozen_space: bool


def frozen_space(freeze: dict | None, preset: str | None) -> bool:
    """Whether only the classifier trained (summary.json's freeze plan, else the preset's name)."""
    groups = (freeze or {}).get("groups") if isinstance(freeze, dict) else None
    if isinstance(groups, list) and groups:
        from tl_core.models.freezing import CLASSIFIER_GROUP

        return all(bool(g.get("frozen")) for g in groups if isinstance(g, dict) and g.get("name") != CLASSIFIER_GROUP)
    return preset == "head"


def run_pictures(run_dir: str | Path, classes: Sequence[str]) -> RunPictures:
    """The run's training and validation pictures, found again from config.json (the data folder)
    and summary.json (which pictures were kept aside). :class:`TransferLabError` when they are gone."""
    from tl_core.data.scan import scan_folder
    from tl_core.results.evaluate import record_parts
    from tl_core.runs import RunFolder

    run = RunFolder.open(run_dir)
    cfg, summary = run.config(), run.summary()
    root = Path(cfg.data.root).expanduser()
    index = {c: i for i, c in enumerate(classes)}
    val: list[tuple[str, int]] = []
    for rec in summary.get("val_records") or []:
        path, label = record_parts(rec)
        full = Path(path) if Path(path).is_absolute() else root / path
        if label in index:
            val.append((os.path.normpath(str(full)), index[label]))
    if not root.is_dir():
        raise RunError(f"the pictures it learned from are no longer at {root}")
    held_out = {p for p, _ in val}
    train = [(os.path.normpath(r.path), index[r.label]) for r in scan_folder(root).records
             if r.split in (None, "train") and r.label in index and os.path.normpath(r.path) not in held_out]
    return RunPictures(train, val, frozen_space(summary.get("freeze"), cfg.freeze.preset))


def _pick(items: list[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    keep = pick_references(torch.tensor([y for _, y in items], dtype=torch.long), limit)
    return [items[i] for i in keep.tolist()]


@torch.no_grad()
def _features_of(loaded, items: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, logits and labels of the readable pictures among ``items``."""
    from tl_core.data.images import load_image

    feats, logits, labels = [], [], []
    for start in range(0, len(items), BATCH):
        images, ys = [], []
        for path, y in items[start:start + BATCH]:
            try:
                images.append(load_image(path))
                ys.append(y)
            except (TransferLabError, OSError):  # a picture deleted or broken since: one fewer to compare with
                continue
        if images:
            x = loaded.preprocessing.to_input(images, loaded.device)
            with getattr(loaded, "lock", None) or contextlib.nullcontext():   # shared with other threads
                f, lg = features_and_logits(loaded.model, x)
            feats.append(f.float().cpu())
            logits.append(lg.float().cpu())
            labels.append(torch.tensor(ys, dtype=torch.long))
    if not feats:
        return torch.empty(0, 0), torch.empty(0, len(loaded.classes)), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def prepare_from_pictures(run_dir: str | Path, loaded, say: Say) -> Novelty:
    """Calibrate an older run from its pictures (reading at most :data:`MAX_REFERENCES` training and
    :data:`MAX_CALIBRATION` validation pictures once) and save the result in ``run_dir``."""
    pictures = run_pictures(run_dir, loaded.classes)
    train, val = _pick(pictures.train, MAX_REFERENCES), _pick(pictures.val, MAX_CALIBRATION)
    say(f"Preparing “none of these” for this model (once): reading {len(train)} training and {len(val)} "
        "validation pictures.")
    train_f, _, train_y = _features_of(loaded, train)
    val_f, val_logits, val_y = _features_of(loaded, val)
    novelty = calibrate(CalibrationData(train_f, train_y, val_f, val_logits, val_y, pictures.frozen_space))
    try:
        save_novelty(run_dir, novelty, weights_fingerprint(loaded.model.state_dict()))
    except OSError as err:  # a read-only folder (a shared bundle): used now, prepared again next time
        log.info("could not save the calibration in %s: %s", run_dir, err)
    return novelty


def ensure_novelty(run_dir: str | Path, loaded, say: Say) -> tuple[Novelty | None, str | None]:
    """The run's rule, read from its folder or prepared now; or (None, why not) in plain words.

    A calibration that is damaged, changed or made for other weights is prepared again when the
    pictures are still there; otherwise the model answers without "none of these" and says why.
    """
    fingerprint = weights_fingerprint(loaded.model.state_dict())
    trouble = None
    try:
        novelty = read_novelty(run_dir, fingerprint, len(loaded.classes))
        if novelty is not None and novelty.references.shape[1] != _feature_dim(loaded):
            raise RunError(f"{NOVELTY_FILE} in {run_dir} does not fit this model's features.")
        if novelty is not None:
            return novelty, None
    except RunError as err:
        trouble = str(err)
        say(f"{trouble} Preparing it again.")
    try:
        return prepare_from_pictures(run_dir, loaded, say), None
    except TransferLabError as err:
        why = str(err).rstrip(".")
    except OSError as err:
        why = f"its pictures cannot be read ({err.strerror or err})"
    start = f"{trouble} " if trouble else ""
    return None, f"{start}It cannot say “none of these”: {why}. Its answers come without that check."


def _feature_dim(loaded) -> int:
    """Length of the pooled features: what the classifier takes in."""
    model = loaded.model
    return int(getattr(model.get_classifier(), "in_features", 0) or getattr(model, "head_hidden_size", 0)
               or model.num_features)


# ----------------------------------------------------------------------------------------------
# Exports: the rule inside the network
# ----------------------------------------------------------------------------------------------
class ExportedNetwork(nn.Module):
    """What ONNX and TorchScript files compute: ``logits``, ``features`` (pooled, before the
    classifier) and, when the run is calibrated, ``familiarity`` (the references are a constant of
    the graph). "None of these" is then ``familiarity < threshold`` and "unsure" the calibrated
    top-two margin, with the numbers from the file's metadata."""

    def __init__(self, model: nn.Module, novelty: Novelty | None):
        super().__init__()
        self.model = model
        self.neighbours = 0
        if novelty is not None:
            self.register_buffer("references", novelty.references.clone())
            self.neighbours = min(novelty.neighbours, novelty.references.shape[0])

    def output_names(self) -> list[str]:
        return ["logits", "features"] + (["familiarity"] if self.neighbours else [])

    def forward(self, x: torch.Tensor):
        features, logits = features_and_logits(self.model, x)
        if not self.neighbours:
            return logits, features
        sims = F.normalize(features, dim=1) @ self.references.T
        return logits, features, sims.topk(self.neighbours, dim=1).values.mean(dim=1)


__all__ = ["NOVELTY_FILE", "NOVELTY_TENSORS", "REJECT_RATE", "UNSURE_MARGIN", "NEIGHBOURS", "Novelty",
           "CalibrationData", "calibrate", "features_and_logits", "familiarity", "unsure", "fit_temperature",
           "pick_references", "weights_fingerprint", "save_novelty", "read_novelty", "ensure_novelty",
           "run_pictures", "frozen_space", "ExportedNetwork"]
