import pytest
import timm
import torch

from tl_core.config import FreezeConfig
from tl_core.training.features import (compute_features, feature_cache_key, find_prefix_split, load_cached_features,
                              save_cached_features)
from tl_core.models.freezing import apply_freeze_plan, make_freeze_plan, set_train_mode


def _frozen(name, preset):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    apply_freeze_plan(model, make_freeze_plan(model, FreezeConfig(preset)))
    return model.eval()


@pytest.mark.parametrize("name,preset,boundary", [
    ("tf_efficientnet_lite0", "head", "pre_logits"),
    ("tf_efficientnet_lite0", "last:1", "blocks.6"),
    ("mobilenetv3_small_050", "last:2", None),
    ("resnet18", "last:1", "layer4"),
    ("convnext_atto", "last:2", None),
    ("vit_tiny_patch16_224", "head", "pre_logits"),
])
def test_split_reproduces_the_model(name, preset, boundary):
    model = _frozen(name, preset)
    split = find_prefix_split(model)
    assert split is not None
    if boundary:
        assert split.boundary == boundary
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(split.suffix(split.prefix(x)), model(x), atol=1e-4)


def test_no_split_when_nothing_frozen_or_unknown_chain():
    assert find_prefix_split(_frozen("resnet18", "none")) is None
    # a ViT fine-tuning its last blocks has no plain chain we can cut: full training instead
    assert find_prefix_split(_frozen("vit_tiny_patch16_224", "last:2")) is None


def test_suffix_trains_only_after_boundary():
    model = _frozen("resnet18", "last:1")
    split = find_prefix_split(model)
    set_train_mode(model)
    feats = compute_features(split.prefix, torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8),
                             lambda b: b.float() / 255, torch.device("cpu"))
    out = split.suffix(feats)
    out.sum().backward()
    assert model.layer4[0].conv1.weight.grad is not None
    assert model.layer3[0].conv1.weight.grad is None


def test_cache_key_changes_with_inputs(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    k1 = feature_cache_key([str(a)], [0], "m", "w", "pre_logits", {"size": 224})
    assert k1 == feature_cache_key([str(a)], [0], "m", "w", "pre_logits", {"size": 224})
    assert k1 != feature_cache_key([str(a)], [1], "m", "w", "pre_logits", {"size": 224})
    assert k1 != feature_cache_key([str(a)], [0], "m", "w2", "pre_logits", {"size": 224})
    assert k1 != feature_cache_key([str(a)], [0], "m", "w", "blocks.6", {"size": 224})
    a.write_bytes(b"xy")  # the file changed
    assert k1 != feature_cache_key([str(a)], [0], "m", "w", "pre_logits", {"size": 224})


def test_cache_round_trip_and_damaged_file(tmp_path):
    t = {"x": torch.randn(3, 5), "y": torch.tensor([0, 1, 2])}
    save_cached_features(tmp_path, "k", t)
    back = load_cached_features(tmp_path, "k")
    assert torch.equal(back["x"], t["x"]) and torch.equal(back["y"], t["y"])
    (tmp_path / "features" / "bad.safetensors").write_bytes(b"garbage")
    assert load_cached_features(tmp_path, "bad") is None
    assert load_cached_features(tmp_path, "missing") is None
