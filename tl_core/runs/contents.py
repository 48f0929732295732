"""What each file of a run folder must hold, checked where it is read.

A run folder is data from disk: a full disk, a hand edit or a folder handed over by someone else
(a bundle, a project file) can leave ``labels.json`` as ``42`` or ``[null, null]``, ``preprocessing.json``
with a size of 3000 pixels or a standard deviation of 0, ``status.json`` as ``[1]``, a
``model.safetensors`` cut short, or ``config.json`` naming ``hf-hub:...``. Without a check these
become a stack trace, ``"label": null``, ``"probability": NaN`` (invalid JSON), minutes and
gigabytes for one picture, or a download. The readers of :class:`~tl_core.runs.folder.RunFolder` and
:func:`tl_core.runs.validate.check_run` pass what they read through these functions, so every
damaged file gives the same plain :class:`RunError`: which file, in which folder, what is wrong,
what to do.

What a run may name is narrower than what timm can build: only the catalogue's models
(:mod:`tl_core.models.catalogue`), which are built bare and filled with the run's own weights, never
``hf-hub:`` or ``local-dir:`` names (timm would fetch those even without pretrained weights). The
one addition is timm's own tiny test networks (``test_*``): built into timm, nothing to fetch, a
few thousand parameters; Transfer Lab's tests use them as quick stand-ins.

No PyTorch here, and only a few kilobytes of the weights file are read, so run lists may call these
for every run.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from tl_core.errors import ConfigError, RunError
from tl_core.models.catalogue import model_names, model_title_of

# The picture sizes training accepts (RunConfig's model.image_size): a bigger one costs minutes and
# gigabytes per picture (3000 pixels: 51 s and 4 GB for one photo).
IMAGE_SIZE_RANGE = (32, 1024)
# The resampling filters timm's transforms know by name.
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
CROP_MODES = ("center", "squash", "border")
# Training always keeps the whole picture (1.0); a small share would enlarge the picture before
# cropping it (size / crop_pct pixels), so it is bounded like the size.
CROP_PCT_RANGE = (0.5, 1.0)
# Pixels are scaled to 0..1 before (x - mean) / std; every timm model's values lie in these ranges,
# and a std of 0 would divide by zero (NaN probabilities).
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (0.01, 1.0)
MIN_CLASSES = 2
_HEADER_LIMIT_BYTES = 100 << 20  # safetensors' own limit on the size of a header
MAX_LABEL_CHARS = 200
ADVICE = "It was changed or damaged after training; train the model again, or use an undamaged copy of the folder."


def damaged(path: Path, problem: str) -> RunError:
    """The one shape of message for a bad file: which file, in which folder, what is wrong, what to do."""
    return RunError(f"{path.name} in {path.parent} {problem}. {ADVICE}")


def shown(value: Any, limit: int = 40) -> str:
    """A value as it appears in the file, cut short: enough to recognise it in a message."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- labels.json ------------------------------------------------------------------------------------

def labels_problem(raw: Any) -> str | None:
    """Why ``raw`` is not a list of category names (None when it is)."""
    if not isinstance(raw, list):
        return f"should list the category names, but holds {shown(raw)}"
    if len(raw) < MIN_CLASSES:
        return f"should name at least {MIN_CLASSES} categories, but names {len(raw)}"
    for i, label in enumerate(raw):
        if not isinstance(label, str) or not label.strip():
            return f"should hold category names (text), but entry {i + 1} is {shown(label)}"
        if len(label) > MAX_LABEL_CHARS:
            return f"has a category name of {len(label)} characters (at most {MAX_LABEL_CHARS})"
    if len(set(raw)) != len(raw):
        repeated = next(label for label in raw if raw.count(label) > 1)
        return f"names the category {shown(repeated)} more than once"
    return None


def check_labels(raw: Any, source: Path) -> list[str]:
    """``raw`` as the list of category names; otherwise a :class:`RunError` naming ``source``."""
    problem = labels_problem(raw)
    if problem is not None:
        raise damaged(source, problem)
    return list(raw)


# -- preprocessing.json -------------------------------------------------------------------------

Checked = tuple[Any, "str | None"]  # (the value, None) or (None, what is wrong)


def _number(value: Any, key: str, lo: float, hi: float) -> Checked:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"has '{key}' {shown(value)}, which is not a number"
    if not lo <= value <= hi:
        return None, f"has '{key}' {shown(value)}; it should be from {lo} to {hi}"
    return float(value), None


def _triple(value: Any, key: str, lo: float, hi: float) -> Checked:
    """Three numbers (red, green, blue) within ``lo..hi``."""
    if not isinstance(value, list) or len(value) != 3 or any(_number(v, key, lo, hi)[1] for v in value):
        return None, f"has '{key}' {shown(value)}; it should be 3 numbers (red, green, blue) from {lo} to {hi}"
    return [float(v) for v in value], None


def _size(value: Any) -> Checked:
    lo, hi = IMAGE_SIZE_RANGE
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if not whole or not lo <= value <= hi:
        return None, f"has 'size' {shown(value)}; it should be a whole number of pixels from {lo} to {hi}"
    return int(value), None


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> Checked:
    if value not in allowed:
        return None, f"has '{key}' {shown(value)}; it should be one of {', '.join(allowed)}"
    return value, None


def preprocessing_problem(raw: Any) -> tuple[dict | None, str | None]:
    """(the checked picture settings, None) or (None, what is wrong).

    The settings are the keys :meth:`tl_core.models.preprocess.Preprocessing.from_dict` reads, with
    exact types; ``interpolation``, ``crop_pct`` and ``crop_mode`` may be missing (older runs)."""
    if not isinstance(raw, dict):
        return None, f"should hold the picture settings, but holds {shown(raw)}"
    missing = next((key for key in ("size", "mean", "std") if key not in raw), None)
    if missing:
        return None, f"has no '{missing}'"
    steps = {"size": lambda v: _size(v),
             "mean": lambda v: _triple(v, "mean", *MEAN_RANGE),
             "std": lambda v: _triple(v, "std", *STD_RANGE),
             "interpolation": lambda v: _choice(v, "interpolation", INTERPOLATIONS),
             "crop_pct": lambda v: _number(v, "crop_pct", *CROP_PCT_RANGE),
             "crop_mode": lambda v: _choice(v, "crop_mode", CROP_MODES)}
    defaults = {"interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center"}
    checked: dict[str, Any] = {}
    for key, step in steps.items():
        value, problem = step(raw.get(key, defaults.get(key)))
        if problem:
            return None, problem
        checked[key] = value
    return checked, None


def check_preprocessing(raw: Any, source: Path) -> dict:
    """``raw`` with its picture settings checked and made exact (other keys, such as a bundle's
    notes for people, are kept); otherwise a :class:`RunError` naming ``source``."""
    checked, problem = preprocessing_problem(raw)
    if problem is not None:
        raise damaged(source, problem)
    return {**raw, **checked}


# -- status.json --------------------------------------------------------------------------------

def status_problem(raw: Any, states: tuple[str, ...]) -> str | None:
    """Why ``raw`` is not a run status with one of ``states`` (None when it is)."""
    if not isinstance(raw, dict):
        return f"should hold the run's state, but holds {shown(raw)}"
    if raw.get("state") not in states:
        return f"has the state {shown(raw.get('state'))}; it should be one of {', '.join(states)}"
    return None


# -- the model name: catalogue only, never a download --------------------------------------------

def model_name_problem(name: Any) -> str | None:
    """Why ``name`` may not be built when loading a run (None when it may).

    Cheap (no timm import for catalogue names), so run lists can call it for every run."""
    if not isinstance(name, str) or not name.strip():
        return "names no model"
    if ":" in name or "/" in name or "\\" in name:
        return (f"names the model {shown(name)}, which would be fetched from the internet or another folder; "
                "a run only ever loads one of Transfer Lab's own models from its own weights file")
    try:
        model_title_of(name)
        return None
    except ConfigError:
        pass
    if name.startswith("test_") and _is_timm_test_network(name):
        return None
    return (f"names the model {shown(name)}, which is not one of Transfer Lab's models "
            f"({', '.join(model_names())})")


def _is_timm_test_network(name: str) -> bool:
    import timm

    return name.split(".", 1)[0] in timm.list_models("test_*")


def check_model_name(name: Any, source: Path) -> str:
    """``name`` when a run may build it; otherwise a :class:`RunError` naming ``source``."""
    problem = model_name_problem(name)
    if problem is not None:
        raise damaged(source, problem)
    return name.strip()


# -- model.safetensors --------------------------------------------------------------------------

def weights_header_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, from its header alone (None when it is).

    Reads a few kilobytes, never the tensors, so run lists can call it for every run: a file cut
    short by a full disk or overwritten with other bytes shows here."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "is empty or cut short"
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, _HEADER_LIMIT_BYTES):
                return "is not a weights file (its header is damaged)"
            header = json.loads(fh.read(length).decode("utf-8"))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "is not a weights file (its header is damaged)"
    if not isinstance(header, dict):
        return "is not a weights file (its header is damaged)"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "is not a weights file (its header is damaged)"
    if 8 + length + end != size:
        return "is cut short or has bytes added (its size does not match its contents)"
    return None


# -- a bundle's notes in preprocessing.json -------------------------------------------------------

def bundle_notes_problem(prep: dict, model_name: str, num_classes: int) -> str | None:
    """A bundle's preprocessing.json repeats the model and the number of categories for its own
    predict.py: both must agree with config.json and labels.json, or predict.py would load another
    model than ``tl predict`` does (None when they agree or are absent, as in a run folder)."""
    if "model" in prep and prep["model"] != model_name:
        return f"names the model {shown(prep['model'])}, but config.json names {shown(model_name)}"
    if "num_classes" in prep and prep["num_classes"] != num_classes:
        return f"says {shown(prep['num_classes'])} categories, but labels.json names {num_classes}"
    return None


__all__ = ["damaged", "shown", "model_name_problem", "check_model_name", "weights_header_problem",
           "bundle_notes_problem", "labels_problem", "check_labels", "preprocessing_problem", "check_preprocessing",
           "status_problem", "IMAGE_SIZE_RANGE", "INTERPOLATIONS", "CROP_MODES", "CROP_PCT_RANGE", "MEAN_RANGE",
           "STD_RANGE", "MIN_CLASSES", "ADVICE"]
