"""``python -m tl_core`` / ``tl``: the headless contract (README, "The command line").

Progress goes to stdout as readable lines; the last stdout line of ``train``, ``evaluate``,
``check`` and ``project save|open`` is one JSON object, so scripts can ``tail -n 1 | jq``. Errors
go to stderr in plain language with a non-zero exit code, never as a bare traceback (``--debug``
shows one).
"""
from __future__ import annotations

import argparse
import errno
import io
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import tl_core
from tl_core import (DataConfig, FreezeConfig, ModelConfig, RunConfig, RunError, TrainConfig,
                     TransferLabError)
from tl_core.files import disk_full, short_path, size_text

EXIT_FAILED = 1          # training failed, a picture could not be predicted, the data check found errors
EXIT_ERROR = 2           # a plain error: a bad setting, a missing folder, a file that cannot be written
EXIT_BUG = 3
EXIT_INTERRUPTED = 130   # stopped with Ctrl-C (128 + SIGINT), as shells expect
EXIT_PIPE = 141          # the reader of our output went away (128 + SIGPIPE), e.g. `tl runs | head -1`

# Set when stdout's reader has gone away: later lines are dropped instead of failing the command
# (a training run goes on to the end and is saved), and the exit code says output was cut.
_STDOUT_GONE = threading.Event()


def _write_line(text: str) -> None:
    if _STDOUT_GONE.is_set():
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _STDOUT_GONE.set()
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's own final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout is not a real file (captured in tests): nothing will be flushed to a pipe


def _print_json(obj: dict) -> None:
    _write_line(json.dumps(obj, default=str))


def _say(msg: str) -> None:
    _write_line(msg)


# -- train --------------------------------------------------------------------------------------

def _run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig ``tl train`` and ``tl estimate`` build from the same flags."""
    kind = args.freeze.split(":")[0]
    weights = args.weights
    if kind == "scratch" and weights == "auto":
        weights = "none"
    train_kwargs = {k: v for k, v in {
        "epochs": args.epochs, "seed": args.seed, "batch_size": getattr(args, "batch_size", None),
        "lr": getattr(args, "lr", None), "device": args.device, "augment": getattr(args, "augment", None),
        "feature_cache": not args.no_feature_cache, "early_stopping_patience": getattr(args, "patience", None),
        "num_threads": getattr(args, "threads", None)}.items() if v is not None}
    if getattr(args, "patience", None) == 0:
        train_kwargs["early_stopping_patience"] = None
    train = TrainConfig(**train_kwargs)   # first: a bad --seed is named as the seed, not as the split's seed
    return RunConfig(data=DataConfig(root=args.data_dir, val_fraction=args.val_fraction, split_seed=train.seed),
                     model=ModelConfig(name=args.model, weights=weights, image_size=args.image_size),
                     freeze=FreezeConfig(preset=args.freeze), train=train)


@contextmanager
def _first_ctrl_c_stops() -> Iterator[threading.Event]:
    """An event the first Ctrl-C sets (the work stops cleanly after this batch and keeps what is done);
    a second Ctrl-C aborts. The caller's own Ctrl-C handling comes back afterwards (main() may run
    inside another program); outside the main thread signals cannot be caught, so nothing changes."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        _say("Stopping after this batch (press Ctrl-C again to abort)...")
        stop.set()
        signal.signal(signal.SIGINT, previous)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _cmd_train(args: argparse.Namespace) -> int:
    config = _run_config(args)   # a bad flag is answered here, before any process is started
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:   # not yet launched (no PyTorch needed to know)
        return _launch_processes(args.nproc, args.argv)

    from tl_core.training import distributed
    from tl_core.training.callbacks import Callback
    from tl_core.runs.events import stage_label

    rank, world = distributed.env_rank_world()

    class Printer(Callback):
        last_stage = None

        def on_fit_start(self, info):
            procs = f" x {info['world_size']} processes" if info.get("world_size", 1) > 1 else ""
            _say(f"Training {info['model']} on {info['train_images']} images ({len(info['classes'])} classes), "
                 f"validating on {info['val_images']}; {info['trainable_params']:,} of {info['total_params']:,} "
                 f"parameters trainable; device {info['device']['name']}{procs}; mode {info['mode']}.")

        def on_prepare(self, stage, done, total):
            if not args.quiet and (done == total or stage != self.last_stage):
                _say(f"{stage_label(stage)}: {done}/{total}")
            self.last_stage = stage

        def on_epoch_end(self, epoch, logs):
            _say(f"epoch {epoch}/{config.train.epochs}  train loss {logs['train_loss']:.4f} "
                 f"acc {logs['train_accuracy']:.3f}  val loss {logs['val_loss']:.4f} acc {logs['val_accuracy']:.3f}  "
                 f"{logs['images_per_sec']:.0f} img/s  {logs['epoch_seconds']:.1f}s")

        def on_warning(self, kind, message):
            _say(f"warning ({kind}): {message}")

    with _first_ctrl_c_stops() as stop:   # keeps the best weights
        result = tl_core.train(config, runs_dir=args.runs_dir, callbacks=[Printer()], stop_event=stop)
    if rank != 0:   # one of several processes: rank 0 speaks for the run
        if result.status == "failed":
            print(f"Error (rank {rank} of {world}): {result.message}", file=sys.stderr)
        return EXIT_FAILED if result.status == "failed" else 0
    if result.status == "failed":
        print(f"Error: {result.message}", file=sys.stderr)
    else:
        _say(result.message)
    for label, acc in (result.per_class_accuracy or {}).items():
        _say(f"  validation accuracy {label:20s} {acc:.3f}")
    for label in result.unchecked_classes:
        _say(f"  validation accuracy {label:20s} not checked (no picture of it was kept aside)")
    out = {k: v for k, v in result.to_dict().items() if k != "history"}
    if world > 1:
        out["world_size"] = world
    _print_json(out)
    if result.status == "failed":
        return EXIT_FAILED
    return EXIT_INTERRUPTED if result.status == "stopped" and stop.is_set() else 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` (or an abbreviation of it): torchrun would read it as its own option."""
    out, skip = [], False
    for token in argv:
        name = token.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) >= 4 and "--nproc".startswith(name):
            skip = "=" not in token
        else:
            out.append(token)
    return out


def _launch_processes(nproc: int, argv: list[str]) -> int:
    """``tl train --nproc N``: the same command in N processes on this computer, started by PyTorch's
    elastic launcher (``torchrun --standalone --nproc-per-node N -m tl_core ...``); each of them sees
    that it was launched and ignores ``--nproc``. The launcher's exit status is this command's."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tl_core", *_without_nproc(argv)]
    proc = subprocess.Popen(cmd)
    previous, interrupted = None, threading.Event()
    if threading.current_thread() is threading.main_thread():   # Ctrl-C reaches the launcher, which stops all
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        code = proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return EXIT_INTERRUPTED if interrupted.is_set() and code != 0 else code


def _cmd_estimate(args: argparse.Namespace) -> int:
    from tl_core.models.catalogue import get_model_info

    config = _run_config(args)
    get_model_info(config.model.name)   # a typo is answered before anything is timed
    est = tl_core.estimate(config)
    epochs = config.train.epochs
    _say(f"{est.n_train} pictures to learn from, {est.n_val} to check with; {config.model.name}, "
         f"layers '{config.freeze.preset}' ({'frozen layers computed once' if est.mode == 'features' else 'everything runs every epoch'}).")
    _say(f"preparation about {est.prepare_seconds:.0f} s, then {est.epoch_seconds:.1f} s per epoch: about "
         f"{est.total_seconds(epochs):.0f} s for {epochs} epochs"
         + (f" (corrected by {est.runs_used} earlier run(s) on this computer)" if est.runs_used else "") + ".")
    _print_json({"model": config.model.name, "freeze": config.freeze.preset, "mode": est.mode, "epochs": epochs,
                 "n_train": est.n_train, "n_val": est.n_val, "prepare_seconds": est.prepare_seconds,
                 "epoch_seconds": est.epoch_seconds, "total_seconds": est.total_seconds(epochs),
                 "read_seconds": est.read_seconds, "runs_used": est.runs_used})
    return 0


# -- evaluate / check / predict / export --------------------------------------------------------

def _cmd_evaluate(args: argparse.Namespace) -> int:
    out = tl_core.evaluate(args.run_dir, args.data_dir).to_dict()
    _say(f"accuracy {out['accuracy']:.4f}  balanced accuracy {out.get('balanced_accuracy', float('nan')):.4f}  "
         f"on {out.get('n', '?')} images")
    for label, m in out["per_class"].items():
        _say(f"  {label:20s} precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f}  "
             f"n={m['support']}")
    _print_json(out)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    out = tl_core.check(args.data_dir, outliers=not args.no_outliers).to_dict()
    _say(f"{out['images']} readable images in {len(out['classes'])} classes: "
         + ", ".join(f"{c} ({n})" for c, n in out.get("counts", {}).items()))
    for p in out["problems"]:
        fix = f"  Fix: {p['fix']}" if p.get("fix") else ""
        _say(f"[{p.get('severity', 'warning')}] {p['kind']}: {short_path(p['path'])}: {p['message']}{fix}")
    if not out["problems"]:
        _say("No problems found.")
    _print_json(out)
    # scripts can tell "fix the data first" from "fine": the JSON above is printed either way
    return EXIT_FAILED if any(p.get("severity") == "error" for p in out["problems"]) else 0


def _cmd_predict(args: argparse.Namespace) -> int:
    status = 0
    for line in tl_core.predict(args.run_dir, args.images, top_k=args.top_k):
        if "error" in line:
            print(f"Error: {line['image']}: {line['error']}", file=sys.stderr)
            status = EXIT_FAILED
        _print_json(line)
    return status


def _cmd_export(args: argparse.Namespace) -> int:
    path = tl_core.export(args.run_dir, args.format, args.out)
    _say(f"Exported {args.format} to {path}")
    _print_json({"format": args.format, "path": str(path)})
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from tl_core.runs import default_runs_dir

    root = args.runs_dir if args.runs_dir is not None else default_runs_dir()
    if not os.path.isdir(root):
        raise RunError(f"There is no runs folder at {short_path(str(root))}. Check the path, or train a model "
                       "first (tl train) to create it; --runs-dir chooses another folder.")
    runs = tl_core.list_runs(root)
    for r in runs:
        acc = r.get("best_val_accuracy")
        _say(f"{r['run_id']}  {r['state']:9s}  {r.get('model', '?')}  {r.get('preset', '?')}  "
             f"{'' if acc is None else f'val acc {acc:.3f}'}")
    _print_json({"runs": runs})
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from tl_core.paths import cache_dir
    from tl_core.runtime import cache_space

    root = cache_dir()
    cleared = cache_space.clear(root) if args.clear else None
    u = cache_space.usage(root)
    if cleared is not None:
        _say(f"Removed {len(cleared.removed)} cached file(s), {size_text(cleared.freed)}; what was used in the last "
             "minute stays. It is all made again when needed (the next training on the same pictures is slower).")
    limit = "no limit" if u.limit is None else f"limit {size_text(u.limit)} (${cache_space.LIMIT_ENV})"
    _say(f"Cache folder {root}: {size_text(u.total)} in {u.entries} file(s), {limit}")
    for kind, words in cache_space.KINDS.items():
        _say(f"  {words:34s} {size_text(u.by_kind[kind])}")
    _print_json({"cache_dir": str(root), "bytes": u.total, "limit_bytes": u.limit, "entries": u.entries,
                 "by_kind": u.by_kind, **({"removed": len(cleared.removed), "freed_bytes": cleared.freed}
                                          if cleared is not None else {})})
    return 0


# -- project ------------------------------------------------------------------------------------



def _progress_lines(verb: str, quiet: bool = False, sizes: bool = True):
    """A ``progress(done, total)`` that prints one line per tenth of the way."""
    last = [-1]

    def progress(done: int, total: int) -> None:
        step = 10 if total <= 0 else min(10, done * 10 // total)
        if quiet or step <= last[0]:
            return
        last[0] = step
        _say(f"{verb}: {step * 10}%" + (f" ({size_text(done if total > 0 else 0)} of {size_text(total)})" if sizes else ""))

    return progress


def _cmd_project_save(args: argparse.Namespace) -> int:
    from tl_core.projects import read_manifest, runs_of_data

    run_dirs = list(args.runs)
    if args.all_runs:
        found = runs_of_data(args.data, args.runs_dir)
        known = {os.path.realpath(r) for r in run_dirs}
        run_dirs += [str(r) for r in found if os.path.realpath(r) not in known]
        others = len(tl_core.list_runs(args.runs_dir)) - len(found)
        if not found:
            _say(f"No finished run in the runs folder was trained on {args.data}; saving the pictures only.")
        if others > 0:
            _say(f"{others} other run(s) in the runs folder were left out (trained on other pictures, or still "
                 "training).")
    path = tl_core.save_project(args.out, args.data, run_dirs, progress=_progress_lines("Saving", args.quiet),
                                set_aside=not args.leave_out_set_aside)
    manifest = read_manifest(path)
    data = manifest["data"]
    size = path.stat().st_size
    _say(f"Saved {data['images']} pictures ({len(data['classes'])} categories) and {len(manifest['runs'])} run(s) "
         f"to {path} ({size_text(size)}).")
    if data.get("set_aside"):
        _say(f"It also holds the {data['set_aside']} picture(s) you set aside, so undo works where it is opened "
             "(--leave-out-set-aside saves without them).")
    for item in data.get("left_out") or []:
        _say(f"  left out {item['path']}: {item['reason']}")
    _print_json({"path": str(path), "data_root": os.path.abspath(args.data), "runs": [r["id"] for r in manifest["runs"]],
                 "images": data["images"], "bytes": size, "unpacked_bytes": manifest["total_bytes"],
                 "left_out": data.get("left_out") or [], "set_aside": data.get("set_aside") or 0})
    return 0


def _cmd_project_open(args: argparse.Namespace) -> int:
    opened = tl_core.open_project(args.file, args.dest, progress=_progress_lines("Unpacking and checking", args.quiet, sizes=False))
    out = opened.to_dict()
    _say(f"Opened {args.file} into {opened.folder}: {out['images']} pictures in {opened.data_root}, "
         f"{len(opened.run_dirs)} run(s).")
    for run in opened.run_dirs:
        _say(f"  run {run}")
    _print_json({**out, "file": os.path.abspath(args.file)})
    return 0


# -- parser -------------------------------------------------------------------------------------

def _at_least_one(text: str) -> int:
    """A whole number of at least 1, checked when the flags are read."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value}")
    return value


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that describe a run, shared by ``tl train`` and ``tl estimate`` (one meaning each)."""
    parser.add_argument("data_dir")
    parser.add_argument("--model", default="tf_efficientnet_lite0", help="timm model name from the catalogue")
    parser.add_argument("--weights", default="auto", help="auto | offline | none | PATH to a weights file")
    parser.add_argument("--freeze", default="head", help="head | last:N | none | scratch")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    parser.add_argument("--no-feature-cache", action="store_true", help="recompute frozen layers every epoch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tl", description="Transfer Lab: teach a pretrained image model your own "
                                                       "categories, from the command line.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on a folder with one subfolder per class")
    _add_run_arguments(t)
    t.add_argument("--runs-dir", default=None, help="where run folders go (default: ./runs or $TL_RUNS_DIR)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="learning rate (default depends on --freeze)")
    t.add_argument("--augment", choices=["none", "light", "strong"], default=None)
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (0 = off)")
    t.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: all cores, shared among the processes)")
    t.add_argument("--nproc", type=_at_least_one, default=1, metavar="N",
                   help="train in N processes on this computer (data-parallel, one per GPU, or gloo on the CPU); "
                        "the same as torchrun --standalone --nproc-per-node N -m tl_core train ... (ignored when "
                        "torchrun started this command)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("estimate", help="how long training would take on this computer (nothing is trained)")
    _add_run_arguments(s)
    s.set_defaults(func=_cmd_estimate)

    e = sub.add_parser("evaluate", help="measure a trained run on a labelled folder")
    e.add_argument("run_dir")
    e.add_argument("data_dir", nargs="?", default=None,
                   help="folder with one subfolder per class (default: the run's validation images)")
    e.set_defaults(func=_cmd_evaluate)

    c = sub.add_parser("check", help="report every problem in a data folder")
    c.add_argument("data_dir")
    c.add_argument("--no-outliers", action="store_true",
                   help="skip looking for pictures unlike the rest of their category (no pass of the network)")
    c.set_defaults(func=_cmd_check)

    pr = sub.add_parser("predict", help="classify images with a trained run or exported bundle")
    pr.add_argument("run_dir")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--top-k", type=_at_least_one, default=3, help="how many categories to list per picture")
    pr.set_defaults(func=_cmd_predict)

    x = sub.add_parser("export", help="export a trained run")
    x.add_argument("run_dir")
    x.add_argument("--format", default="safetensors", choices=["safetensors", "bundle", "onnx", "torchscript"])
    x.add_argument("--out", required=True)
    x.set_defaults(func=_cmd_export)

    pj = sub.add_parser("project", help="save data, runs and choices as one file, or open such a file")
    pjs = pj.add_subparsers(dest="project_command", required=True)
    ps = pjs.add_parser("save", help="write the data folder's pictures and runs into one .tlproj file")
    ps.add_argument("out", help="the file to write (.tlproj is added when there is no extension), or a folder")
    ps.add_argument("--data", required=True, metavar="DATA_DIR", help="the data folder (one subfolder per class)")
    ps.add_argument("--run", dest="runs", action="append", default=[], metavar="RUN_DIR",
                    help="a run folder trained on DATA_DIR (repeat for more)")
    ps.add_argument("--all-runs", action="store_true", help="every run in --runs-dir trained on DATA_DIR")
    ps.add_argument("--runs-dir", default=None, help="where --all-runs looks (default: ./runs or $TL_RUNS_DIR)")
    ps.add_argument("--leave-out-set-aside", action="store_true",
                    help="do not save the pictures you set aside (saved by default, so undo works elsewhere)")
    ps.add_argument("--quiet", action="store_true", help="no progress lines")
    ps.set_defaults(func=_cmd_project_save)
    po = pjs.add_parser("open", help="unpack a .tlproj file into a new folder, ready to evaluate and predict")
    po.add_argument("file")
    po.add_argument("--dest", default=".", help="where the new project folder goes (default: here)")
    po.add_argument("--quiet", action="store_true", help="no progress lines")
    po.set_defaults(func=_cmd_project_open)

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--runs-dir", default=None)
    r.set_defaults(func=_cmd_runs)
    ca = sub.add_parser("cache", help="how much disk the cache uses (decoded pictures, features); --clear empties it")
    ca.add_argument("--clear", action="store_true",
                    help="remove what can be made again (decoded pictures, features, prepared downloads)")
    ca.set_defaults(func=_cmd_cache)
    _add_lab_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv   # tl train --nproc N starts the same command in N processes
    _STDOUT_GONE.clear()
    try:
        status = args.func(args)
        return EXIT_PIPE if _STDOUT_GONE.is_set() else status
    except TransferLabError as err:
        if args.debug:
            raise
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away outside _say (a library printing): no message to give
        _silence_stdout()
        return EXIT_PIPE
    except OSError as err:  # a file or folder the command needs cannot be used: the system's reason, briefly
        if args.debug or os.environ.get("TL_DEBUG"):
            raise
        print(f"Error: {_os_error_words(err)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:  # a bug: say so plainly, keep the traceback behind --debug
        if args.debug or os.environ.get("TL_DEBUG"):
            raise
        print(f"Unexpected error ({type(err).__name__}: {err}). Run again with --debug for details.",
              file=sys.stderr)
        return EXIT_BUG


def _os_error_words(err: OSError) -> str:
    where = f" ({short_path(err.filename)})" if err.filename else ""
    if disk_full(err):
        return f"The disk is full{where}. Free some space, or choose a folder on another disk."
    if err.errno == errno.ENAMETOOLONG:
        return f"A path is too long for this computer{where}. Use a folder with a shorter path."
    return f"{err.strerror or err}{where}. Check the path and that you are allowed to use it."


# -- lab ----------------------------------------------------------------------------------------

def _add_lab_parser(sub) -> None:
    """``tl lab scratch|data-size|layers|models DATA_DIR`` and ``tl lab list``."""
    lab = sub.add_parser("lab", help="experiments that show what transfer learning does, on your pictures")
    kinds = lab.add_subparsers(dest="experiment", required=True, metavar="{scratch,data-size,layers,models,list}")
    helps = {"scratch": "the same training from ImageNet weights and from random weights",
             "data-size": "accuracy against pictures per category (growing shares, several picks)",
             "layers": "one run per freeze preset: accuracy, overfitting gap and time",
             "models": "one run per model: accuracy, time and size"}
    for kind, text in helps.items():
        k = kinds.add_parser(kind, help=text)
        k.add_argument("data_dir")
        if kind != "models":
            k.add_argument("--model", default=None, help="timm model name from the catalogue")
        k.add_argument("--epochs", type=int, default=None, help="passes over the pictures, the same for every run")
        k.add_argument("--seed", type=int, default=0)
        k.add_argument("--weights", default="auto", help="auto | offline | PATH to a weights file")
        k.add_argument("--image-size", type=int, default=None)
        k.add_argument("--val-fraction", type=float, default=0.2)
        k.add_argument("--experiments-dir", default=None,
                       help="where experiment folders go (default: ./experiments or $TL_EXPERIMENTS_DIR)")
        k.add_argument("--quiet", action="store_true", help="only the final lines")
        k.set_defaults(func=_cmd_lab)
    ds = kinds.choices["data-size"]
    ds.add_argument("--fractions", default="0.1,0.25,0.5,1", help="shares of each category to train on")
    ds.add_argument("--repeats", type=int, default=3, help="runs per share, each with its own pick")
    ds.add_argument("--scratch", action="store_true", help="also one from-scratch run per share")
    kinds.choices["layers"].add_argument("--presets", default="head,last:1,last:2,none",
                                         help="freeze presets to compare: head | last:N | none")
    kinds.choices["models"].add_argument("--models", default=None,
                                         help="comma-separated catalogue names (default: the offline-ready ones)")
    ls = kinds.add_parser("list", help="list the experiments on disk")
    ls.add_argument("--experiments-dir", default=None)
    ls.set_defaults(func=_cmd_lab_list)


def _lab_experiment(args: argparse.Namespace):
    from tl_core.lab import make_experiment

    settings = {"seed": args.seed, "weights": args.weights, "image_size": args.image_size,
                "val_fraction": args.val_fraction}
    for key in ("model", "epochs"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    if args.experiment == "data-size":
        settings.update(fractions=args.fractions, repeats=args.repeats, with_scratch=args.scratch)
    elif args.experiment == "layers":
        settings["presets"] = args.presets
    elif args.experiment == "models" and args.models:
        settings["models"] = args.models
    return make_experiment(args.experiment, args.data_dir, **settings)


def _cmd_lab(args: argparse.Namespace) -> int:
    from tl_core.lab.words import seconds_text

    created = tl_core.create_experiment(_lab_experiment(args), args.experiments_dir)  # checked: nothing made before
    _say(f"Experiment folder: {created.path}")
    last = {"current": None, "tenth": -1}

    def progress(p) -> None:
        tenth = int(p.fraction * 10)
        if args.quiet or (p.current == last["current"] and tenth <= last["tenth"]):
            return
        last["current"], last["tenth"] = p.current, tenth
        left = f", about {seconds_text(p.eta_seconds)} left" if p.eta_seconds is not None else ""
        _say(f"{p.fraction:4.0%}{left}  {p.current}")

    with _first_ctrl_c_stops() as stop:   # keeps the finished runs
        results = created.run(stop, progress)
    if results["status"] == "failed":
        print(f"Error: {results['message']}", file=sys.stderr)
    else:
        _say(results["message"])
    _say(results.get("conclusion", ""))
    for line in results.get("categories") or []:
        _say(f"  {line['category']}: {line['sentence']}")
    if results.get("scratch_conclusion"):
        _say(results["scratch_conclusion"])
    _print_json(results)
    if results["status"] == "failed":
        return EXIT_FAILED
    return EXIT_INTERRUPTED if results["status"] == "stopped" and stop.is_set() else 0


def _cmd_lab_list(args: argparse.Namespace) -> int:
    rows = tl_core.list_experiments(args.experiments_dir)
    for r in rows:
        _say(f"{r['experiment_id']}  {r['state']:9s}  {r['kind']:9s}  {r.get('data_dir') or ''}")
    _print_json({"experiments": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
