#!/usr/bin/env python3
"""Classify images with a model exported from Transfer Lab.

Usage (from anywhere; the model files are read from this script's folder):

    python predict.py photo.jpg other.png some_folder/ [--top-k 3] [--device cpu]

Prints one JSON object per image on its own line:
    {"image": "photo.jpg", "label": "cat", "probability": 0.97, "top": [{"label": ..., "probability": ...}, ...],
     "none_of_these": false, "unsure": false}

"none_of_these": the picture looks unlike every picture the model learned from (its features are
farther from theirs than those of 95% of the held-out pictures the model was calibrated on; see
novelty.json); null when the bundle has no calibration. "unsure": the two most probable categories
are close (after calibration, top1 - top2 < unsure_margin). The same answers as Transfer Lab's.

Needs only torch, timm and Pillow (``pip install torch timm pillow``; timm brings torchvision and
safetensors with it). The image is prepared exactly as during training (see preprocessing.json):
resize the short side, centre-crop the square, scale to [0, 1], normalise with mean and std.
It builds only Transfer Lab's own networks, bare, and fills them with model.safetensors: it never
downloads anything, and refuses files that were changed (another model, impossible settings).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HERE = Path(__file__).resolve().parent

# The networks Transfer Lab trains (its catalogue), the only ones this script builds: always bare
# (pretrained=False) and filled with this folder's model.safetensors. Any other name is refused, so a
# changed preprocessing.json cannot make it fetch anything ("hf-hub:..." would download files).
CATALOGUE = ("tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k",
             "mobilenetv3_small_100.lamb_in1k", "mobilenetv3_large_100.ra_in1k", "efficientnet_b0.ra_in1k",
             "convnext_atto.d2_in1k", "regnety_008.pycls_in1k", "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
             "resnet18.a1_in1k", "convnext_nano.in12k_ft_in1k", "resnet50.a1_in1k")
# What Transfer Lab trains with: bigger pictures cost minutes and gigabytes each; a std of 0 divides by zero.
IMAGE_SIZE_RANGE = (32, 1024)
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (0.01, 1.0)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
CROP_MODES = ("center", "squash", "border")
CROP_PCT_RANGE = (0.5, 1.0)


class BundleError(ValueError):
    """A file of the bundle is missing, damaged or was changed; the message says which and what."""


def check_model_name(name) -> str:
    """``name`` when it is one of Transfer Lab's networks (or one of timm's built-in test networks)."""
    import timm

    known = set(CATALOGUE) | {tag.split(".", 1)[0] for tag in CATALOGUE}
    if isinstance(name, str) and (name in known or (name.startswith("test_") and ":" not in name
                                                    and name.split(".", 1)[0] in timm.list_models("test_*"))):
        return name
    raise BundleError(f"preprocessing.json names the model {name!r}, which is not one of Transfer Lab's models; "
                      "this script only loads those, from model.safetensors.")


def check_labels(labels) -> list:
    """The category names: a list of at least two different, non-empty texts."""
    if (not isinstance(labels, list) or len(labels) < 2 or len(set(map(str, labels))) != len(labels)
            or not all(isinstance(x, str) and x.strip() for x in labels)):
        raise BundleError("labels.json should list at least two different category names (texts).")
    return labels


def _numbers(value, count: int, lo: float, hi: float) -> bool:
    values = value if isinstance(value, list) else [value]
    return len(values) == count and all(isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
                                        for v in values)


def check_preprocessing(prep) -> dict:
    """The picture settings, within what Transfer Lab trains with."""
    if not isinstance(prep, dict):
        raise BundleError("preprocessing.json should hold the picture settings.")
    size = prep.get("size")
    checks = (("size", isinstance(size, int) and not isinstance(size, bool) and _numbers(size, 1, *IMAGE_SIZE_RANGE)),
              ("mean", _numbers(prep.get("mean"), 3, *MEAN_RANGE)), ("std", _numbers(prep.get("std"), 3, *STD_RANGE)),
              ("interpolation", prep.get("interpolation", "bicubic") in INTERPOLATIONS),
              ("crop_pct", _numbers(prep.get("crop_pct", 1.0), 1, *CROP_PCT_RANGE)),
              ("crop_mode", prep.get("crop_mode", "center") in CROP_MODES))
    bad = [key for key, ok in checks if not ok]
    if bad:
        raise BundleError(f"preprocessing.json has a missing or impossible {bad[0]!r} ({prep.get(bad[0])!r}).")
    return prep


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BundleError(f"{path.name} is damaged ({err}).") from None


def load_bundle(folder: Path, device: str):
    """The model, its class names and its preprocessing from the bundle folder, each checked first."""
    import timm
    from safetensors.torch import load_file

    labels = check_labels(_read_json(folder / "labels.json"))
    prep = check_preprocessing(_read_json(folder / "preprocessing.json"))
    name = prep.get("model")
    if not name:  # older bundles: the name is in the run configuration
        config = _read_json(folder / "config.json")
        name = (config.get("model") or {}).get("name") if isinstance(config, dict) else None
    # standalone script copied into bundles (cannot import tl_core), so it calls timm itself: never a download
    model = timm.create_model(check_model_name(name), pretrained=False, num_classes=len(labels))
    try:
        weights = load_file(str(folder / "model.safetensors"))
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors has its own error kinds for broken files
        raise BundleError(f"model.safetensors is damaged ({str(err)[:120]}).") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError:
        raise BundleError(f"model.safetensors does not fit model {name} with the {len(labels)} categories of "
                          "labels.json: the files do not belong together.") from None
    model.to(device).eval()
    return model, labels, prep, weights


def weights_fingerprint(state_dict) -> str:
    """sha256 over the weights' names, types, shapes and bytes (as Transfer Lab computes it): the
    calibration in novelty.json is only used with the weights it was made for."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state_dict[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Novelty:
    """The rule for "none of these" and "unsure" (novelty.json + novelty.safetensors)."""

    def __init__(self, rule: dict, references):
        self.rule, self.references = rule, references

    def none_of_these(self, features):
        import torch.nn.functional as F

        sims = F.normalize(features.float(), dim=1) @ self.references.to(features.device).T
        k = min(int(self.rule["neighbours"]), self.references.shape[0])
        return sims.topk(k, dim=1).values.mean(dim=1) < self.rule["threshold"]


def unsure(logits, temperature: float, margin: float):
    import torch

    top2 = torch.softmax(logits.float() / temperature, dim=1).topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) < margin


def _rule_number(rule: dict, key: str, lo: float, hi: float) -> float:
    value = rule.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BundleError(f"novelty.json has a missing or impossible {key!r} ({value!r}).")
    return float(value)


def load_novelty(folder: Path, state_dict, num_classes: int, feature_dim: int):
    """(Novelty or None, None or why it is not used). A bundle without novelty.json has no calibration;
    a damaged or mismatched one is not used (the answers come without "none of these")."""
    import torch
    from safetensors import safe_open

    if not (folder / "novelty.json").is_file():
        return None, None
    try:
        rule = _read_json(folder / "novelty.json")
        if not isinstance(rule, dict) or rule.get("format") != 1:
            raise BundleError("novelty.json is not a calibration this script knows.")
        if rule.get("weights_fingerprint") != weights_fingerprint(state_dict):
            raise BundleError("novelty.json was made for other weights than model.safetensors.")
        checked = {"threshold": _rule_number(rule, "threshold", -1.0, 1.0),
                   "temperature": _rule_number(rule, "temperature", 0.05, 20.0),
                   "unsure_margin": _rule_number(rule, "unsure_margin", 0.0, 1.0),
                   "neighbours": int(_rule_number(rule, "neighbours", 1, 1024))}
        try:
            with safe_open(str(folder / "novelty.safetensors"), framework="pt") as fh:
                ident = (fh.metadata() or {}).get("id")
                refs, labels = fh.get_tensor("references"), fh.get_tensor("reference_labels")
        except Exception as err:  # noqa: BLE001 - safetensors has its own error kinds
            raise BundleError(f"novelty.safetensors is missing or damaged ({type(err).__name__}).") from None
        ok = (ident == rule.get("id") and refs.dim() == 2 and refs.dtype == torch.float32
              and feature_dim in (None, refs.shape[1]) and len(refs) >= checked["neighbours"]
              and labels.shape == (len(refs),) and bool(torch.isfinite(refs).all())
              and bool(((refs.norm(dim=1) - 1).abs() < 1e-3).all())
              and bool(((labels >= 0) & (labels < num_classes)).all()))
        if not ok:
            raise BundleError("novelty.safetensors does not belong with novelty.json and this model.")
    except BundleError as err:
        return None, str(err)
    return Novelty(checked, refs), None


def build_transform(prep: dict):
    """Resize + centre crop, built by timm from the same settings as in training."""
    from timm.data import create_transform
    from torchvision import transforms as T

    size = int(prep["size"])
    full = create_transform(input_size=(3, size, size), interpolation=prep.get("interpolation", "bicubic"),
                            crop_pct=float(prep.get("crop_pct", 1.0)), crop_mode=prep.get("crop_mode", "center"),
                            mean=tuple(prep["mean"]), std=tuple(prep["std"]))
    return T.Compose([t for t in full.transforms if isinstance(t, (T.Resize, T.CenterCrop))])


def to_input(images, prep: dict, transform, device: str):
    """PIL images -> normalised float batch (N, 3, size, size), the same arithmetic as training."""
    import numpy as np
    import torch

    arrays = [torch.from_numpy(np.asarray(transform(im), dtype=np.uint8).copy()).permute(2, 0, 1) for im in images]
    batch = torch.stack(arrays).to(device)
    std = torch.tensor(prep["std"], device=device)
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
    shift = (torch.tensor(prep["mean"], device=device) / std).view(1, 3, 1, 1)
    return batch.to(torch.float32) * scale - shift


MAX_SIDE = 2048  # photos are shrunk to this long side first, as Transfer Lab did while training
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}


def _to_rgb(im):
    """Any Pillow mode -> 8-bit RGB; transparent areas become white (as in every image viewer)."""
    import numpy as np
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F", "I;32", "F;32"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16") and np.asarray(im).dtype.kind == "u":
            lo, hi = 0.0, 65535.0
        else:
            finite = a[np.isfinite(a)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if lo >= 0 and hi <= 1 and np.asarray(im).dtype.kind == "f":
                lo, hi = 0.0, 1.0
            elif lo >= 0 and hi <= 255 and np.asarray(im).dtype.kind != "f":
                lo, hi = 0.0, 255.0
            elif lo >= 0 and hi <= 65535:
                lo, hi = 0.0, 65535.0
            a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo
        gray = np.clip(np.rint(a * (255.0 / max(hi - lo, 1e-12))), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB", "1") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.copy() if mode == "RGB" else im.convert("RGB")


def open_image(path: Path):
    """Decode a photo exactly as Transfer Lab does: upright (EXIF), RGB, long side at most 2048."""
    from PIL import Image

    with Image.open(path) as im:
        if im.format in ("JPEG", "MPO") and max(im.size) > MAX_SIDE:
            im.draft(None, (MAX_SIDE, MAX_SIDE))  # libjpeg decodes big photos at a reduced scale
        im.load()
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - broken EXIF: keep the picture as stored
            orientation = 1
        out = _to_rgb(im)
    if max(out.size) > MAX_SIDE:
        out.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC, reducing_gap=2.0)
    if orientation in _TRANSPOSE:
        out = out.transpose(getattr(Image.Transpose, _TRANSPOSE[orientation]))
    return out


def expand(paths: list[str]) -> list[Path]:
    """Files as given; folders become every image inside them (sorted, sub-folders included)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        else:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with this exported model.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to list per image (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bundle", default=str(HERE), help="folder with the model files (default: this script's)")
    args = parser.parse_args(argv)

    import torch

    try:
        model, labels, prep, weights = load_bundle(Path(args.bundle), args.device)
    except FileNotFoundError as err:
        print(f"Model files missing next to predict.py: {err.filename}", file=sys.stderr)
        return 2
    except BundleError as err:
        print(f"This model cannot be used: {err} Export it again from Transfer Lab.", file=sys.stderr)
        return 2
    feature_dim = getattr(model.get_classifier(), "in_features", None)
    novelty, why_not = load_novelty(Path(args.bundle), weights, len(labels), feature_dim)
    del weights
    if why_not:
        print(f"{why_not} The answers come without \"none of these\" (null). Export the model again from "
              "Transfer Lab to have it.", file=sys.stderr)
    temperature = novelty.rule["temperature"] if novelty else 1.0
    margin = novelty.rule["unsure_margin"] if novelty else 0.2
    transform = build_transform(prep)
    k = max(1, min(args.top_k, len(labels)))
    failed = 0
    files = expand(args.images)
    if not files:
        print("No images found.", file=sys.stderr)
        return 2
    for start in range(0, len(files), args.batch_size):
        chunk, images = [], []
        for path in files[start:start + args.batch_size]:
            try:
                images.append(open_image(path))
                chunk.append(path)
            except Exception as err:  # noqa: BLE001 - report and go on with the other images
                failed += 1
                print(f"{path}: cannot read this image ({type(err).__name__}: {err})", file=sys.stderr)
        if not images:
            continue
        with torch.inference_mode():
            # the pooled features before the classifier, then the classifier: exactly model(x), plus the features
            features = model.forward_head(model.forward_features(to_input(images, prep, transform, args.device)),
                                          pre_logits=True)
            logits = model.get_classifier()(features)
            probs = torch.softmax(logits.float(), dim=1).cpu()
            far = novelty.none_of_these(features).cpu().tolist() if novelty else [None] * len(images)
            close = unsure(logits, temperature, margin).cpu().tolist()
        if not bool(torch.isfinite(probs).all()):
            print("The model gave no usable answer (not a number): model.safetensors is damaged. Export it again "
                  "from Transfer Lab.", file=sys.stderr)
            return 2
        for path, row, none, hesitates in zip(chunk, probs, far, close):
            vals, idx = row.topk(k)
            top = [{"label": labels[i], "probability": float(v)} for v, i in zip(vals.tolist(), idx.tolist())]
            print(json.dumps({"image": str(path), "label": top[0]["label"], "probability": top[0]["probability"],
                              "top": top, "none_of_these": none, "unsure": bool(hesitates)}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
