"""Take the model home: a self-contained bundle, ONNX, TorchScript, and a model card.

* **bundle** (also called "safetensors"): ``model.safetensors`` + ``labels.json`` +
  ``preprocessing.json`` + ``predict.py`` (needs only torch, timm, Pillow) + ``MODEL_CARD.md`` +
  ``config.json``. The config copy makes the bundle folder a valid run folder, so
  ``tl predict BUNDLE IMAGE`` and :func:`tl_core.results.inference.load_run_model` load it as they load a run.
* **ONNX** (opset :data:`ONNX_OPSET`) and **TorchScript**: the network alone (input: the
  normalised float batch ``(N, 3, S, S)`` with a free batch size; outputs: ``logits`` (apply
  softmax for probabilities), ``features`` (pooled, before the classifier) and, for a calibrated
  run, ``familiarity`` (see :mod:`tl_core.results.novelty`)); class names, preprocessing and the
  "none of these" / "unsure" numbers are stored inside the file as metadata.

"None of these" and "unsure" travel too: a bundle carries the run's calibration
(``novelty.json`` + ``novelty.safetensors``, prepared from the run's pictures first for an older
run) and its predict.py gives the same two answers as the app; the model card states the rule.

Every export starts from a checked run folder (:func:`tl_core.runs.validate.check_run`: a damaged
or tampered file is refused with a plain message before anything is written). A bundle is checked
after writing it: its own predict.py loads it and classifies a picture, and the answer must be the
run's (:func:`verify_bundle`); until then it sits in a temporary folder next to the target, so a
failed export leaves nothing behind.

An export that silently computes something else is worse than no export, so ONNX and TorchScript
are checked as part of exporting: the exported file is run (onnxruntime / ``torch.jit.load``) on
real images -- up to a few of the run's validation photos plus generated pictures -- with a batch
size different from the one used for export, and its outputs must equal PyTorch's within
:data:`PARITY_TOLERANCE`, otherwise the export fails with an :class:`ExportError`:

* probabilities (softmax of the logits, what users read) within 1e-4 absolute, and
* logits within 1e-4 absolute where ``|logit| <= 1``, and within 1e-4 *relative* beyond.

Why relative for large logits: float32 carries about 7 significant digits and a different kernel
order (onnxruntime folds BatchNorm into the convolutions, for instance) changes the last ones. A
randomly initialised ``tf_efficientnet_lite2`` has logits around +-24 and shows absolute logit
differences of 6-9e-5 (1e-5 relative) against onnxruntime while its probabilities agree to 1e-8;
a fixed absolute bound on unbounded numbers would refuse correct exports of confident models.
The report gives all three numbers (``max_abs_diff``, ``max_scaled_diff``, ``max_prob_diff``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from PIL import Image

from tl_core.config import RunConfig
from tl_core.errors import ExportError, RunError, TransferLabError
from tl_core.files import atomic_path, short_path, write_json_atomic
from tl_core.runs import CONFIG_FILE, LABELS_FILE, PREPROCESSING_FILE, WEIGHTS_FILE, RunFolder
from tl_core.runs.validate import check_run

EXPORT_FORMATS = ("bundle", "safetensors", "onnx", "torchscript")
# Opset 17 runs on every onnxruntime since 1.13 and on most mobile/edge runtimes. The legacy
# TorchScript-based exporter produces it directly; torch's new dynamo exporter starts at opset 18
# and cannot convert these graphs down to 17, so it is only the fallback (and then says 18).
ONNX_OPSET = 17
ONNX_FALLBACK_OPSET = 18
PARITY_TOLERANCE = 1e-4
PREDICT_SCRIPT = "predict.py"
MODEL_CARD_FILE = "MODEL_CARD.md"
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
MAX_CHECK_IMAGES = 4
OUTPUT_WORDS = {"logits": "apply softmax for probabilities",
                "features": "the pooled features the classifier reads",
                "familiarity": "mean cosine similarity to the nearest training pictures; none of these when below "
                               "the threshold"}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _open(run_dir: str | Path) -> RunFolder:
    """The run to export, refused with a plain message before any work: no weights yet, or a
    damaged or tampered small file (:func:`tl_core.runs.validate.check_run`; the weights themselves
    are checked when the model is loaded)."""
    run = RunFolder.open(run_dir)
    if not run.has_weights():
        raise RunError(f"Run {run.run_id} has no saved weights yet (it stopped before the first epoch ended), "
                       "so there is nothing to export.")
    check_run(run.path, weights=False)
    return run


def _generated_images(size: int) -> list[Image.Image]:
    """Deterministic pictures with real structure (gradients, edges, texture), not only noise."""
    s = max(32, size)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / (s - 1)
    gradient = np.stack([xx, yy, 1.0 - xx], axis=-1)
    checker = ((np.floor(xx * 8) + np.floor(yy * 8)) % 2)[..., None] * np.array([0.9, 0.6, 0.2], np.float32)
    rings = (0.5 + 0.5 * np.sin(30 * np.hypot(xx - 0.4, yy - 0.6)))[..., None] * np.array([0.3, 0.8, 0.5], np.float32)
    noise = np.random.default_rng(0).random((s, s * 3 // 2, 3), dtype=np.float32)  # not square: exercises the crop
    return [Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8), "RGB")
            for a in (gradient, checker, rings, noise)]


def check_images(run_dir: str | Path, size: int, limit: int = MAX_CHECK_IMAGES) -> list[Image.Image]:
    """Images for the parity check: a few of the run's validation photos (when they are still on
    disk) plus generated pictures, so the check never depends on the user's files being there."""
    from tl_core.data.images import load_image
    from tl_core.results.evaluate import record_parts

    run = RunFolder(Path(run_dir))
    images: list[Image.Image] = []
    root = None
    try:
        root = Path(run.config().data.root)
        records = run.summary().get("val_records")
    except TransferLabError:
        records = None
    for rec in (records if isinstance(records, list) else [])[: limit * 3]:
        if len(images) >= limit:
            break
        try:
            path = Path(record_parts(rec)[0])
            if not path.is_absolute() and root is not None and not path.exists():
                path = root / path
            images.append(load_image(str(path)))
        except Exception:  # noqa: BLE001 - a moved or broken photo just is not used for the check
            continue
    return images + _generated_images(size)


def parity(out: np.ndarray, ref: np.ndarray) -> dict:
    """How far exported logits ``out`` are from PyTorch's ``ref`` (see the module docstring)."""
    out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(out64 - ref64)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    result = {"max_abs_diff": float(diff.max()),
              "max_scaled_diff": float((diff / np.maximum(1.0, np.abs(ref64))).max()),
              "max_prob_diff": float(np.abs(softmax(out64) - softmax(ref64)).max())}
    result["ok"] = bool(result["max_scaled_diff"] <= PARITY_TOLERANCE and result["max_prob_diff"] <= PARITY_TOLERANCE)
    return result


def compare_outputs(outs: list[np.ndarray], refs: list[np.ndarray]) -> dict:
    """:func:`parity` of the logits, plus the same bound on the features (relative beyond 1) and
    on familiarity (absolute: a cosine); not ok when the file gives other outputs altogether."""
    if outs[0].shape != refs[0].shape:
        raise ExportError(f"The exported model gives outputs of shape {outs[0].shape}, PyTorch {refs[0].shape}.")
    result = parity(outs[0], refs[0])
    if len(outs) != len(refs) or any(o.shape != r.shape for o, r in zip(outs, refs)):
        return {**result, "ok": False, "outputs": len(outs)}
    extra = [np.abs(o.astype(np.float64) - r.astype(np.float64)) / np.maximum(1.0, np.abs(r.astype(np.float64)))
             for o, r in zip(outs[1:], refs[1:])]
    result["max_output_diff"] = float(max((e.max() for e in extra if e.size), default=0.0))
    result["ok"] = bool(result["ok"] and result["max_output_diff"] <= PARITY_TOLERANCE)
    return result


def exported_network(loaded: Any) -> "torch.nn.Module":
    """The network as ONNX and TorchScript files hold it: logits, features and (calibrated runs)
    familiarity (:class:`tl_core.results.novelty.ExportedNetwork`)."""
    from tl_core.results.novelty import ExportedNetwork

    return ExportedNetwork(loaded.model, loaded.novelty()).eval()


def _check_batch(loaded: Any, images: list[Image.Image]) -> tuple[torch.Tensor, list[np.ndarray]]:
    x = loaded.preprocessing.to_input(images, "cpu")
    with torch.inference_mode():
        ref = [t.float().numpy() for t in exported_network(loaded)(x)]
    return x, ref


def _metadata(loaded: Any) -> dict[str, str]:
    prep = loaded.preprocessing.to_dict()
    novelty = loaded.novelty()
    names = ["logits", "features"] + (["familiarity"] if novelty is not None else [])
    meta = {"labels": json.dumps(list(loaded.classes)), "preprocessing": json.dumps(prep),
            "model": loaded.model_name, "output": "logits (apply softmax for probabilities)",
            "outputs": "; ".join(f"{n}: {OUTPUT_WORDS[n]}" for n in names),
            "input": f"float32 (N, 3, {prep['size']}, {prep['size']}), RGB, resized + centre-cropped, "
                     "divided by 255, then (x - mean) / std", "producer": "Transfer Lab"}
    if novelty is not None:
        meta["novelty"] = json.dumps(novelty.rule())
    return meta


def _load(run: RunFolder):
    from tl_core.results.inference import load_run_model

    return load_run_model(run.path, device="cpu")


# ----------------------------------------------------------------------------------------------
# Bundle
# ----------------------------------------------------------------------------------------------
def bundle_preprocessing(run_dir: str | Path) -> dict:
    """The run's preprocessing (checked) plus what a stand-alone user needs: model name, class count, opset."""
    checked = check_run(run_dir, weights=False)
    prep = dict(checked.preprocessing)
    prep.update({"model": checked.model_name, "num_classes": len(checked.classes), "onnx_opset": ONNX_OPSET,
                 "crop": f"resize the short side, then centre-crop {prep.get('size')}x{prep.get('size')} "
                         f"(crop_pct {prep.get('crop_pct', 1.0)})",
                 "input_scale": "pixel / 255, then (x - mean) / std, RGB channel order, NCHW"})
    return prep


def _last_part(path: str | None) -> str | None:
    if not path:
        return path
    return PurePath(str(path).replace("\\", "/")).name or str(path)


def shareable_config(run_dir: str | Path) -> RunConfig:
    """The run's settings as they travel in a bundle: local folder and file paths cut to their
    last part (``/home/ana/Pictures/birds`` becomes ``birds``).

    Why: a bundle is made to be handed to other people, and a full path gives away the user's
    name and folder layout. The bundle needs none of them (its weights are ``model.safetensors``);
    the folder name alone still says what the model was trained on.
    """
    cfg = RunFolder(Path(run_dir)).config()
    cfg.data.root = _last_part(cfg.data.root) or "data"
    cfg.data.test_root = _last_part(cfg.data.test_root)
    if cfg.model.weights not in ("auto", "offline", "none"):
        cfg.model.weights = _last_part(cfg.model.weights) or cfg.model.weights
    cfg.train.cache_dir = None
    return cfg


def export_bundle(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the bundle folder and return its path.

    The folder is both a stand-alone package (``python predict.py IMAGE``) and a run folder that
    :func:`tl_core.results.inference.load_run_model` (and so ``tl predict``) can open. Like the ONNX and
    TorchScript files it is checked before it counts as exported: written next to ``out_dir`` first,
    loaded the way its own predict.py loads it, asked about a picture, and compared with the run's
    model (:func:`verify_bundle`). Only a bundle that answers as the run does is moved into
    ``out_dir``; otherwise nothing is left behind and :class:`ExportError` says why.
    """
    run = _open(run_dir)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; choose a folder name (or a name ending in .zip) for the bundle.")
    if out.exists() and out.resolve() == run.path.resolve():
        raise ExportError("Choose another folder for the bundle: it cannot be written into the run folder itself.")
    loaded = _load(run)  # checks the whole run folder, weights included, before anything is written
    loaded.novelty()     # an older run's "none of these" is prepared from its pictures now, before writing
    made = _missing_parents(out)
    staging: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        _write_bundle(run, staging, loaded)
        verify_bundle(staging, loaded)
        _move_files(staging, out)
    except OSError as err:
        _remove_made(made)
        raise ExportError(f"Could not write the bundle to {out}: {err.strerror or err}.") from None
    except BaseException:
        _remove_made(made)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_bundle(run: RunFolder, folder: Path, loaded: Any) -> None:
    """The bundle's files, from the (checked) run folder and its loaded model into the empty ``folder``."""
    from tl_core.results.novelty import save_novelty, weights_fingerprint
    from tl_core.results.templates import template_text

    shutil.copyfile(run.weights_path, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(shareable_config(run.path).to_json() + "\n", encoding="utf-8")
    write_json_atomic(folder / LABELS_FILE, list(run.labels()))
    write_json_atomic(folder / PREPROCESSING_FILE, bundle_preprocessing(run.path))
    (folder / PREDICT_SCRIPT).write_text(template_text("predict.py"), encoding="utf-8")
    novelty = loaded.novelty()
    if novelty is not None:
        save_novelty(folder, novelty, weights_fingerprint(loaded.model.state_dict()))
    (folder / MODEL_CARD_FILE).write_text(model_card(run.path), encoding="utf-8")  # describes the saved calibration


def verify_bundle(folder: str | Path, loaded: Any) -> dict:
    """Prove that the bundle in ``folder`` answers as the run's model ``loaded`` does: its own
    predict.py (``main``, the code its users run) classifies a picture, and every category's
    probability must equal ``loaded``'s within :data:`PARITY_TOLERANCE`. Returns the picture's
    line as predict.py printed it; :class:`ExportError` when the bundle fails to load or answers
    differently, with predict.py's own words."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="tl-bundle-check-") as tmp:
        picture = Path(tmp) / "check.png"
        _generated_images(loaded.preprocessing.size)[-1].save(picture)  # not square: exercises the crop
        line, said = _run_predict_script(folder, picture, len(loaded.classes))
        from tl_core.data.images import load_image

        answer = loaded.answer(load_image(str(picture)), k=len(loaded.classes))
        expected = [next(t["probability"] for t in answer["top"] if t["label"] == c) for c in loaded.classes]
    if line is None:
        raise ExportError(f"The bundle could not be checked: its predict.py did not classify a test picture "
                          f"({said or 'no answer'}). Nothing was saved.")
    got = {t.get("label"): t.get("probability") for t in line.get("top") or []}
    want = dict(zip(loaded.classes, expected))
    if set(got) != set(want) or any(not isinstance(got[c], float) or not abs(got[c] - want[c]) <= PARITY_TOLERANCE
                                   for c in want):  # "not <=": a NaN never passes
        raise ExportError("The bundle does not reproduce the model: its predict.py gives other answers than "
                          "Transfer Lab for the same picture. Nothing was saved.")
    if any(line.get(key) != answer[key] for key in ("none_of_these", "unsure")):
        raise ExportError("The bundle does not reproduce the model: its predict.py says “none of these” or "
                          "“unsure” where Transfer Lab does not (or the other way round). Nothing was saved.")
    return line


def _run_predict_script(folder: Path, picture: Path, k: int) -> tuple[dict | None, str]:
    """Run the bundle's predict.py in this process on ``picture`` (all ``k`` categories): its
    JSON line, or None and what it said on stderr (or the error it raised)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tl_bundle_check", folder / PREDICT_SCRIPT)
    if spec is None or spec.loader is None:
        return None, f"{PREDICT_SCRIPT} is missing"
    out, err = io.StringIO(), io.StringIO()
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = module.main([str(picture), "--bundle", str(folder), "--top-k", str(k)])
    except Exception as exc:  # noqa: BLE001 - whatever breaks in the bundle's script is the bundle's failure
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"
    lines = [text for text in out.getvalue().splitlines() if text.strip()]
    if code != 0 or len(lines) != 1:
        return None, err.getvalue().strip()[:300]
    try:
        return json.loads(lines[0]), ""
    except json.JSONDecodeError:
        return None, f"it printed {lines[0][:100]!r}"


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet (nearest first): what a failed export removes again."""
    out = []
    for parent in path.parents:
        if parent.exists():
            break
        out.append(parent)
    return out


def _remove_made(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _move_files(staging: Path, out: Path) -> None:
    """The verified bundle into ``out``: the whole folder when ``out`` is new, else file by file
    (an existing folder keeps its other files, as before)."""
    if not out.exists():
        staging.rename(out)
        return
    for f in staging.iterdir():
        f.replace(out / f.name)


def _zip_folder(folder: Path, zip_path: Path, top: str) -> Path:
    try:
        with atomic_path(zip_path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(folder.iterdir()):
                    if f.is_file():
                        zf.write(f, f"{top}/{f.name}")
    except OSError as err:
        raise ExportError(f"Could not write the bundle to {zip_path}: {err.strerror or err}.") from None
    return zip_path


def export_bundle_zip(run_dir: str | Path, zip_path: str | Path) -> Path:
    """The bundle as a ``.zip`` whose files sit in one folder named after the zip."""
    zip_path = Path(zip_path).expanduser()
    with tempfile.TemporaryDirectory(prefix="tl-bundle-") as tmp:
        folder = export_bundle(run_dir, Path(tmp) / "bundle")
        return _zip_folder(folder, zip_path, zip_path.stem or "model")


def bundle_zip_bytes(run_dir: str | Path) -> bytes:
    """The zipped bundle in memory, for a download button."""
    run = _open(run_dir)
    with tempfile.TemporaryDirectory(prefix="tl-bundle-") as tmp:
        path = export_bundle_zip(run.path, Path(tmp) / f"{run.run_id}-model.zip")
        return path.read_bytes()


# ----------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------
def _torch_onnx_export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> int:
    """Export with the legacy exporter at opset 17; fall back to the dynamo exporter (opset 18).
    The outputs are named by the network (:class:`~tl_core.results.novelty.ExportedNetwork`), the
    first one always ``logits``."""
    names = model.output_names() if hasattr(model, "output_names") else [ONNX_OUTPUT]
    legacy_error: Exception | None = None
    # deprecation/tracer warnings and the new exporter's progress prints are not for the user
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path), input_names=[ONNX_INPUT], output_names=names,
                              opset_version=ONNX_OPSET,
                              dynamic_axes={ONNX_INPUT: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                              do_constant_folding=True, dynamo=False)
            return ONNX_OPSET
        except Exception as err:  # noqa: BLE001 - try the other exporter before giving up
            legacy_error = err
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(model, (example,), str(path), input_names=[ONNX_INPUT], output_names=names,
                              opset_version=ONNX_FALLBACK_OPSET, dynamic_shapes=({0: batch},), dynamo=True,
                              external_data=False)
            return ONNX_FALLBACK_OPSET
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"This model could not be converted to ONNX ({type(legacy_error).__name__}: "
                              f"{str(legacy_error)[:200]}; then {type(err).__name__}: {str(err)[:200]}). "
                              "The bundle and TorchScript exports still work.") from None


def _reference_batch(run_dir: str | Path, images: list[Image.Image] | None, loaded: Any) -> tuple:
    """The check images as an input batch and PyTorch's own outputs on them, for parity checks."""
    run = RunFolder.open(run_dir)
    loaded = loaded or _load(run)
    images = images or check_images(run.path, loaded.preprocessing.size)
    return _check_batch(loaded, images)


def check_onnx(path: str | Path, run_dir: str | Path, images: list[Image.Image] | None = None,
               loaded: Any = None) -> dict:
    """How far onnxruntime's outputs are from PyTorch's on real images: :func:`parity`'s dict."""
    import onnxruntime as ort

    x, ref = _reference_batch(run_dir, images, loaded)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    return compare_outputs([np.asarray(o) for o in outs], ref)


@dataclasses.dataclass
class _ExportJob:
    """What both network exports start from: the run, its model on the CPU, where the file goes,
    the parity-check images and a 2-image example batch for tracing."""
    run: RunFolder
    loaded: Any
    out: Path
    images: list[Image.Image]
    example: torch.Tensor


def _export_job(run_dir: str | Path, out_path: str | Path) -> _ExportJob:
    run = _open(run_dir)
    loaded = _load(run)
    images = check_images(run.path, loaded.preprocessing.size)
    return _ExportJob(run, loaded, Path(out_path).expanduser(), images,
                      loaded.preprocessing.to_input(images[:2], "cpu"))


@contextlib.contextmanager
def _written_only_if_verified(out: Path, failure: str):
    """Yield a temporary path next to ``out``; it becomes ``out`` only if the block finishes (the
    parity check passed). Anything unexpected becomes an :class:`ExportError` starting ``failure``."""
    try:
        with atomic_path(out) as tmp:
            yield tmp
    except BaseException as err:
        if isinstance(err, (KeyboardInterrupt, SystemExit, TransferLabError)):
            raise
        raise ExportError(failure.format(error=f"{type(err).__name__}: {str(err)[:200]}")) from None


def export_onnx(run_dir: str | Path, out_path: str | Path, report: dict | None = None) -> Path:
    """Write ``out_path`` (.onnx), verified with onnxruntime; ``report`` (if given) receives the
    opset, the number of check images and the largest difference found."""
    import onnx

    job = _export_job(run_dir, out_path)
    loaded, out, images = job.loaded, job.out, job.images
    with _written_only_if_verified(out, "The ONNX export failed ({error}). The bundle and TorchScript exports "
                                        "still work.") as tmp:
        opset = _torch_onnx_export(exported_network(loaded), job.example, tmp)
        proto = onnx.load(str(tmp))
        meta = {**_metadata(loaded), "opset": str(opset)}
        del proto.metadata_props[:]
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        proto.doc_string = f"{loaded.model_name} fine-tuned with Transfer Lab on: {', '.join(loaded.classes)}"
        onnx.save(proto, str(tmp))
        check = check_onnx(tmp, job.run.path, images, loaded)
        if not check["ok"]:
            raise ExportError(f"The ONNX file does not reproduce the model (logits differ by up to "
                              f"{check['max_abs_diff']:.1e}, probabilities by {check['max_prob_diff']:.1e}; allowed "
                              f"{PARITY_TOLERANCE:.0e}); it was not saved. Use the bundle or TorchScript instead.")
    if report is not None:
        report.update({"format": "onnx", "opset": opset, **check, "images": len(images), "path": str(out)})
    return out


def onnx_bytes(run_dir: str | Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="tl-onnx-") as tmp:
        return export_onnx(run_dir, Path(tmp) / "model.onnx").read_bytes()


# ----------------------------------------------------------------------------------------------
# TorchScript
# ----------------------------------------------------------------------------------------------
def check_torchscript(path: str | Path, run_dir: str | Path, images: list[Image.Image] | None = None,
                      loaded: Any = None) -> dict:
    """How far the TorchScript file's outputs are from PyTorch's: :func:`parity`'s dict."""
    x, ref = _reference_batch(run_dir, images, loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        out = scripted(x)
    outs = [t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]
    return compare_outputs(outs, ref)


def export_torchscript(run_dir: str | Path, out_path: str | Path, report: dict | None = None) -> Path:
    """Write ``out_path`` (.pt, ``torch.jit.trace``), verified like ONNX. Class names and
    preprocessing are stored as extra files (``torch.jit.load(..., _extra_files=...)``)."""
    job = _export_job(run_dir, out_path)
    loaded, out, images = job.loaded, job.out, job.images
    with _written_only_if_verified(out, "This model could not be converted to TorchScript ({error}). The bundle "
                                        "and ONNX exports still work.") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                traced = torch.jit.trace(exported_network(loaded), job.example, check_trace=False)
            extra = {"labels.json": json.dumps(list(loaded.classes)),
                     "preprocessing.json": json.dumps(loaded.preprocessing.to_dict()),
                     "model.json": json.dumps(_metadata(loaded))}
            if loaded.novelty() is not None:
                extra["novelty.json"] = json.dumps(loaded.novelty().rule())
            torch.jit.save(traced, str(tmp), _extra_files=extra)
        check = check_torchscript(tmp, job.run.path, images, loaded)
        if not check["ok"]:
            raise ExportError(f"The TorchScript file does not reproduce the model (logits differ by up to "
                              f"{check['max_abs_diff']:.1e}); "
                              "it was not saved. Use the bundle or ONNX instead.")
    if report is not None:
        report.update({"format": "torchscript", **check, "images": len(images), "path": str(out)})
    return out


def torchscript_bytes(run_dir: str | Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="tl-ts-") as tmp:
        return export_torchscript(run_dir, Path(tmp) / "model.pt").read_bytes()


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------
def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Export in one of :data:`EXPORT_FORMATS` to ``out`` and return the written path.

    bundle/safetensors: ``out`` ending in ``.zip`` writes a zip, anything else a folder.
    onnx/torchscript: ``out`` is the file; an existing folder gets ``model.onnx``/``model.pt`` inside.
    """
    fmt_key = str(fmt or "").strip().lower()
    if fmt_key not in EXPORT_FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}. Choose one of: {', '.join(EXPORT_FORMATS)}.")
    if not str(out or "").strip():
        raise ExportError("Choose where to save the export (--out PATH).")
    out = Path(out).expanduser()
    _open(run_dir)  # plain message for a missing run or missing weights, before any work
    check_destination(out)
    if fmt_key in ("bundle", "safetensors"):
        return export_bundle_zip(run_dir, out) if out.suffix.lower() == ".zip" else export_bundle(run_dir, out)
    default_name = {"onnx": "model.onnx", "torchscript": "model.pt"}[fmt_key]
    if out.is_dir():
        out = out / default_name
    return (export_onnx if fmt_key == "onnx" else export_torchscript)(run_dir, out)


def check_destination(out: str | Path) -> None:
    """Refuse a destination that cannot be written before any work is done (an ONNX export checks its
    file on real pictures first: failing only at the end blamed the format). The closest folder that
    exists must be a folder this user may write to."""
    target = os.path.abspath(os.path.expanduser(str(out)))
    parent = os.path.dirname(target)
    while parent and not os.path.lexists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"Cannot write the export to {short_path(target)}: {short_path(parent)} is not a folder "
                          "you can write to. Choose another place to save it.")


# ----------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------
def _pct(value: Any) -> str:
    try:
        return f"{100 * float(value):.1f}%"
    except (TypeError, ValueError):
        return "n/a"


def _count(n: Any) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return "?"
    return f"{n / 1e6:.2f} M" if n >= 1_000_000 else (f"{n / 1e3:.1f} k" if n >= 10_000 else str(n))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _novelty_lines(rule: dict | None, problem: str | None) -> list[str]:
    """The card's "none of these" section: what it means, how well it was calibrated, and the rule
    with its exact numbers, so a developer using ONNX or TorchScript gives the app's answers."""
    lines = ["## “None of these” and “unsure”", ""]
    if not rule:
        return lines + [f"Not calibrated for this export{': ' + _cell(problem) if problem else ''}. The model "
                        "always answers one of its categories.", ""]
    facts = rule.get("calibration") or {}
    seen = []
    if facts.get("validation_pictures"):
        seen.append(f"{facts['validation_pictures']} validation pictures")
    if facts.get("training_pictures_left_out"):
        seen.append(f"{facts['training_pictures_left_out']} training pictures, each compared with the others")
    rejected = facts.get("validation_rejected")
    lines += ["Besides its answer the model says **none of these** when a picture looks unlike every picture it "
              "learned from, and **unsure** when its two most probable categories are close.", "",
              f"- Calibrated on {' and '.join(seen) or 'the run’s pictures'} (in the "
              f"{facts.get('feature_space', 'model’s')} feature space): the line is drawn so that at most "
              f"{_pct(facts.get('reject_rate_target', 0.05))} of those real pictures fall beyond it"
              + (f"; {_pct(rejected)} of the validation pictures do." if rejected is not None else "."),
              "", "The rule, to give the same answers in your own program:", "",
              "1. `features`: the pooled features before the classifier (ONNX and TorchScript output `features`; "
              "in PyTorch `model.forward_head(model.forward_features(x), pre_logits=True)`).",
              f"2. `familiarity`: scale `features` to length 1 and take the mean of the {rule.get('neighbours')} "
              "largest dot products with the rows of `references` in `novelty.safetensors` (training pictures' "
              "features, length 1). The ONNX and TorchScript files compute it as their output `familiarity`.",
              f"3. **none of these** when `familiarity < {rule.get('threshold')!r}`.",
              f"4. **unsure** when, with `p = softmax(logits / {rule.get('temperature')!r})` sorted from the "
              f"largest, `p[0] - p[1] < {rule.get('unsure_margin')!r}` (the temperature corrects the model's over- "
              "or under-confidence, fitted on the validation pictures).", "",
              "The same numbers are in `novelty.json`, in the ONNX file's metadata (`novelty`) and in the "
              "TorchScript file's extra file `novelty.json`.", ""]
    return lines


def _limits(summary: dict, counts: dict, calibrated: bool = False) -> list[str]:
    """Plain-language known limits: the model card's most important section for a beginner."""
    out = []
    problems = summary.get("problems") or []
    by_kind: dict[str, list[dict]] = {}
    for p in problems if isinstance(problems, list) else []:
        if isinstance(p, dict):
            by_kind.setdefault(str(p.get("kind", "problem")), []).append(p)
    for kind, items in sorted(by_kind.items()):
        first = items[0]
        msg = first.get("message") or kind
        more = f" ({len(items)} cases)" if len(items) > 1 else ""
        fix = f" Fix: {first['fix']}" if first.get("fix") else ""
        out.append(f"**{kind.replace('_', ' ').capitalize()}**{more}: {_cell(msg)}{_cell(fix)}")
    ratio = summary.get("imbalance_ratio")
    try:
        if ratio is not None and float(ratio) >= 3 and "imbalance" not in by_kind:
            out.append(f"**Imbalance**: the largest class has {float(ratio):.1f} times more training images than "
                       "the smallest; the model may favour the large classes. Check per-class recall.")
    except (TypeError, ValueError):
        pass
    small = [c for c, n in counts.items() if isinstance(n, (int, float)) and n < 30]
    if small:
        out.append(f"**Few examples** for {', '.join(map(str, small))} (under 30 training images): results on "
                   "new photos may vary more than the validation score suggests.")
    if calibrated:
        out.append("The model only knows the classes above. It says “none of these” for pictures unlike those it "
                   "learned from, but something close to them (another animal for a cats-and-dogs model) can still "
                   "get one of the classes, and a few real pictures (about 5%) are called none of these too.")
    else:
        out.append("The model only knows the classes above: it always answers one of them, even for a photo "
                   "of something else entirely.")
    out.append("The validation score comes from photos like the training ones; photos taken elsewhere "
               "(other camera, light, background) can score lower.")
    return out


def _saved_rule(run: RunFolder) -> dict | None:
    """The run's calibration as its bundle carries it (checked against the run's weights), for the card."""
    from tl_core.results.novelty import read_novelty, weights_fingerprint

    try:
        novelty = read_novelty(run.path, weights_fingerprint(run.load_state_dict()), len(run.labels()))
    except (TransferLabError, OSError):
        return None
    return {**novelty.rule(), "calibration": novelty.facts} if novelty is not None else None


def model_card(run_dir: str | Path, *, novelty: Any = None, novelty_problem: str | None = None) -> str:
    """MODEL_CARD.md: data, model and freeze plan, training settings, metrics, "none of these" and
    known limits. ``novelty`` (a :class:`tl_core.results.novelty.Novelty`) is what the export carries;
    without it the run folder's novelty.json is described."""
    run = RunFolder.open(run_dir)
    rule = {**novelty.rule(), "calibration": novelty.facts} if novelty is not None else (
        None if novelty_problem else _saved_rule(run))
    cfg = run.config()
    try:
        summary = run.summary()
    except RunError:  # a damaged summary costs the card its facts, not the export
        summary = {}
    try:
        classes = run.labels()
    except RunError:
        classes = list(summary.get("classes") or [])
    try:
        prep = run.preprocessing()
    except RunError:
        prep = {}
    counts = summary.get("counts") or {}
    val_counts = summary.get("val_counts") or {}
    status = run.status()
    title = cfg.name or run.run_id
    lines = [f"# Model card: {title}", "",
             f"An image classifier that sorts photos into {len(classes)} categories. It was made with Transfer "
             f"Lab by fine-tuning the pretrained `{cfg.model.name}` network (timm) on a folder of labelled images.",
             ""]
    if status.get("state") not in (None, "finished") and not status.get("damaged"):
        lines += [f"> Training state when exported: **{status.get('state')}**. These are the best weights saved "
                  "so far.", ""]

    lines += ["## Data", "", "| Class | Training images | Validation images |", "|---|---:|---:|"]
    for c in classes:
        lines.append(f"| {_cell(c)} | {counts.get(c, '?')} | {val_counts.get(c, '?')} |")
    if counts:
        lines.append(f"| **Total** | {sum(v for v in counts.values() if isinstance(v, (int, float)))} | "
                     f"{sum(v for v in val_counts.values() if isinstance(v, (int, float))) if val_counts else '?'} |")
    from tl_core.data.dataset import recorded_split
    from tl_core.data.split import SPLIT_RANDOM

    split = recorded_split(summary, cfg)
    if split is None:
        lines += ["", "Split: not recorded (the run stopped before it read its data).", ""]
    else:
        seed = f" Split seed: {cfg.data.split_seed}." if split.kind == SPLIT_RANDOM else ""
        lines += ["", f"Split: {split.describe(detailed=True)}.{seed}", ""]

    freeze = summary.get("freeze") or {}
    lines += ["## Model", "",
              f"- Architecture: `{cfg.model.name}` from timm; pretrained weights: "
              f"{_cell(summary.get('weights') or cfg.model.weights)}.",
              f"- Input: {prep.get('size', '?')} x {prep.get('size', '?')} RGB pixels.",
              f"- Freeze preset: `{cfg.freeze.preset}`."]
    if freeze:
        lines.append(f"- Trained parameters: {_count(freeze.get('trainable_params'))} of "
                     f"{_count(freeze.get('total_params'))}.")
        groups = freeze.get("groups") or []
        if groups:
            lines += ["", "| Layer group | Parameters | Frozen |", "|---|---:|:---:|"]
            for g in groups:
                lines.append(f"| {_cell(g.get('label', g.get('name')))} | {_count(g.get('num_params'))} | "
                             f"{'yes' if g.get('frozen') else 'no (trained)'} |")
    lines.append("")

    train = summary.get("train") or dataclasses.asdict(cfg.train)
    if isinstance(train, dict) and "train" in train and isinstance(train["train"], dict):
        train = train["train"]  # a whole RunConfig dict was stored
    lr = train.get("lr") if isinstance(train, dict) else None
    if lr is None:
        lr = cfg.train.resolved_lr(cfg.freeze.preset)
    lines += ["## Training settings", ""]
    for key, label in (("epochs", "Epochs (maximum)"), ("batch_size", "Batch size"),
                       ("schedule", "Learning-rate schedule"),
                       ("weight_decay", "Weight decay"), ("warmup_epochs", "Warm-up epochs"),
                       ("label_smoothing", "Label smoothing"), ("augment", "Augmentation"),
                       ("balance", "Class balancing"), ("early_stopping_patience", "Early-stopping patience"),
                       ("seed", "Seed")):
        if isinstance(train, dict) and key in train:
            lines.append(f"- {label}: {train[key]}")
    lines += [f"- Learning rate: {lr}", ""]

    lines += ["## Results", ""]
    if summary.get("best_val_accuracy") is not None:
        lines.append(f"- Best validation accuracy: **{_pct(summary['best_val_accuracy'])}**"
                     + (f" (epoch {summary['best_epoch']})" if summary.get("best_epoch") is not None else ""))
    epochs = run.epoch_logs()
    if epochs:
        lines.append(f"- Epochs trained: {len(epochs)}")
    from tl_core.results.evaluate import list_evaluations, load_evaluation

    for name in list_evaluations(run.path):
        try:
            rep = load_evaluation(run.path, name)
        except TransferLabError:
            continue
        if rep is None:
            continue
        where = ("validation images" if name == "val"
                 else f"test folder `{_last_part(rep.data_dir) or name}`")
        lines += ["", f"### On the {where} ({rep.n} images)", "",
                  f"Accuracy {_pct(rep.accuracy)}, balanced accuracy {_pct(rep.balanced_accuracy)}.", "",
                  "| Class | Precision | Recall | F1 | Images |", "|---|---:|---:|---:|---:|"]
        for c, m in rep.per_class.items():
            lines.append(f"| {_cell(c)} | {_pct(m.get('precision'))} | {_pct(m.get('recall'))} | "
                         f"{_pct(m.get('f1'))} | {m.get('support', '?')} |")
    if not summary.get("best_val_accuracy") and not epochs and not list_evaluations(run.path):
        lines.append("No metrics recorded yet.")
    lines.append("")

    lines += _novelty_lines(rule, novelty_problem)
    lines += ["## Known limits", ""] + [f"- {x}" for x in _limits(summary, counts, calibrated=bool(rule))] + [""]

    lines += ["## How to use it", "",
              "Every image is prepared the same way as in training (`preprocessing.json`): "
              f"resize the short side to {prep.get('size', '?')} pixels with {prep.get('interpolation', 'bicubic')} "
              f"interpolation, centre-crop a {prep.get('size', '?')} x {prep.get('size', '?')} square, divide by 255, "
              f"subtract mean {tuple(prep.get('mean', ()))} and divide by std {tuple(prep.get('std', ()))} "
              "(RGB order, NCHW).", "",
              "- Bundle: `python predict.py photo.jpg` (needs torch, timm, Pillow) prints the top classes, "
              "`none_of_these` and `unsure` as JSON; `tl predict <bundle folder> photo.jpg` works too.",
              f"- ONNX: opset {ONNX_OPSET}, input `{ONNX_INPUT}` "
              f"(N, 3, {prep.get('size', 'S')}, {prep.get('size', 'S')}), "
              f"outputs `{ONNX_OUTPUT}` (apply softmax), `features`"
              + (" and `familiarity`" if rule else "") + " (see “None of these” above); labels, preprocessing "
              "and the rule's numbers are in the file's metadata.",
              "- TorchScript: `torch.jit.load('model.pt')`, same input; it returns the same outputs as a tuple; "
              "labels and the rule in its extra files.",
              "", f"Classes in output order: {', '.join(f'`{c}`' for c in classes)}.", ""]
    return "\n".join(lines)


__all__ = ["EXPORT_FORMATS", "ONNX_OPSET", "PARITY_TOLERANCE", "ExportError", "export_bundle", "export_bundle_zip",
           "export_onnx", "export_torchscript", "export_run", "bundle_zip_bytes", "onnx_bytes", "torchscript_bytes",
           "model_card", "check_onnx", "check_torchscript", "parity", "check_images", "bundle_preprocessing",
           "verify_bundle", "compare_outputs", "exported_network"]
