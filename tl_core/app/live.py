"""What the Train page draws about a run, read from its folder: progress, curves, warnings, time left.

It reads only the run folder (``status.json`` and ``metrics.jsonl``, see :mod:`tl_core.runs.events`),
so a refresh, a second tab or a restarted server shows the same as the tab that pressed Start."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tl_core.app.formatting import format_seconds
from tl_core.runs import ACTIVE_STATES, RunFolder
from tl_core.runs.events import BATCH_END, EPOCH_END, FIT_END, FIT_START, PREPARE, WARNING, stage_label


@dataclasses.dataclass
class LiveView:
    """Everything the Train page draws about a run, read from its folder in one go."""

    run_dir: str
    state: str
    message: str
    epoch: int
    epochs: int
    fraction: float                  # 0..1 of the whole run
    eta_seconds: float | None
    images_per_sec: float | None
    prepare: dict | None              # latest on_prepare: stage, done, total (while preparing)
    epoch_logs: list[dict]
    batch_events: list[dict]
    warnings: list[dict]
    info: dict | None                 # on_fit_start payload
    result: dict | None               # on_fit_end payload
    elapsed_seconds: float | None
    segments: list[dict] = dataclasses.field(default_factory=list)   # the one bar's labelled parts

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def bar_fraction(self) -> float:
        """The one bar for the whole run: checking, reading (and the frozen layers), then the
        epochs, each a segment sized by its expected time, so it only ever moves forward."""
        return self.fraction

    def epoch_text(self) -> str:
        """The one epoch number every part of the page shows: epochs finished of epochs planned."""
        return f"{self.epoch} of {self.epochs} epochs done" if self.epochs else "–"

    def progress_text(self) -> str:
        if self.state == "queued":
            return "Waiting to start…"
        parts = []
        if self.active and self.info is None:
            stage = (self.prepare or {}).get("stage")
            label = stage_label(stage) if stage else "Preparing the data and the model"
            done, total = (self.prepare or {}).get("done"), (self.prepare or {}).get("total")
            parts.append(f"Preparing: {label}" + (f" ({done} of {total})" if stage and total else ""))
        else:
            parts.append(self.epoch_text())
            if self.images_per_sec:
                parts.append(f"{self.images_per_sec:,.0f} images/s")
        if self.active and self.eta_seconds is not None:
            parts.append("almost done" if self.eta_seconds < 1 else f"about {format_seconds(self.eta_seconds)} left")
        return " · ".join(parts)


# The parts of a run in order, with the words the bar shows under each.
SEGMENT_LABELS = {"check": "Check pictures", "read": "Read pictures once", "train": "Train"}


def _expected(run: RunFolder) -> dict | None:
    """The run's expected seconds per part, from this computer's measurement (never measures):
    {"check", "read", "train"} or None."""
    key = str(run.path)
    hit = _EXPECTED.get(key)
    if hit is not None and (hit[1] is not None or time.time() - hit[0] < 15):  # not measured yet: ask again later
        return hit[1]
    expected = None
    try:
        from tl_core.runtime.device import cpu_cores
        from tl_core.training.estimate import READS_PER_IMAGE, estimate

        config = run.config()
        est = estimate(config, measure_now=False)
        if est is not None:
            n_all = est.n_train + est.n_val
            check = n_all * est.read_seconds / max(1, min(cpu_cores(), 8))
            read = max(est.prepare_seconds - check, 0.0) if READS_PER_IMAGE > 1 else est.prepare_seconds
            expected = {"check": check, "read": read, "train": est.epoch_seconds * max(1, config.train.epochs)}
    except Exception:  # noqa: BLE001 - without an estimate the bar still moves, just less evenly
        expected = None
    _EXPECTED[key] = (time.time(), expected)
    return expected


_EXPECTED: dict[str, tuple[float, dict | None]] = {}
_DEFAULT_SHARES = {"check": 0.15, "read": 0.35, "train": 0.5}


def _segments(expected: dict | None, prepare: dict | None, info: dict | None, train_fraction: float,
              state: str) -> tuple[list[dict], float]:
    """The bar's parts with their share of the run and how far each is, and the overall fraction."""
    if expected and sum(expected.values()) > 0:
        total = sum(expected.values())
        shares = {k: max(v / total, 0.03) for k, v in expected.items()}   # every part stays visible
        norm = sum(shares.values())
        shares = {k: v / norm for k, v in shares.items()}
    else:
        shares = dict(_DEFAULT_SHARES)
    stage = (prepare or {}).get("stage")
    stage_done = ((prepare or {}).get("done") or 0) / max((prepare or {}).get("total") or 0, 1)
    if info is not None or state == "finished":
        done = {"check": 1.0, "read": 1.0, "train": 1.0 if state == "finished" else train_fraction}
    elif stage == "check":
        done = {"check": stage_done, "read": 0.0, "train": 0.0}
    elif stage in ("decode", "features"):
        done = {"check": 1.0, "read": stage_done, "train": 0.0}
    else:
        done = {"check": 0.0, "read": 0.0, "train": 0.0}
    segments = [{"part": k, "label": SEGMENT_LABELS[k], "share": shares[k], "done": min(max(done[k], 0.0), 1.0)}
                for k in ("check", "read", "train")]
    overall = sum(s["share"] * s["done"] for s in segments)
    return segments, min(max(overall, 0.0), 1.0)


def live_view(run_dir: str | Path) -> LiveView:
    run = RunFolder(Path(run_dir))
    status = run.status()
    events = run.events()
    info = next((e.get("info") for e in events if e.get("event") == FIT_START), None)
    result = next((e.get("logs") for e in reversed(events) if e.get("event") == FIT_END), None)
    epoch_logs = [dict(e["logs"], epoch=e["epoch"]) for e in events if e.get("event") == EPOCH_END]
    batches = [e for e in events if e.get("event") == BATCH_END]
    warnings = [e for e in events if e.get("event") == WARNING]
    prepares = [e for e in events if e.get("event") == PREPARE]
    prepare = prepares[-1] if prepares and info is None else None
    state = status.get("state", "failed")
    epochs = int(status.get("epochs") or (info or {}).get("epochs") or (run_epochs(run) or 0))
    epoch = len(epoch_logs)
    train_fraction = 0.0
    ips = None
    if batches:
        last = batches[-1].get("logs", {})
        train_fraction = float(last.get("progress") or 0.0)
        ips = last.get("images_per_sec")
    if epochs:
        train_fraction = max(train_fraction, epoch / epochs)
    if epoch_logs:
        ips = ips or epoch_logs[-1].get("images_per_sec")
    segments, fraction = _segments(_expected(run) if state in ACTIVE_STATES else None, prepare, info,
                                   train_fraction, state)
    eta = _time_left(run, status, events, epoch_logs, info, fraction) if state in ACTIVE_STATES else None
    started = status.get("started_at") or status.get("created_at")
    ended = status.get("finished_at") if state not in ACTIVE_STATES else time.time()
    elapsed = (ended - started) if started and ended else None
    return LiveView(run_dir=str(run.path), state=state, message=status.get("message", ""), epoch=epoch,
                    epochs=epochs, fraction=min(max(fraction, 0.0), 1.0), eta_seconds=eta, images_per_sec=ips,
                    prepare=prepare, epoch_logs=epoch_logs, batch_events=batches, warnings=warnings, info=info,
                    result=result, elapsed_seconds=elapsed, segments=segments)


def _time_left(run: RunFolder, status: dict, events: list[dict], epoch_logs: list[dict], info: dict | None,
               fraction: float) -> float | None:
    """Seconds left, from the first second: while training, from the epochs' own times; before
    that, the expected time left scaled by how the run is keeping up with the estimate (or, with
    no estimate, by the pace so far)."""
    if epoch_logs and epoch_logs[-1].get("eta_seconds") is not None:
        eta = float(epoch_logs[-1]["eta_seconds"])
        last_t = next((e.get("time") for e in reversed(events) if e.get("event") == EPOCH_END), None)
        if last_t:
            per_epoch = epoch_logs[-1].get("epoch_seconds") or 0
            eta = max(0.0, eta - min(per_epoch, time.time() - last_t))
        return eta
    started = status.get("started_at") or status.get("created_at")
    if not started:
        return None
    spent = max(0.0, time.time() - started)
    expected = _expected(run)
    if expected:
        total = sum(expected.values())
        pace = min(max(spent / max(fraction * total, 1e-9), 0.5), 3.0) if fraction > 0.05 else 1.0
        return max(0.0, (1.0 - fraction) * total * pace)
    if fraction > 0.02:
        return spent * (1 - fraction) / fraction
    return None


def run_epochs(run: RunFolder) -> int | None:
    try:
        return run.config().train.epochs
    except Exception:
        return None
