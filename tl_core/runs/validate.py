"""Is this run folder (or exported bundle) sound enough to load? One answer for every reader.

Predict, evaluate, export, Grad-CAM and the app all load runs through :func:`check_run` (via
:func:`tl_core.results.inference.load_run_model`, and export also before it writes anything): the
model name, the category names, the picture settings (each file as :mod:`tl_core.runs.contents`
checks it) and then the weights, read and compared with the network the run names, built on
PyTorch's meta device (shapes only, no memory). The first problem raises one plain
:class:`~tl_core.errors.RunError` naming the file, before any network is built for real.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_core.errors import RunError
from tl_core.runs.contents import bundle_notes_problem, check_model_name, damaged, weights_header_problem
from tl_core.runs.folder import CONFIG_FILE, LABELS_FILE, PREPROCESSING_FILE, RunFolder

if TYPE_CHECKING:  # pragma: no cover - names for type hints only
    import torch

# A weights file may hold the model in float32 or float64, plus its header: a file much bigger than
# that is not this model's, and is not read into memory.
_WEIGHTS_SLACK_BYTES = 1 << 20


# -- model.safetensors: the tensors ---------------------------------------------------------

def check_weights(path: Path, model_name: str, num_classes: int) -> dict[str, "torch.Tensor"]:
    """The run's weights, read only when they are exactly what ``model_name`` with
    ``num_classes`` outputs needs: every part present with its shape, nothing extra, every number finite."""
    import torch
    from safetensors.torch import load_file

    from tl_core.models.builder import build_network

    if not path.is_file():
        raise RunError(f"There are no saved weights ({path.name}) in {path.parent}: the run stopped before the "
                       "first epoch ended, or the file was removed.")
    expected = build_network(model_name, num_classes, on_meta_device=True).state_dict()
    limit = 2 * sum(t.numel() * 4 for t in expected.values()) + _WEIGHTS_SLACK_BYTES
    problem = weights_header_problem(path)
    if problem is None and path.stat().st_size > limit:
        problem = f"is far bigger than the weights of model {model_name}"
    if problem is not None:
        raise damaged(path, problem)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error kinds for broken files
        raise damaged(path, f"cannot be read as weights ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})") from None
    problem = _fit_problem(state, expected, model_name, num_classes)
    if problem is not None:
        raise damaged(path, problem)
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise damaged(path, f"holds numbers that are not finite (NaN or infinity) in {bad}")
    return state


def _fit_problem(state: dict, expected: dict, model_name: str, num_classes: int) -> str | None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    kinds = sorted(k for k in set(state) & set(expected)
                   if state[k].is_floating_point() != expected[k].is_floating_point())
    if not (missing or extra or wrong or kinds):
        return None
    heads = [k for k in wrong if expected[k].ndim >= 1 and expected[k].shape[0] == num_classes
             and state[k].ndim == expected[k].ndim and tuple(state[k].shape[1:]) == tuple(expected[k].shape[1:])]
    if heads and heads == wrong and not (missing or extra or kinds):
        return (f"answers {state[heads[0]].shape[0]} categories, but {LABELS_FILE} names {num_classes}: the two files "
                "do not belong together")
    if missing:
        return f"does not fit model {model_name}: {len(missing)} part(s) have no weights (e.g. {missing[0]})"
    if extra:
        return f"does not fit model {model_name}: {len(extra)} entries belong to no part of it (e.g. {extra[0]})"
    if wrong:
        k = wrong[0]
        return (f"does not fit model {model_name}: {k} has the size {tuple(state[k].shape)}, "
                f"the model needs {tuple(expected[k].shape)}")
    return f"does not fit model {model_name}: {kinds[0]} holds whole numbers where the model needs decimals"


# -- the whole folder ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckedRun:
    """What a sound run folder holds, checked: enough to build and fill its model."""

    path: Path
    model_name: str
    classes: list[str]
    preprocessing: dict
    state_dict: dict | None


def check_run(run_dir: str | Path, *, weights: bool = True) -> CheckedRun:
    """Check a run folder (or bundle) before anything is built from it, and return its contents.

    The model name (config.json, and a bundle's preprocessing.json), the category names, the picture
    settings and, with ``weights=True``, model.safetensors against the network it names. The first
    problem found raises :class:`RunError` naming the file; nothing is downloaded and no network is
    built except the catalogue's, on PyTorch's meta device.
    """
    run = RunFolder.open(run_dir)
    name = check_model_name(run.config().model.name, run.path / CONFIG_FILE)
    classes = run.labels()
    prep = run.preprocessing()
    problem = bundle_notes_problem(prep, name, len(classes))
    if problem is not None:
        raise damaged(run.path / PREPROCESSING_FILE, problem)
    state = check_weights(run.weights_path, name, len(classes)) if weights else None
    return CheckedRun(run.path, name, classes, prep, state)


__all__ = ["CheckedRun", "check_run", "check_weights"]
