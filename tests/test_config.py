import json

import pytest

from tl_core.config import (DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig, parse_preset)
from tl_core.errors import ConfigError


def test_round_trip_json(tmp_path):
    cfg = RunConfig(data=DataConfig(root="/data", val_fraction=0.25), model=ModelConfig(name="resnet18"),
                    freeze=FreezeConfig(preset="last:2", layer_lr_decay=0.7),
                    train=TrainConfig(epochs=3, lr=1e-3, augment="strong"), name="demo")
    path = tmp_path / "config.json"
    cfg.save(path)
    again = RunConfig.load(path)
    assert again == cfg
    assert json.loads(path.read_text())["freeze"]["preset"] == "last:2"


@pytest.mark.parametrize("preset,expected", [("head", ("head", 0)), ("none", ("none", 0)),
                                             ("scratch", ("scratch", 0)), ("last:3", ("last", 3))])
def test_parse_preset(preset, expected):
    assert parse_preset(preset) == expected


@pytest.mark.parametrize("preset", ["", "tail", "last:", "last:x", "last:0", "HEAD"])
def test_bad_preset_explains_choices(preset):
    with pytest.raises(ConfigError, match="head|at least 1"):
        FreezeConfig(preset=preset)


@pytest.mark.parametrize("kwargs,needle", [
    ({"epochs": 0}, "Epochs"), ({"epochs": 2.5}, "whole number"), ({"batch_size": 0}, "Batch size"),
    ({"lr": 5.0}, "learning rate"), ({"label_smoothing": 0.9}, "Label smoothing"),
    ({"schedule": "step"}, "schedule must be one of"), ({"device": "tpu"}, "device"),
    ({"early_stopping_patience": 0}, "patience"), ({"augment": "extreme"}, "augment"),
])
def test_bad_training_settings(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(**kwargs)


def test_bad_data_settings():
    with pytest.raises(ConfigError, match="empty"):
        DataConfig(root="  ")
    with pytest.raises(ConfigError, match="validation share"):
        DataConfig(root="x", val_fraction=0.9)


def test_scratch_and_weights_must_agree():
    with pytest.raises(ConfigError, match="scratch"):
        RunConfig(data=DataConfig(root="x"), model=ModelConfig(weights="none"), freeze=FreezeConfig("head"))
    with pytest.raises(ConfigError, match="random"):
        RunConfig(data=DataConfig(root="x"), model=ModelConfig(weights="offline"), freeze=FreezeConfig("scratch"))
    RunConfig(data=DataConfig(root="x"), model=ModelConfig(weights="none"), freeze=FreezeConfig("scratch"))


def test_from_dict_rejects_unknown_and_damaged():
    with pytest.raises(ConfigError, match="Unknown setting"):
        RunConfig.from_dict({"data": {"root": "x", "colour": 1}})
    with pytest.raises(ConfigError, match="Unknown configuration section"):
        RunConfig.from_dict({"data": {"root": "x"}, "extra": {}})
    with pytest.raises(ConfigError, match="no 'data'"):
        RunConfig.from_dict({})
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{oops")
    with pytest.raises(ConfigError, match="incomplete"):
        RunConfig.from_dict({"data": {}})


def test_default_lr_depends_on_preset():
    t = TrainConfig()
    assert t.resolved_lr("head") > t.resolved_lr("none")
    assert TrainConfig(lr=0.01).resolved_lr("none") == 0.01
