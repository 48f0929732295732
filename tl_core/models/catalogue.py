"""The model catalogue: a short, curated list of pretrained backbones that suit small data sets
and ordinary laptops.

timm knows over a thousand models; a beginner needs a dozen, each with a plain name, a size, an
accuracy and one sentence on when to pick it. Everything that timm itself knows (input size,
licence, Hugging Face repository) is read from timm's ``pretrained_cfg`` of the exact pretrained
tag we chose, and the parameter count is *measured* by building the model on PyTorch's ``meta``
device (no memory, no weights), so the numbers shown in the app can never drift from what is
actually trained.
"""
from __future__ import annotations

from dataclasses import dataclass

from tl_core.errors import ConfigError

RECOMMENDED_MODEL = "tf_efficientnet_lite0"

# ImageNet-1k top-1 accuracy (%) for the exact pretrained tags below.
#
# timm 1.0.31 ships no accuracy table in its wheel (pretrained_cfg has no metrics), so these
# numbers are copied from timm's published results table ``results/results-imagenet.csv`` in
# the huggingface/pytorch-image-models repository (commit 0173a139a2c6), column ``top1``.
# That table evaluates each tag at its *test* resolution (e.g. ResNet/ConvNeXt at 288 px), so
# treat them as a ranking of the backbones, not a promise for your own data.
TOP1_FROM_TIMM_RESULTS: dict[str, float] = {
    "tf_efficientnet_lite0.in1k": 74.830,
    "tf_efficientnet_lite1.in1k": 76.644,
    "tf_efficientnet_lite2.in1k": 77.464,
    "mobilenetv3_small_100.lamb_in1k": 67.656,
    "mobilenetv3_large_100.ra_in1k": 75.766,
    "efficientnet_b0.ra_in1k": 77.694,
    "resnet18.a1_in1k": 73.158,
    "resnet50.a1_in1k": 81.214,
    "convnext_atto.d2_in1k": 77.008,
    "convnext_nano.in12k_ft_in1k": 82.862,
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k": 75.454,
    "regnety_008.pycls_in1k": 76.302,
}


@dataclass(frozen=True)
class ModelInfo:
    """One catalogue entry: what the app shows and what the trainer needs to build the model.

    ``pretrained_tag`` is the full timm name with the chosen pretrained tag
    (``"mobilenetv3_large_100.ra_in1k"``); :func:`tl_core.models.create_model` builds the model from
    it so that ``model.pretrained_cfg`` (mean, std, crop) matches the weights that are loaded.
    """

    name: str
    title: str
    family: str
    params_m: float
    input_size: int
    top1: float | None
    license: str
    hf_hub_id: str | None
    is_convnet: bool
    offline_weights: bool
    blurb: str
    pretrained_tag: str = ""

    def __post_init__(self) -> None:
        if not self.pretrained_tag:
            object.__setattr__(self, "pretrained_tag", self.name)


@dataclass(frozen=True)
class _Entry:
    """The hand-written part of an entry; the rest is read from timm."""

    pretrained_tag: str
    title: str
    family: str
    is_convnet: bool
    blurb: str

    @property
    def name(self) -> str:
        return self.pretrained_tag.split(".", 1)[0]


# Order = the order the app lists them: the recommended and offline-ready models first, then
# roughly from smallest/fastest to largest.
_ENTRIES: tuple[_Entry, ...] = (
    _Entry("tf_efficientnet_lite0.in1k", "EfficientNet-Lite0", "efficientnet", True,
           "The recommended start: small, quick on a laptop, accurate, and ready offline."),
    _Entry("tf_efficientnet_lite1.in1k", "EfficientNet-Lite1", "efficientnet", True,
           "A little more accurate than Lite0 for a little more time, and also ready offline."),
    _Entry("tf_efficientnet_lite2.in1k", "EfficientNet-Lite2", "efficientnet", True,
           "The most accurate of the offline-ready models; pick it when you can wait a bit longer."),
    _Entry("mobilenetv3_small_100.lamb_in1k", "MobileNetV3-Small", "mobilenet", True,
           "The smallest and fastest; pick it for a slow computer or a quick first try."),
    _Entry("mobilenetv3_large_100.ra_in1k", "MobileNetV3-Large", "mobilenet", True,
           "Fast and light like Lite0; a good choice for phones and older laptops."),
    _Entry("efficientnet_b0.ra_in1k", "EfficientNet-B0", "efficientnet", True,
           "A well-rounded small model, a bit more accurate than Lite0; needs a one-time download."),
    _Entry("convnext_atto.d2_in1k", "ConvNeXt-Atto", "convnext", True,
           "A tiny modern network with good accuracy for its size."),
    _Entry("regnety_008.pycls_in1k", "RegNetY-800MF", "regnet", True,
           "A balanced middle ground between speed and accuracy."),
    _Entry("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "ViT-Tiny", "vit", False,
           "A small Vision Transformer; try it to compare with the ConvNets (it always uses 224-pixel images)."),
    _Entry("resnet18.a1_in1k", "ResNet-18", "resnet", True,
           "A classic, simple design that trains reliably; a good baseline to compare against."),
    _Entry("convnext_nano.in12k_ft_in1k", "ConvNeXt-Nano", "convnext", True,
           "The most accurate choice here; worth it with a GPU or some patience."),
    _Entry("resnet50.a1_in1k", "ResNet-50", "resnet", True,
           "A bigger classic with sturdy features; pick it when you have a GPU."),
)

# Measured parameter counts (millions), keyed by pretrained tag: building even on the meta device
# costs a few tens of milliseconds per model, and the app asks for the catalogue on every rerun.
_PARAMS_M: dict[str, float] = {}


def measure_params_m(pretrained_tag: str) -> float:
    """Parameter count in millions of ``pretrained_tag`` with its original (ImageNet) head.

    Built on the ``meta`` device: shapes are real, no memory is allocated and no weights are
    read, so this is exact and cheap. Results are cached in a module-level dict.
    """
    cached = _PARAMS_M.get(pretrained_tag)
    if cached is not None:
        return cached
    from tl_core.models.builder import build_network

    model = build_network(pretrained_tag, on_meta_device=True)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    _PARAMS_M[pretrained_tag] = count
    return count


def _pretrained_cfg(pretrained_tag: str) -> dict:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(pretrained_tag)
    if cfg is None:  # only if timm renamed a tag: fail loudly rather than show wrong facts
        raise ConfigError(f"The installed timm does not know the pretrained model {pretrained_tag!r}.")
    return cfg.to_dict()


def _build(entry: _Entry) -> ModelInfo:
    from tl_core.models.offline import offline_package_available

    cfg = _pretrained_cfg(entry.pretrained_tag)
    return ModelInfo(
        name=entry.name,
        title=entry.title,
        family=entry.family,
        params_m=round(measure_params_m(entry.pretrained_tag), 2),
        input_size=int(cfg["input_size"][-1]),
        top1=TOP1_FROM_TIMM_RESULTS.get(entry.pretrained_tag),
        license=str(cfg.get("license") or "unknown"),
        hf_hub_id=cfg.get("hf_hub_id") or None,
        is_convnet=entry.is_convnet,
        offline_weights=offline_package_available(entry.name),
        blurb=entry.blurb,
        pretrained_tag=entry.pretrained_tag,
    )


def catalogue() -> list[ModelInfo]:
    """All catalogue entries, recommended first. Cheap after the first call (sizes are cached)."""
    return [_build(entry) for entry in _ENTRIES]


def model_title_of(name: str) -> str:
    """The friendly title of a catalogue model ("EfficientNet-Lite0"), without building anything."""
    key = (name or "").strip()
    for entry in _ENTRIES:
        if key in (entry.name, entry.pretrained_tag):
            return entry.title
    raise ConfigError(f"Unknown model {name!r}. Choose one of: {', '.join(model_names())}.")


def model_names() -> list[str]:
    """The timm names of the catalogue, in catalogue order."""
    return [entry.name for entry in _ENTRIES]


def get_model_info(name: str) -> ModelInfo:
    """The entry for ``name`` (``"resnet18"``; the full tag ``"resnet18.a1_in1k"`` works too).

    Unknown names raise :class:`ConfigError` listing the valid ones, because a typo in a CLI
    flag should be answered with the choices, not with a timm stack trace.
    """
    key = (name or "").strip()
    for entry in _ENTRIES:
        if key in (entry.name, entry.pretrained_tag):
            return _build(entry)
    raise ConfigError(f"Unknown model {name!r}. Choose one of: {', '.join(model_names())}.")
