"""Transfer Lab core: teach a pretrained image model your own categories.

Everything the app and the ``tl`` command line do goes through the functions below (one code path),
in the style of timm's ``create_model`` / ``list_models``. This package never imports Streamlit;
``docs/ARCHITECTURE.md`` maps the sub-packages behind it.

A whole session, headless::

    import tl_core
    from tl_core import DataConfig, FreezeConfig, ModelConfig, RunConfig

    report = tl_core.check("photos/")                 # every problem in the folder, in plain words
    print(report.counts, [p.message for p in report.problems])

    config = RunConfig(data=DataConfig(root="photos/"),
                       model=ModelConfig(name="tf_efficientnet_lite0"),   # see tl_core.catalogue()
                       freeze=FreezeConfig(preset="head"))                # head | last:N | none | scratch
    result = tl_core.train(config)                    # a run folder under ./runs
    print(result.status, result.best_val_accuracy, result.run_dir)

    metrics = tl_core.evaluate(result.run_dir, "photos-test/")
    for line in tl_core.predict(result.run_dir, ["new.jpg"]):
        print(line["label"], line["probability"])
    tl_core.export(result.run_dir, "bundle", "my-model.zip")

Importing ``tl_core`` is cheap: the functions import PyTorch and timm when first called.
"""
from __future__ import annotations

import os as _os

# OpenMP threads that wait for work sleep instead of spinning. On a busy 2-core machine spinning threads
# fight the other programs for the cores: the same 3-epoch last:1 run on 80 photos took 17-28 s with
# spinning and 8.6-9.9 s without (load 6), 17-98 s against 9-22 s at load 7-8; on a quiet machine sleeping
# costs about 4% (4.8 against 5.0 s). Read once when PyTorch loads, so it is set before any import of it;
# a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

import operator
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import (ConfigError, DataError, ExportError, ImageLoadError, RunError, TransferLabError,
                            UploadError, WeightsError)

if TYPE_CHECKING:  # pragma: no cover - names for type hints only
    from PIL import Image

    from tl_core.data.checks import CheckReport
    from tl_core.lab import CreatedExperiment
    from tl_core.models.catalogue import ModelInfo
    from tl_core.projects import OpenedProject
    from tl_core.results.evaluate import EvalReport
    from tl_core.training.callbacks import Callback
    from tl_core.training.estimate import Estimate
    from tl_core.training.loop import FitResult

__all__ = ["train", "estimate", "evaluate", "predict", "export", "check", "catalogue", "list_runs", "save_project",
           "open_project", "create_experiment", "run_experiment", "list_experiments", "RunConfig", "DataConfig",
           "ModelConfig", "FreezeConfig", "TrainConfig", "TransferLabError", "ConfigError", "DataError",
           "ImageLoadError", "WeightsError", "RunError", "UploadError", "ExportError", "__version__"]


def train(config: RunConfig, runs_dir: str | Path | None = None, *, callbacks: Iterable[Callback] = (),
          stop_event: threading.Event | None = None, run_id: str | None = None) -> FitResult:
    """Train one model as ``config`` says, into a new run folder, and return how it went.

    The run folder (under ``runs_dir``, default ``$TL_RUNS_DIR`` or ``./runs``) receives the config,
    live status, every event, the best weights, labels and preprocessing as training goes, so it
    alone is enough to evaluate, predict, export and redraw later. ``callbacks`` (see
    :class:`tl_core.training.Callback`) hear every event; setting ``stop_event`` stops within one
    batch and keeps the best weights. A training failure never raises: ``result.status`` is
    ``"failed"`` with a plain ``result.message``.

    >>> result = tl_core.train(RunConfig(data=DataConfig(root="photos/")))   # doctest: +SKIP
    >>> result.status, result.best_val_accuracy                              # doctest: +SKIP
    ('finished', 0.95)
    """
    from tl_core.training.loop import train_run

    return train_run(config, runs_dir=runs_dir, callbacks=callbacks, stop_event=stop_event, run_id=run_id)


def estimate(config: RunConfig) -> Estimate:
    """How long ``config`` will take to train on this computer, before training it.

    ``prepare_seconds`` (checking and reading the pictures, and running the frozen layers once),
    ``epoch_seconds`` (each pass over the pictures after that) and ``total_seconds(epochs)``. The
    split is the one training will make, a few of the pictures are timed, the model's steps are
    measured here (once per computer, then remembered) and the result is corrected by the real
    runs of the same model and setting on this computer. The app's pages show the same numbers.

    >>> est = tl_core.estimate(RunConfig(data=DataConfig(root="photos/")))    # doctest: +SKIP
    >>> round(est.total_seconds(10))                                         # doctest: +SKIP
    27
    """
    from tl_core.training.estimate import estimate as _estimate

    return _estimate(config)


def evaluate(run_dir: str | Path, data_dir: str | Path | None = None, *, progress=None) -> EvalReport:
    """Measure a trained run: on its own validation pictures (``data_dir=None``) or on a separate
    folder with one sub-folder per category. Returns accuracy, balanced accuracy, per-class
    precision/recall/F1, the confusion matrix and every prediction; also saved in the run folder
    (``eval_<name>.json``) for the Results page. ``progress(done, total)`` is called as it goes.

    >>> tl_core.evaluate("runs/2026...-tf_efficientnet_lite0-ab12").accuracy   # doctest: +SKIP
    0.93
    """
    from tl_core.results.evaluate import evaluate_run

    return evaluate_run(run_dir, None if data_dir is None else str(data_dir), progress=progress)


def predict(run_dir: str | Path, images: Sequence[str | Path | Image.Image], *, top_k: int = 3) -> Iterator[dict]:
    """Classify pictures (paths or PIL images) with a trained run or an exported bundle.

    Yields one plain dict per picture, in order, as each is classified: ``{"image", "label",
    "probability", "top": [{"label", "probability"}, ...], "none_of_these", "unsure"}``, or
    ``{"image", "error"}`` for a picture that cannot be read (one bad file does not stop the
    others). The model is loaded before the first picture, so a bad ``run_dir`` raises
    :class:`RunError` at once.

    ``none_of_these`` is True when the picture looks unlike every picture the model learned from
    (its features are farther from the training pictures' than those of at least 95% of the run's
    own held-out pictures), None when the run has no calibration for it and its pictures are gone
    to prepare one (an older bundle); ``unsure`` is True when the two most probable categories are
    less than 0.2 apart after calibration. The rule: :mod:`tl_core.results.novelty`. An older run
    is calibrated from its pictures on first use (a warning on the ``tl_core`` logger says so).

    >>> [p["label"] for p in tl_core.predict(run_dir, ["cat.jpg", "dog.jpg"])]   # doctest: +SKIP
    ['cat', 'dog']
    """
    from tl_core.results.inference import load_run_model

    try:
        k = operator.index(top_k)   # any whole number (numpy's too), never 2.5 or "3"
    except TypeError:
        k = None
    if isinstance(top_k, bool) or k is None or k < 1:
        raise ConfigError(f"top_k must be a whole number of at least 1 (how many categories to list), got {top_k!r}.")
    top_k = k
    loaded = load_run_model(run_dir)
    return _predictions(loaded, images, top_k)


def _predictions(loaded: Any, images: Sequence[str | Path | Image.Image], top_k: int) -> Iterator[dict]:
    from tl_core.data.images import load_image

    for item in images:
        name = str(item) if isinstance(item, (str, Path)) else getattr(item, "filename", "") or "<image>"
        try:
            image = load_image(item) if isinstance(item, (str, Path)) else item
        except (ImageLoadError, OSError) as err:
            yield {"image": name, "error": getattr(err, "reason", None) or str(err)}
            continue
        yield {"image": name, **loaded.answer(image, k=top_k)}


def export(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Write a trained run as ``fmt`` to ``out`` and return the written path.

    ``fmt``: ``"bundle"`` (weights + labels + preprocessing + predict.py + model card; a ``.zip``
    when ``out`` ends in .zip), ``"safetensors"``, ``"onnx"`` or ``"torchscript"``. ONNX and
    TorchScript files are checked against PyTorch on real pictures before they are kept; a file
    that does not reproduce the model's answers is never written (:class:`ExportError`).

    >>> tl_core.export(run_dir, "onnx", "model.onnx")   # doctest: +SKIP
    PosixPath('model.onnx')
    """
    from tl_core.results.export import export_run

    return export_run(run_dir, fmt, out)


def check(data_dir: str | Path, *, progress=None, outliers: bool = True) -> CheckReport:
    """Open every picture under ``data_dir`` (one sub-folder per category) and report what would
    hurt training: unreadable files, copies (also across categories and across train/val), too
    few pictures, imbalance, and pictures that look unlike the rest of their category (kind
    ``"outlier"``: a placeholder, a screenshot, the wrong thing; categories of 8 or more pictures);
    each problem with its path, a plain message and the fix. Raises :class:`DataError` only when
    the folder cannot be used at all.

    Finding odd pictures runs the bundled pretrained network over every picture once (its
    features are remembered per picture, so a second check, or a "classifier only" retrain after
    fixing pictures, does not repeat it); ``outliers=False`` skips it. ``progress(done, total)`` is
    called as it goes (a step per picture opened, and one per picture the network looks at).

    >>> report = tl_core.check("photos/")               # doctest: +SKIP
    >>> report.counts                                   # doctest: +SKIP
    {'cats': 40, 'dogs': 38}
    >>> [p.path for p in report.problems if p.kind == "outlier"]   # doctest: +SKIP
    ['photos/cats/image-not-found.png']
    """
    from tl_core.data.checks import check_dataset

    return check_dataset(data_dir, progress=progress, outliers=outliers)


def catalogue() -> list[ModelInfo]:
    """The pretrained models to choose from, recommended first: name, size, ImageNet accuracy,
    input size, licence and whether weights are ready offline.

    >>> [m.name for m in tl_core.catalogue()][:2]       # doctest: +SKIP
    ['tf_efficientnet_lite0', 'mobilenetv3_large_100']
    """
    from tl_core.models.catalogue import catalogue as _catalogue

    return _catalogue()


def list_runs(runs_dir: str | Path | None = None) -> list[dict]:
    """Every run folder under ``runs_dir`` (default ``$TL_RUNS_DIR`` or ``./runs``), newest first,
    each as a plain dict (id, path, state, model, preset, best validation accuracy, ...)."""
    from tl_core.runs import list_runs as _list_runs

    return _list_runs(runs_dir)


def save_project(out: str | Path, data_root: str | Path, run_dirs: Iterable[str | Path] = (),
                 choices: dict | None = None, *, progress=None, set_aside: bool = True) -> Path:
    """Save a whole project as one file: the pictures of ``data_root`` (in their own layout, train/ and
    val/ kept), the run folders ``run_dirs`` (each trained on ``data_root``) and the user's ``choices``
    (a plain dict), with a manifest holding the sha256 of every member. ``out`` gets ``.tlproj`` when it
    has no extension; an existing file is never replaced. ``progress(done, total)`` counts bytes.
    The pictures set aside beside ``data_root`` and the log of fixes travel too (undo works on the other
    computer); ``set_aside=False`` leaves those pictures out.
    :func:`tl_core.projects.runs_of_data` lists the runs of a data folder.

    >>> tl_core.save_project("pets.tlproj", "photos/", [result.run_dir])   # doctest: +SKIP
    PosixPath('/home/me/pets.tlproj')
    """
    from tl_core.projects import save_project as _save_project

    return _save_project(out, data_root, run_dirs, choices, progress=progress, set_aside=set_aside)


def open_project(path: str | Path, dest_dir: str | Path, *, progress=None) -> OpenedProject:
    """Open a project file into a new folder under ``dest_dir`` (named after the file, never over
    anything that exists) and return where its pictures, runs and choices are. The runs point at the
    unpacked pictures, so evaluate, predict and export give the same answers as where it was saved. The
    file is checked like an uploaded zip and every member against its checksum; a file that is not a
    project, damaged, or from a newer version raises :class:`UploadError` and leaves nothing behind.

    >>> opened = tl_core.open_project("pets.tlproj", "projects/")        # doctest: +SKIP
    >>> tl_core.evaluate(opened.run_dirs[0]).accuracy                    # doctest: +SKIP
    0.93
    """
    from tl_core.projects import open_project as _open_project

    return _open_project(path, dest_dir, progress=progress)


def create_experiment(experiment: Any, experiments_dir: str | Path | None = None) -> CreatedExperiment:
    """Check a Lab experiment (its settings, models and pictures) and create its folder under
    ``experiments_dir`` (default ``$TL_EXPERIMENTS_DIR`` or ``./experiments``); ``.run()`` it next.
    ``experiment`` is one of :mod:`tl_core.lab`'s four (``ScratchExperiment``, ``DataSizeExperiment``,
    ``LayersExperiment``, ``ModelsExperiment``) or ``tl_core.lab.make_experiment(kind, data_dir, ...)``.
    A bad setting or an unusable folder raises a plain :class:`TransferLabError` before any folder exists.
    """
    from tl_core.lab import create_experiment as _create

    return _create(experiment, experiments_dir)


def run_experiment(experiment: Any, experiments_dir: str | Path | None = None, *,
                   stop_event: threading.Event | None = None, progress=None) -> dict:
    """Run a Lab experiment to the end and return its results: plain data with ``experiment_dir``, the
    numbers (``points`` for data-size, ``pretrained``/``scratch`` for scratch, ``results`` for layers and
    models) and ``conclusion``, two or three sentences honest about uncertainty. Every run it makes is
    an ordinary run folder inside the experiment folder. ``progress(p)`` hears a
    :class:`tl_core.lab.runner.Progress` (fraction, time left, which run); setting ``stop_event`` stops
    within one batch and keeps the finished runs. Failures after the folder exists do not raise: the
    results say ``"status": "failed"`` with a plain message.

    >>> from tl_core.lab import DataSizeExperiment                                    # doctest: +SKIP
    >>> tl_core.run_experiment(DataSizeExperiment("photos/"))["conclusion"]           # doctest: +SKIP
    'With 3 pictures per category the model got 70% of the 40 checking pictures right ...'
    """
    return create_experiment(experiment, experiments_dir).run(stop_event, progress)


def list_experiments(experiments_dir: str | Path | None = None) -> list[dict]:
    """Every Lab experiment folder under ``experiments_dir``, newest first, each as a plain dict (id,
    path, kind, state, progress, conclusion); a folder's results are in its ``results.json``."""
    from tl_core.lab import list_experiments as _list

    return _list(experiments_dir)
