import pytest
import timm
import torch

from tl_core.config import FreezeConfig
from tl_core.errors import ConfigError
from tl_core.models.freezing import (CLASSIFIER_GROUP, apply_freeze_plan, layer_groups, make_freeze_plan,
                              optimizer_param_groups, set_train_mode)


@pytest.fixture(scope="module")
def lite0():
    return timm.create_model("tf_efficientnet_lite0", num_classes=4)


def test_groups_cover_every_parameter_once(lite0):
    groups = layer_groups(lite0)
    names = [n for g in groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in lite0.named_parameters())
    assert sum(g.num_params for g in groups) == sum(p.numel() for p in lite0.parameters())
    assert groups[0].name == "stem" and groups[-1].name == CLASSIFIER_GROUP
    assert groups[-1].param_names == ["classifier.weight", "classifier.bias"]
    assert all(g.label and g.description for g in groups)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "convnext_atto", "vit_tiny_patch16_224"])
def test_groups_for_other_families(name):
    model = timm.create_model(name, num_classes=3)
    groups = layer_groups(model)
    assert len(groups) >= 4
    cls = model.get_classifier()
    assert groups[-1].num_params == sum(p.numel() for p in cls.parameters())


def test_presets(lite0):
    groups = layer_groups(lite0)
    body = [g.name for g in groups[:-1]]
    assert make_freeze_plan(lite0, FreezeConfig("head")).frozen == body
    assert make_freeze_plan(lite0, FreezeConfig("last:2")).frozen == body[:-2]
    assert make_freeze_plan(lite0, FreezeConfig("none")).frozen == []
    assert make_freeze_plan(lite0, FreezeConfig("scratch")).frozen == []
    explicit = make_freeze_plan(lite0, FreezeConfig("none", frozen_groups=["stem", "stage_2"]))
    assert explicit.frozen == ["stem", "stage_2"]
    assert explicit.frozen_prefix_len == 1


def test_bad_plans(lite0):
    with pytest.raises(ConfigError, match="only"):
        make_freeze_plan(lite0, FreezeConfig("last:50"))
    with pytest.raises(ConfigError, match="Unknown layer group"):
        make_freeze_plan(lite0, FreezeConfig(frozen_groups=["nope"]))
    with pytest.raises(ConfigError, match="cannot be frozen"):
        make_freeze_plan(lite0, FreezeConfig(frozen_groups=[CLASSIFIER_GROUP]))


def test_apply_plan_and_bn_stays_fixed():
    model = timm.create_model("tf_efficientnet_lite0", num_classes=4)
    plan = make_freeze_plan(model, FreezeConfig("last:1"))
    apply_freeze_plan(model, plan)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for g in plan.trainable_groups for n in g.param_names}
    assert trainable == expected
    assert plan.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)

    set_train_mode(model)
    assert not model.bn1.training and not model.blocks[0].training   # frozen: eval
    assert model.blocks[6].training and model.bn2.training            # trainable: train
    before = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert torch.equal(before, model.bn1.running_mean), "frozen BatchNorm statistics must not move"


def test_optimizer_sees_only_trainable_and_layer_decay():
    model = timm.create_model("resnet18", num_classes=3)
    plan = make_freeze_plan(model, FreezeConfig("last:2"))
    apply_freeze_plan(model, plan)
    groups = optimizer_param_groups(model, plan, lr=1e-3, weight_decay=0.05, layer_lr_decay=0.5)
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in model.parameters() if p.requires_grad}
    lr_by_group = {g["group"]: g["lr"] for g in groups}
    assert lr_by_group["classifier"] == pytest.approx(1e-3)
    assert lr_by_group["final"] == pytest.approx(5e-4)
    assert lr_by_group["stage_3"] == pytest.approx(2.5e-4)
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim <= 1 for p in g["params"]))


def test_lite0_groups_are_pinned(lite0):
    """The grouping (timm's public group_parameters, classifier split out) stays exactly as it was."""
    groups = layer_groups(lite0)
    assert [(g.name, g.param_names[0], len(g.param_names)) for g in groups] == [
        ("stem", "conv_stem.weight", 3), ("stage_1", "blocks.0.0.conv_dw.weight", 6),
        ("stage_2", "blocks.1.0.conv_pw.weight", 18), ("stage_3", "blocks.2.0.conv_pw.weight", 18),
        ("stage_4", "blocks.3.0.conv_pw.weight", 27), ("stage_5", "blocks.4.0.conv_pw.weight", 27),
        ("stage_6", "blocks.5.0.conv_pw.weight", 36), ("final", "blocks.6.0.conv_pw.weight", 12),
        ("classifier", "classifier.weight", 2)]


def test_tl_core_imports_no_private_timm_module():
    import ast
    from pathlib import Path

    import tl_core

    for path in Path(tl_core.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] == "timm":
                    assert not any(part.startswith("_") for part in module.split(".")), (path, module)
