import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tl_core.training.augment import BatchAugment
from tl_core.models.preprocess import Preprocessing


def test_preprocessing_from_timm_config():
    prep = Preprocessing.for_model(timm.create_model("tf_efficientnet_lite0"))
    assert prep.size == 224 and prep.mean == (0.5, 0.5, 0.5) and prep.interpolation == "bicubic"
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert Preprocessing.for_model(timm.create_model("resnet18"), image_size=160).size == 160


def test_to_uint8_keeps_whole_image_and_normalises():
    prep = Preprocessing(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = Image.fromarray(np.full((40, 80, 3), 255, np.uint8))
    t = prep.to_uint8(img)
    assert t.shape == (3, 32, 32) and t.dtype == torch.uint8
    x = prep.normalizer()(t[None])
    assert torch.allclose(x, torch.ones_like(x))
    batch = prep.to_input([img, img])
    assert batch.shape == (2, 3, 32, 32)


def test_augment_is_deterministic_and_in_range():
    x = torch.randint(0, 256, (6, 3, 48, 48)).float()
    a = BatchAugment("strong", torch.Generator().manual_seed(1))(x)
    b = BatchAugment("strong", torch.Generator().manual_seed(1))(x)
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert not torch.equal(a, x)
    assert BatchAugment("none")(x) is x
    with pytest.raises(ValueError):
        BatchAugment("wild")


def test_light_augment_keeps_most_of_the_image():
    x = torch.zeros(32, 3, 64, 64)
    x[:, :, 16:48, 16:48] = 255.0  # a centred square must survive a light crop
    out = BatchAugment("light", torch.Generator().manual_seed(0))(x)
    centre = out[:, :, 28:36, 28:36].mean()
    assert centre > 200
