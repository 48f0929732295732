"""Grad-CAM looks where the evidence is; it works for the catalogue's convnets and the ViT."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tl_core.config import DataConfig, ModelConfig, RunConfig
from tl_core.errors import TransferLabError
from tl_core.results.explain import cam_setup, explain, gradcam, jet, overlay
from tl_core.results.inference import LoadedModel, load_run_model
from tl_core.models.preprocess import Preprocessing
from tl_core.runs import RunFolder

SIZE = 128


def corner_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """Noise everywhere; the class is the colour of a square somewhere in the top-left quadrant
    (red = class 0, blue = class 1). Nothing else differs between the classes."""
    arr = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    q, side = SIZE // 2, SIZE // 4
    x0, y0 = rng.integers(2, q - side - 2, size=2)
    arr[y0:y0 + side, x0:x0 + side] = (255, 40, 40) if cls == 0 else (40, 40, 255)
    return arr


def _save_run(tmp_path: Path, name: str, model: torch.nn.Module, prep: Preprocessing, classes: list[str]) -> Path:
    run = RunFolder.create(RunConfig(data=DataConfig(root=str(tmp_path)), model=ModelConfig(name=name)),
                           runs_dir=tmp_path / "runs")
    run.save_labels(classes)
    run.save_preprocessing(prep.to_dict())
    run.save_weights(model.state_dict())
    return run.path


def test_gradcam_heat_is_in_the_corner_that_decides(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 128
    x_u8 = torch.from_numpy(np.stack([corner_image(i % 2, rng) for i in range(n)])).permute(0, 3, 1, 2).contiguous()
    y = torch.arange(n) % 2
    check_u8 = torch.from_numpy(np.stack([corner_image(i % 2, rng) for i in range(32)])).permute(0, 3, 1, 2)
    check_y = torch.arange(32) % 2
    model = timm.create_model("test_resnet", num_classes=2)
    prep = Preprocessing.for_model(model, image_size=SIZE)
    norm = prep.normalizer()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    for epoch in range(6):  # usually 2-3 epochs: a few seconds on 2 idle CPU cores
        model.train()
        for idx in torch.randperm(n).split(32):
            loss = torch.nn.functional.cross_entropy(model(norm(x_u8[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            held_out_acc = (model(norm(check_u8)).argmax(1) == check_y).float().mean().item()
        if epoch >= 1 and held_out_acc == 1.0:
            break
    train_seconds = time.perf_counter() - t0

    loaded = load_run_model(_save_run(tmp_path, "test_resnet", model, prep, ["red", "blue"]))
    test_rng = np.random.default_rng(123)
    fractions, correct = [], 0
    for i in range(10):
        img = Image.fromarray(corner_image(i % 2, test_rng))
        correct += int(loaded.predict_proba([img])[0].argmax()) == i % 2
        heat = gradcam(loaded, img)
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
        fractions.append(heat[: SIZE // 2, : SIZE // 2].sum() / heat.sum())
    print(f"{epoch + 1} epochs in {train_seconds:.1f}s, accuracy {correct}/10, "
          f"top-left heat share {np.round(fractions, 2)}")
    assert correct >= 9, "the tiny model did not learn the corner pattern"
    # a uniform map would put 25% there; most of the heat must sit in the deciding quadrant
    assert np.mean(fractions) > 0.5
    assert np.median(fractions) > 0.5


def _loaded(name: str, **kw) -> LoadedModel:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, **kw).eval()
    return LoadedModel(model, ["a", "b", "c"], Preprocessing.for_model(model), name, torch.device("cpu"))


def _photo(w=200, h=150) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 64) * 4], -1).astype(np.uint8)
    arr[h // 3: h // 2, w // 4: w // 2] = (250, 250, 30)
    return Image.fromarray(arr)


@pytest.mark.parametrize("name", ["test_vit", "vit_tiny_patch16_224"])
def test_gradcam_vit_smoke(name):
    loaded = _loaded(name)
    assert cam_setup(loaded.model, loaded.preprocessing.to_input([_photo()]))[3] == "vit"
    heat = gradcam(loaded, _photo(), target=1)
    s = loaded.preprocessing.size
    assert heat.shape == (s, s)
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert heat.std() > 1e-3, "the heat map is constant"
    # the hooks on the shared model are gone again
    assert not loaded.model.blocks[-1].norm1._forward_hooks
    assert all(p.grad is None for p in loaded.model.parameters())


# one of each convolutional family in the catalogue (random weights: only the mechanics are tested here)
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv3_small_050", "resnet18", "convnext_atto"])
def test_gradcam_catalogue_convnets(name):
    loaded = _loaded(name)
    assert cam_setup(loaded.model, loaded.preprocessing.to_input([_photo()]))[3] == "conv"
    heat = gradcam(loaded, _photo())
    assert heat.shape == (loaded.preprocessing.size,) * 2
    assert np.isfinite(heat).all() and 0 <= heat.min() and heat.max() <= 1 and heat.std() > 1e-3
    # the model is left as it was: eval mode, no gradients kept, still predicts the same
    assert not loaded.model.training
    assert all(p.grad is None for p in loaded.model.parameters())


def test_gradcam_targets_and_frozen_weights():
    loaded = _loaded("test_efficientnet")
    for p in loaded.model.parameters():
        p.requires_grad_(False)  # a fully frozen model still gets a heat map
    by_name = gradcam(loaded, _photo(), target="c")
    by_index = gradcam(loaded, _photo(), target=2)
    np.testing.assert_allclose(by_name, by_index, atol=1e-6)
    with pytest.raises(TransferLabError):
        gradcam(loaded, _photo(), target=7)
    with pytest.raises(TransferLabError):
        gradcam(loaded, _photo(), target="zebra")
    with pytest.raises(TransferLabError):
        gradcam(loaded, np.zeros((8, 8, 3)))  # type: ignore[arg-type]
    out = explain(loaded, _photo())
    assert out["label"] in loaded.classes and 0 <= out["probability"] <= 1
    assert out["overlay"].size == (loaded.preprocessing.size,) * 2


def test_overlay_and_colormap():
    heat = np.zeros((32, 48), np.float32)
    heat[:, 24:] = 1.0
    img = Image.new("RGB", (96, 40), (0, 0, 0))  # other size and aspect: resized + centre-cropped
    out = overlay(img, heat, alpha=1.0)
    assert out.size == (48, 32) and out.mode == "RGB"
    arr = np.asarray(out)
    assert tuple(arr[5, 40]) == (128, 0, 0)   # jet(1) = dark red
    assert tuple(arr[5, 5]) == (0, 0, 128)    # jet(0) = dark blue
    half = np.asarray(overlay(Image.new("RGB", (48, 32), (200, 200, 200)), heat, alpha=0.0))
    assert (half == 200).all()
    assert jet(np.array([0.5]))[0].tolist() == [128, 255, 128]   # green-ish middle
    with pytest.raises(TransferLabError):
        overlay(img, np.zeros(5))
    with pytest.raises(TransferLabError):
        overlay(img, heat, alpha=2)


def test_overlay_keeps_the_pictures_shape():
    """Issue 11: a wide photo stays wide. The heat map (the model's square input) lands on the square
    the model saw, the centre of the picture; the strips it never saw are greyed, not coloured."""
    heat = np.zeros((32, 32), np.float32)
    heat[:, 16:] = 1.0                                  # right half of what the model saw
    wide = Image.new("RGB", (320, 200), (0, 0, 0))
    out = overlay(wide, heat, alpha=1.0, keep_shape=True)
    assert out.size == (320, 200)                       # the picture's own shape, not a square
    arr = np.asarray(out).astype(int)
    assert tuple(arr[100, 70]) == (0, 0, 128)           # seen square starts at x=60: left half cold
    assert tuple(arr[100, 250]) == (128, 0, 0)          # ... and ends at x=260: right half hot
    assert arr[100, 5].std() == 0 and arr[100, 5][0] > 60 and tuple(arr[100, 5]) == tuple(arr[100, 315])  # grey
    tall = overlay(Image.new("RGB", (100, 300), (200, 200, 200)), heat, keep_shape=True)
    assert tall.size == (100, 300)
    big = overlay(Image.new("RGB", (4000, 3000)), heat, keep_shape=True, max_side=800)
    assert big.size == (800, 600)                       # big photos are shown smaller, same shape
    squash = Preprocessing(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, crop_mode="squash")
    out = np.asarray(overlay(wide, heat, alpha=1.0, keep_shape=True, preprocessing=squash)).astype(int)
    assert tuple(out[100, 5]) == (0, 0, 128) and tuple(out[100, 315]) == (128, 0, 0)   # all of it seen
    # a square picture the size of the heat map: the same as the default overlay
    square = Image.new("RGB", (32, 32), (90, 90, 90))
    np.testing.assert_array_equal(np.asarray(overlay(square, heat, keep_shape=True)),
                                  np.asarray(overlay(square, heat)))


def test_gradcam_explains_its_own_picture_while_another_thread_predicts():
    """The app shares one loaded model between threads: the live camera's predictor answers frame after
    frame while the Try page asks for a heat map. Grad-CAM's hooks recorded whatever passed the layer,
    so a frame that went through while the heat map's own picture was on its way was explained instead.
    (Convolutional networks are explained through a wrapper only the heat map runs, so only a ViT's
    heat map could be hit.) Played deterministically: the heat map's forward pass pauses at the first
    layer (up to 2 s) until a camera frame has been answered; the model's lock makes the frame wait
    for the heat map instead."""
    import threading

    loaded = _loaded("test_vit")   # a ViT: the heat map's hooks sit on the shared model's last block
    photo, other = _photo(), _photo(120, 220).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    reference = gradcam(loaded, photo)
    in_heat_map, frame_answered, answered = threading.Event(), threading.Event(), []

    def pause_in_heat_map(module, inputs):
        if threading.current_thread() is threading.main_thread() and torch.is_grad_enabled():
            in_heat_map.set()
            frame_answered.wait(timeout=2)

    def camera():
        in_heat_map.wait(timeout=30)
        answered.append(loaded.answers([other])[0]["label"])
        frame_answered.set()

    handle = loaded.model.patch_embed.register_forward_pre_hook(pause_in_heat_map)
    worker = threading.Thread(target=camera)
    worker.start()
    try:
        heat = gradcam(loaded, photo)
    finally:
        worker.join(timeout=60)
        handle.remove()
    assert answered, "the camera's frame was never answered"
    np.testing.assert_allclose(heat, reference, atol=1e-5)
