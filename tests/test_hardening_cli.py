"""Issue 12, items 2, 6, 8 and 9: full disks, data problems training must not hide, exit codes,
messages that mislead. Each test fails without its fix (the item is named in each test's docstring).

Full disks are real where this machine allows it (root: a small tmpfs), simulated otherwise.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tl_core
from tl_core import cli
from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.sample import sample_dir
from tl_core.errors import ConfigError, DataError, ExportError, ImageLoadError, RunError, WeightsError

MODEL = "tf_efficientnet_lite0"


# -- helpers ------------------------------------------------------------------------------------

def small_copy(dest: Path, classes=("bag", "sandal"), per_class: int = 12) -> Path:
    """A few categories of the bundled sample, ``per_class`` pictures each."""
    for c in classes:
        (dest / c).mkdir(parents=True)
        for src in sorted((sample_dir() / c).iterdir())[:per_class]:
            shutil.copy(src, dest / c / src.name)
    return dest


def config_for(root: Path, cache: Path | None = None, epochs: int = 1, weights: str = "offline",
               **train) -> RunConfig:
    return RunConfig(data=DataConfig(root=str(root)),
                     model=ModelConfig(MODEL, weights=weights, image_size=64),
                     freeze=FreezeConfig("head"),
                     train=TrainConfig(epochs=epochs, batch_size=16, cache_dir=str(cache) if cache else None,
                                       **train))


def warnings_of(run_dir: str | Path) -> dict[str, str]:
    events = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    return {e["kind"]: e["message"] for e in events if e["event"] == "on_warning"}


def files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _dirs, names in os.walk(root) for f in names)


def tl_process(*args: object, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("TL_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "tl_core", *map(str, args)], env=env, text=True, **popen)


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    """One small finished run for the commands that need one."""
    import tl_core

    root = small_copy(tmp_path_factory.mktemp("sample-data"))
    result = tl_core.train(config_for(root), runs_dir=tmp_path_factory.mktemp("sample-runs"))
    assert result.status == "finished", result.message
    return Path(result.run_dir)


# -- item 2: a full cache disk ----------------------------------------------------------------------

def test_a_full_feature_cache_disk_does_not_fail_training(tiny_disk, tmp_path):
    """Item 2 (real full disk): the frozen layers' output does not fit on the cache's disk; the run
    finishes anyway, says the cache was not kept, and leaves no temporary file there."""
    import tl_core

    result = tl_core.train(config_for(small_copy(tmp_path / "data"), cache=tiny_disk), runs_dir=tmp_path / "runs")
    assert result.status == "finished", result.message
    assert "could not be kept on disk" in warnings_of(result.run_dir)["cache_not_saved"]
    left = files_under(tiny_disk)   # the small validation set may fit: then as a whole file
    assert not [f for f in left if f.endswith(".tmp")], left
    for name in left:
        load_file(str(tiny_disk / name))


def _failing_save_file(written: list[str]):
    from safetensors import SafetensorError

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 10)   # half a file, as a write cut short leaves it
        written.append(filename)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    return save_file


def test_a_safetensors_write_error_keeps_no_cache_file(tmp_path, monkeypatch):
    """Item 2 (simulated, for machines without root): safetensors' own error is not an OSError."""
    import safetensors.torch

    from tl_core.training.features import save_cached_features

    written: list[str] = []
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save_file(written))
    assert save_cached_features(tmp_path, "key", {"x": torch.zeros(3), "y": torch.zeros(3)}) is None
    assert written and files_under(tmp_path) == []


def test_offline_weights_on_a_full_disk_are_a_plain_error_without_a_partial_file(tiny_disk, monkeypatch):
    """Item 2 (real full disk): converting the bundled offline weights into a full cache."""
    from tl_core.models.offline import bundled_checkpoint_path, offline_weights_path

    if bundled_checkpoint_path(MODEL) is None:
        pytest.skip("the offline weights package is not installed")
    monkeypatch.setenv("TL_CACHE_DIR", str(tiny_disk))
    with pytest.raises(WeightsError, match="is full") as caught:
        offline_weights_path(MODEL)
    assert "TL_CACHE_DIR" in str(caught.value)
    assert files_under(tiny_disk) == []


def test_offline_weights_write_error_simulated(tmp_path, monkeypatch):
    """Item 2 (simulated): the same without a small disk."""
    import safetensors.torch

    from tl_core.models.offline import bundled_checkpoint_path, offline_weights_path

    if bundled_checkpoint_path(MODEL) is None:
        pytest.skip("the offline weights package is not installed")
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    written: list[str] = []
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save_file(written))
    with pytest.raises(WeightsError, match="is full"):
        offline_weights_path(MODEL)
    assert written and files_under(tmp_path / "cache") == []


# -- item 6: training says what the data check found ------------------------------------------------

@pytest.fixture(scope="module")
def troubled_data(tmp_path_factory) -> Path:
    """One picture in 'bees', the same picture in 'bag' and 'sandal', and a file that is no picture."""
    root = small_copy(tmp_path_factory.mktemp("troubled"))
    (root / "bees").mkdir()
    shutil.copy(sorted((sample_dir() / "trouser").iterdir())[0], root / "bees" / "only.png")
    shutil.copy(sorted((root / "bag").iterdir())[0], root / "sandal" / "conflict.png")
    (root / "bag" / "broken.png").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(300)))
    return root


def test_train_says_every_data_error_and_which_category_is_not_checked(troubled_data, tmp_path, capsys):
    """Item 6: `tl train` used to finish with a validation accuracy for 'bag' and 'sandal' only and
    no word about the conflict, the unreadable file or 'bees'."""
    code = cli.main(["train", str(troubled_data), "--weights", "offline", "--epochs", "1", "--image-size", "64",
                     "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "The same picture is in both 'bag' and 'sandal'" in out
    assert "1 picture could not be opened" in out and "broken.png" in out
    assert "'bees' has too few pictures" in out and "leaves 'bees' out" in out
    assert "bees                 not checked" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["unchecked_classes"] == ["bees"] and "bees" not in result["per_class_accuracy"]
    # the run folder records it
    warned = warnings_of(result["run_dir"])
    assert {"data_problem", "unreadable", "category_not_checked"} <= set(warned)
    summary = json.loads((Path(result["run_dir"]) / "summary.json").read_text())
    assert summary["unchecked_classes"] == ["bees"]


def test_a_clean_folder_trains_without_data_warnings(sample_run):
    """Item 6: nothing to say, nothing said."""
    assert not {"data_problem", "unreadable", "category_not_checked"} & set(warnings_of(sample_run))
    assert json.loads((sample_run / "summary.json").read_text())["unchecked_classes"] == []


# -- item 8: exit codes and messages -------------------------------------------------------------

def test_check_exits_1_on_errors_and_still_prints_its_json(troubled_data, capsys):
    """Item 8: `tl check` said 0 whatever it found."""
    assert cli.main(["check", str(troubled_data)]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any(p["severity"] == "error" for p in report["problems"])
    assert cli.main(["check", str(sample_dir())]) == 0


@pytest.mark.parametrize("flags, words", [
    (["--seed", str(2**70)], "random seed must be a whole number from 0 to"),
    (["--seed", "-1"], "random seed must be a whole number from 0 to"),
    (["--threads", "100000"], "number of CPU threads must be a whole number from 1 to 1024"),
])
def test_impossible_numbers_are_refused_before_a_run_folder(flags, words, tmp_path, capsys):
    """Item 8: --seed 2**70 crashed inside NumPy, --threads 100000 ended in a segmentation fault."""
    runs = tmp_path / "runs"
    code = cli.main(["train", str(sample_dir()), "--weights", "offline", "--runs-dir", str(runs), *flags])
    assert code == cli.EXIT_ERROR
    assert words in capsys.readouterr().err
    assert not runs.exists()


@pytest.mark.parametrize("k", ["0", "-1", "two"])
def test_top_k_must_be_at_least_one(k, sample_run, capsys):
    """Item 8: --top-k 0 printed an empty list, -1 all but one category."""
    picture = sorted((sample_dir() / "bag").iterdir())[0]
    with pytest.raises(SystemExit) as stopped:
        cli.main(["predict", str(sample_run), str(picture), "--top-k", k])
    assert stopped.value.code == 2
    assert "must be a whole number of at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_the_library_refuses_a_top_k_below_one_as_the_cli_does(k, sample_run):
    """tl_core.predict(top_k=0) quietly listed one category: the library now says what it needs."""
    with pytest.raises(ConfigError, match="top_k must be a whole number of at least 1"):
        tl_core.predict(sample_run, [sorted((sample_dir() / "bag").iterdir())[0]], top_k=k)


def test_the_library_takes_any_whole_number_for_top_k(sample_run):
    import numpy as np

    (answer,) = tl_core.predict(sample_run, [sorted((sample_dir() / "bag").iterdir())[0]], top_k=np.int64(2))
    assert len(answer["top"]) == 2


def test_export_to_a_place_that_cannot_be_written_is_a_plain_error(sample_run, tmp_path, capsys):
    """Item 8: an export to a place that cannot be written failed only after the work, blaming the
    format ("The ONNX export failed ... The bundle and TorchScript exports still work")."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["export", str(sample_run), "--format", "onnx", "--out", str(blocker / "out" / "m.onnx")])
    assert code == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "Cannot write the export" in err and "Choose another place" in err
    assert blocker.read_text() == "not a folder"
    # the library (and so the app) refuses it the same way, before any work
    with pytest.raises(ExportError, match="is not a folder you can write to"):
        tl_core.export(sample_run, "bundle", blocker / "bundle")


def test_export_to_a_read_only_disk_is_a_plain_error(sample_run, tiny_disk, capsys):
    """Item 8 (real read-only disk): refused before any work, naming the place."""
    done = subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot make the small filesystem read-only")
    code = cli.main(["export", str(sample_run), "--format", "onnx", "--out", str(tiny_disk / "m.onnx")])
    assert code == cli.EXIT_ERROR
    assert "is not a folder you can write to" in capsys.readouterr().err


def test_runs_on_a_missing_folder_is_an_error(tmp_path, capsys):
    """Item 8: `tl runs --runs-dir <typo>` said nothing and exited 0."""
    assert cli.main(["runs", "--runs-dir", str(tmp_path / "no-such-runs")]) == cli.EXIT_ERROR
    assert "There is no runs folder" in capsys.readouterr().err


def test_runs_into_a_closed_pipe_exits_quietly(sample_run):
    """Item 8: `tl runs | head -1` ended with a BrokenPipeError traceback."""
    proc = tl_process("runs", "--runs-dir", sample_run.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()   # the reader goes away before the first line (importing takes a while)
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141   # 128 + SIGPIPE, as `yes | head -1` gives
    assert "Traceback" not in err and "BrokenPipe" not in err and "Unexpected" not in err


def test_a_full_disk_at_run_creation_is_a_plain_error_and_leaves_no_folder(tiny_disk, capsys):
    """Item 8 (real full disk): a half-made run folder (no config.json) was left behind, with a
    traceback."""
    runs = tiny_disk / "runs"
    runs.mkdir()
    fill(tiny_disk)
    code = cli.main(["train", str(sample_dir()), "--weights", "offline", "--runs-dir", str(runs)])
    assert code == cli.EXIT_ERROR
    assert "is full, so no run could be started" in capsys.readouterr().err
    assert list(runs.iterdir()) == []


def test_a_full_disk_at_run_creation_simulated(tmp_path, monkeypatch):
    """Item 8 (simulated, for machines without root): the config cannot be written."""
    import tl_core

    def no_space(self, path):
        Path(path).write_text("{")   # what a write cut short leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(RunConfig, "save", no_space)
    runs = tmp_path / "runs"
    with pytest.raises(RunError, match="is full, so no run could be started"):
        tl_core.train(config_for(sample_dir()), runs_dir=runs)
    assert list(runs.iterdir()) == []


def test_ctrl_c_stops_training_with_exit_130(tmp_path):
    """Item 8: a Ctrl-C stop exited 0, as if the run had finished."""
    runs = tmp_path / "runs"
    proc = tl_process("train", sample_dir(), "--weights", "offline", "--image-size", "64",
                      "--epochs", "1000", "--patience", "0", "--runs-dir", runs,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:   # stop once it trains: 1000 epochs are far from done
            if line.startswith("epoch 1/"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err   # 128 + SIGINT, as shells expect
    assert json.loads(out.strip().splitlines()[-1])["status"] == "stopped"
    assert "Traceback" not in err
    (run,) = runs.iterdir()
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"


SERVER_EXIT = textwrap.dedent("""
    import sys, time
    from tl_core.app import jobs
    from tl_core.config import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig

    config = RunConfig(data=DataConfig(root=sys.argv[1]), model=ModelConfig("{model}", weights="offline",
                       image_size=64), freeze=FreezeConfig("head"),
                       train=TrainConfig(epochs=1000, batch_size=16, early_stopping_patience=None))
    job = jobs.start_training(config, sys.argv[2])
    while job.alive and (job.run.status().get("epoch") or 0) < 1:
        time.sleep(0.05)
    print(job.run_dir, job.alive, flush=True)
    sys.exit(0)   # as when the server is stopped: the job is still training
""").format(model=MODEL)


def test_the_server_stopping_while_training_stops_the_job_cleanly(tmp_path):
    """Item 8: the process ended with the training thread inside PyTorch ("terminate called",
    exit 134 at times) and the run stayed "running" forever."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SERVER_EXIT, str(sample_dir()), str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "terminate called" not in proc.stderr
    run_dir, alive = proc.stdout.split()
    assert alive == "True"   # it was still training when the process ended
    status = json.loads((Path(run_dir) / "status.json").read_text())
    assert status["state"] == "stopped" and status["epoch"] >= 1
    assert (Path(run_dir) / "model.safetensors").is_file()


# -- item 9: messages that mislead ----------------------------------------------------------------

def test_a_shortcut_loop_is_called_a_loop(tmp_path):
    """Item 9: was "a shortcut to a file that no longer exists"."""
    from tl_core.data.images import load_image
    from tl_core.data.scan import scan_folder

    root = small_copy(tmp_path / "data", per_class=3)
    os.symlink("b.png", root / "bag" / "a.png")
    os.symlink("a.png", root / "bag" / "b.png")
    notes = {Path(p.path).name: p.message for p in scan_folder(root).problems if p.kind == "broken_link"}
    assert set(notes) == {"a.png", "b.png"}
    assert all("leads back to itself" in m and "no longer exists" not in m for m in notes.values())
    with pytest.raises(ImageLoadError, match="shortcut loop"):
        load_image(root / "bag" / "a.png")


def _deep_folder(parent: Path, total_chars: int = 5000) -> None:
    """Folders nested below ``parent`` until their path is longer than the system allows (made
    through folder handles: the full path cannot be used)."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        for i in range(total_chars // 200 + 1):
            name = f"{i:02d}" + "d" * 198
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def test_a_too_long_path_gets_a_short_message_that_says_so(tmp_path):
    """Item 9: a 17 KB message about being allowed to read the folder."""
    from tl_core.data.scan import scan_folder

    root = small_copy(tmp_path / "data", per_class=3)
    _deep_folder(root / "bag")
    (problem,) = [p for p in scan_folder(root).problems if p.kind == "unreadable_folder"]
    assert "too long" in problem.message and "allowed" not in problem.message + problem.fix
    assert len(problem.message) < 300
    with pytest.raises(DataError) as caught:
        scan_folder(tmp_path / ("x" * 300))
    assert "too long" in str(caught.value) and len(str(caught.value)) < 400


def test_an_unreadable_category_folder_is_reported_once(tmp_path, monkeypatch):
    """Item 9: "could not open the folder 'bees'" and then "the category folder 'bees' has no pictures"."""
    from tl_core.data.scan import scan_folder

    root = small_copy(tmp_path / "data", per_class=3)
    (root / "bees").mkdir()
    shutil.copy(sorted((root / "bag").iterdir())[0], root / "bees" / "a.png")
    real_scandir = os.scandir

    def scandir(path="."):   # what a folder without read permission does (root may read anything)
        if Path(path) == root / "bees":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    about_bees = [p for p in scan_folder(root).problems if "bees" in p.path]
    assert [p.kind for p in about_bees] == ["unreadable_folder"]
    assert "not allowed to open it" in about_bees[0].message


def test_random_bytes_in_a_pth_are_not_called_code(tmp_path):
    """Item 9: random bytes got "opening it would run Python code"."""
    from tl_core.models.weights import load_weights_file

    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"\x11" + bytes(random.Random(1).randrange(256) for _ in range(4096)))
    with pytest.raises(WeightsError) as caught:
        load_weights_file(junk)
    assert "is not a PyTorch weights file" in str(caught.value) and "Python code" not in str(caught.value)

    class Code:   # and a file that really asks for code is still called so
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"w": Code()}, tmp_path / "code.pth")
    with pytest.raises(WeightsError, match="would run Python code"):
        load_weights_file(tmp_path / "code.pth")


def test_nan_starting_weights_are_not_blamed_on_the_learning_rate(tmp_path):
    """Item 9: a weights file holding NaN failed with "the learning rate is probably too high"."""
    from safetensors.torch import save_file

    import tl_core
    from tl_core.models.offline import offline_weights_path

    source = offline_weights_path(MODEL)
    if source is None:
        pytest.skip("the offline weights package is not installed")
    weights = load_file(str(source))
    stem = next(k for k in weights if k.startswith("conv_stem"))
    weights[stem] = torch.full_like(weights[stem], float("nan"))
    save_file(weights, str(tmp_path / "nan.safetensors"))

    result = tl_core.train(config_for(small_copy(tmp_path / "data", per_class=6), weights=str(tmp_path / "nan.safetensors")),
                           runs_dir=tmp_path / "runs")
    assert result.status == "failed"
    assert "starting weights" in result.message and "NaN" in result.message
    assert "learning rate is not the cause" in result.message and "too high" not in result.message
