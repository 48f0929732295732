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

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def bar_fraction(self) -> float:
        """What a progress bar should show: the preparation stage while preparing, else the run."""
        if self.prepare is not None and self.active and self.info is None:
            total = max(int(self.prepare.get("total") or 0), 1)
            return min(max(int(self.prepare.get("done") or 0) / total, 0.0), 1.0)
        return self.fraction

    def progress_text(self) -> str:
        if self.state == "queued":
            return "Waiting to start…"
        if self.prepare is not None and not self.epoch_logs and self.info is None:
            label = stage_label(self.prepare.get("stage"))
            return f"Preparing: {label} ({self.prepare.get('done', 0)} of {self.prepare.get('total', 0)})"
        parts = [f"Epoch {min(self.epoch + (1 if self.active else 0), max(self.epochs, 1))} of {self.epochs}"
                 if self.active else f"{self.epoch} of {self.epochs} epochs done"]
        if self.images_per_sec:
            parts.append(f"{self.images_per_sec:,.0f} images/s")
        if self.active and self.eta_seconds is not None:
            parts.append("almost done" if self.eta_seconds < 1 else f"about {format_seconds(self.eta_seconds)} left")
        return " · ".join(parts)


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
    fraction = 0.0
    ips = None
    if batches:
        last = batches[-1].get("logs", {})
        fraction = float(last.get("progress") or 0.0)
        ips = last.get("images_per_sec")
    if epochs:
        fraction = max(fraction, epoch / epochs)
    if epoch_logs:
        ips = ips or epoch_logs[-1].get("images_per_sec")
    eta = None
    if state in ACTIVE_STATES:
        if epoch_logs and epoch_logs[-1].get("eta_seconds") is not None:
            eta = float(epoch_logs[-1]["eta_seconds"])
            # subtract the time spent in the current epoch so far
            last_t = next((e.get("time") for e in reversed(events) if e.get("event") == EPOCH_END), None)
            if last_t:
                per_epoch = epoch_logs[-1].get("epoch_seconds") or 0
                eta = max(0.0, eta - min(per_epoch, time.time() - last_t))
        elif batches and info is not None and fraction > 0:
            start = next((e.get("time") for e in events if e.get("event") == FIT_START), None)
            if start:
                spent = time.time() - start
                eta = spent * (1 - fraction) / fraction
    else:
        fraction = 1.0 if state == "finished" else fraction
    started = status.get("started_at") or status.get("created_at")
    ended = status.get("finished_at") if state not in ACTIVE_STATES else time.time()
    elapsed = (ended - started) if started and ended else None
    return LiveView(run_dir=str(run.path), state=state, message=status.get("message", ""), epoch=epoch,
                    epochs=epochs, fraction=min(max(fraction, 0.0), 1.0), eta_seconds=eta, images_per_sec=ips,
                    prepare=prepare, epoch_logs=epoch_logs, batch_events=batches, warnings=warnings, info=info,
                    result=result, elapsed_seconds=elapsed)


def run_epochs(run: RunFolder) -> int | None:
    try:
        return run.config().train.epochs
    except Exception:
        return None
