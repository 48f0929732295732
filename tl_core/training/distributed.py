"""Data-parallel training on PyTorch's own engine: the plumbing, kept out of the loop.

``torchrun --nproc-per-node N -m tl_core train ...`` (or ``tl train --nproc N``, which starts the same
launcher) runs N copies of the command; torchrun (``torch.distributed.run``) gives each one its ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the address where they meet, and ends all of them when one fails.
:func:`session` turns that environment into a process group (NCCL between GPUs, gloo on the CPU) and
a :class:`Dist` that the loop asks for its few collective steps:

* the data check and the split are made once, by rank 0, and sent to the others (:meth:`Dist.from_main`);
* each process reads its block of the pictures; with frozen layers it runs them through the frozen
  prefix and the blocks' features are gathered (:meth:`Dist.gather_rows`), so every process holds all
  features and each epoch takes its share of them as :class:`~torch.utils.data.distributed.DistributedSampler`
  deals them; when everything trains, each process decodes and keeps only its own share of the pictures
  (:meth:`Dist.deal`: every category in it, in the same proportions);
* the trainable part runs under :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged);
  the batch size stays the size of one step of the whole run, so each process takes 1/N of it;
* losses, accuracies and counts are summed over the processes (:meth:`Dist.sum`); decisions that must be
  the same everywhere (stop, early stop, the best epoch) are made from those sums;
* only rank 0 writes the run folder and speaks (:class:`RankZeroOnly` around the caller's callbacks);
* a process that fails leaves its message in the launcher's store (:meth:`Dist.report_failure`); rank 0,
  whose next collective step then fails (or whom the launcher ends with SIGTERM), records the run as
  failed with that message (:meth:`Dist.peer_failure`). Every collective step has a timeout
  (``TL_DIST_TIMEOUT`` seconds, default 1800), so a process that hangs cannot hang the others forever.

World size 1 (plain ``tl train``, the app, the library) never creates a process group: every helper is
then the identity and the loop runs exactly as it always did.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from tl_core.errors import ConfigError, RunError, TransferLabError
from tl_core.training.callbacks import Callback

TIMEOUT_ENV = "TL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
FAIL_RANK_ENV = "TL_TEST_FAIL_RANK"   # tests: this rank fails on purpose (see InjectedFailure)
FAIL_AT_ENV = "TL_TEST_FAIL_AT"       # "epoch" (after epoch 1, the default), "epoch:N" or "prepare"
PEER_WAIT_S = 3.0                     # how long a failing rank 0 waits for another process's message


class PeerStopped(Exception):
    """This process was ended by the launcher (SIGTERM), which does that when another process failed."""


def env_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` as the launcher set them; ``(0, 1)`` for a plain process."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        return 0, 1


@dataclass
class Dist:
    """This process's place in the run. ``Dist()`` is the single process: every helper is the identity."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))   # where collectives run
    failing: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- reductions (identity for one process) ----------------------------------------------------
    def sum(self, values: Sequence[float]) -> list:
        """The element-wise sum over the processes of a few numbers (losses, correct answers, counts)."""
        if not self.active:
            return list(values)
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over the processes of a tensor, on the tensor's own device."""
        if not self.active:
            return t
        out = t.detach().to(self.device, copy=True)
        torch.distributed.all_reduce(out)
        return out.to(t.device)

    def mean(self, value: float) -> float:
        return value if not self.active else self.sum([value])[0] / self.world_size

    def any(self, flag: bool) -> bool:
        """True everywhere when it is true in any process (a stop, a fallback, a cache miss)."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def max(self, n: int) -> int:
        if not self.active:
            return n
        t = torch.tensor([n], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    # -- sharing ------------------------------------------------------------------------------------
    def from_main(self, make: Callable[[], Any]) -> Any:
        """``make()`` on rank 0, its result sent to every process (the data check, the split)."""
        if not self.active:
            return make()
        box = [make() if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def main_first(self, make: Callable[[], Any]) -> Any:
        """``make()`` on rank 0 first, then on the others (filling a cache once, e.g. converted weights)."""
        if not self.active:
            return make()
        if self.is_main:
            out = make()
            self.barrier()
            return out
        self.barrier()
        return make()

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def gather_objects(self, obj: Any) -> list:
        if not self.active:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Every process's rows of ``x`` (any number, even none), in rank order, in every process, on
        ``x``'s device. With :meth:`block` shards that is the original order."""
        if not self.active:
            return x
        metas = self.gather_objects((tuple(x.shape), str(x.dtype).replace("torch.", "")))
        shapes = [m[0] for m in metas]
        widest = next((s for s in shapes if s[0] > 0), shapes[0])[1:]
        dtype = getattr(torch, metas[0][1])
        rows = max(s[0] for s in shapes)
        padded = torch.zeros((rows, *widest), dtype=dtype, device=self.device)
        if len(x):
            padded[:len(x)] = x.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([p[:s[0]] for p, s in zip(parts, shapes)]).to(x.device)

    # -- shares of the data -------------------------------------------------------------------------
    def block(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items (sizes differ by one at most)."""
        if not self.active:
            return slice(0, n)
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def deal(self, n: int) -> slice:
        """This process's share of ``n`` items dealt like cards (every N-th from its rank on): a share
        of pictures sorted by category then holds every category in the same proportion, which
        training on its own share needs (a batch of one category would defeat BatchNorm)."""
        return slice(0, n) if not self.active else slice(self.rank, n, self.world_size)

    def stride(self, n: int) -> torch.Tensor | None:
        """The indices of ``n`` items this process evaluates when every process holds all of them."""
        return None if not self.active else torch.arange(self.rank, n, self.world_size)

    def rank_batch(self, batch_size: int) -> int:
        """One process's part of a step of ``batch_size`` pictures (the whole run's step stays the same)."""
        return batch_size if not self.active else max(1, math.ceil(batch_size / self.world_size))

    def rank_count(self, n_local: int, sharded: bool) -> int:
        """Pictures each process trains on per epoch: all of them alone; ``ceil(n / N)`` of a set every
        process holds (as DistributedSampler pads it); the largest block when each holds its own."""
        if not self.active:
            return n_local
        return self.max(n_local) if sharded else math.ceil(n_local / self.world_size)

    def epoch_sampler(self, n: int, n_rank: int, seed: int, sample_p: torch.Tensor | None,
                      generator: torch.Generator, sharded: bool) -> Callable[[int], torch.Tensor] | None:
        """``order(epoch)``: the indices into this process's training inputs for one epoch, ``n_rank`` of
        them in every process (the same number of steps everywhere, or the gradients' sums would wait
        forever). ``None`` for one process: the loop's own order is kept."""
        if not self.active:
            return None
        if not sharded and sample_p is None:   # every process holds every input: DistributedSampler's deal
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                         seed=seed)

            def order(epoch: int) -> torch.Tensor:
                sampler.set_epoch(epoch)
                return torch.tensor(list(iter(sampler)), dtype=torch.long)
            return order

        def order(epoch: int) -> torch.Tensor:
            if sharded:   # this process's own share, in its own order (its generator is seeded per rank)
                drawn = (torch.multinomial(sample_p, n, replacement=True, generator=generator)
                         if sample_p is not None else torch.randperm(n, generator=generator))
                return _pad(drawn, n_rank)
            g = torch.Generator().manual_seed(seed + epoch)   # the same draw in every process, then dealt
            drawn = _pad(torch.multinomial(sample_p, n, replacement=True, generator=g), n_rank * self.world_size)
            return drawn[self.rank::self.world_size]
        return order

    def wrap(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module | None:
        """The trainable part under DistributedDataParallel: ``forward`` (the layers after the frozen
        prefix, or the whole network) with the model's trainable parameters, whose gradients are then
        averaged over the processes in every backward pass. Rank 0's weights are copied to all first."""
        if not self.active:
            return None
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(TrainablePart(model, forward), device_ids=ids)

    def check_in_step(self, model: nn.Module) -> None:
        """Every process must end with the same trained weights (DDP averages the gradients, so they
        do); if not, the run is not what it claims to be, and it fails with a plain message."""
        if not self.active:
            return
        with torch.no_grad():
            params = [p.detach().double() for p in model.parameters() if p.requires_grad]
            mine = [float(sum(p.sum() for p in params)), float(sum((p * p).sum() for p in params))]
        for rank, theirs in enumerate(self.gather_objects(mine)):
            if not all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip(mine, theirs)):
                raise RunError(f"The training processes ended with different weights (rank {rank} differs from "
                               f"rank {self.rank}), so the run cannot be trusted. This is a bug in Transfer Lab: "
                               "please report it with the run folder.")

    # -- failures -----------------------------------------------------------------------------------
    def report_failure(self, message: str, detail: str | None = None) -> None:
        """Leave this process's failure in the launcher's store, where rank 0 looks for it."""
        self.failing = True
        store = _store() if self.active else None
        if store is None:
            return
        try:
            store.set(_failure_key(self.rank), json.dumps({"rank": self.rank, "host": socket.gethostname(),
                                                           "message": message, "detail": detail}))
        except Exception:  # noqa: BLE001 - the store may be gone with the launcher: the exit code remains
            pass

    def peer_failure(self, wait_s: float = PEER_WAIT_S) -> dict | None:
        """Another process's failure ``{"rank", "host", "message", "detail"}``, when one was reported
        (waiting up to ``wait_s`` for it: its message is written before it exits)."""
        self.failing = True
        store = _store() if self.active else None
        if store is None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            for rank in range(self.world_size):
                if rank == self.rank:
                    continue
                try:
                    if store.check([_failure_key(rank)]):
                        return json.loads(store.get(_failure_key(rank)))
                except Exception:  # noqa: BLE001 - no store, no message
                    return None
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def failure_words(self, peer: dict) -> str:
        host = f" on {peer['host']}" if peer.get("host") and peer["host"] != socket.gethostname() else ""
        return (f"One of the {self.world_size} training processes (rank {peer['rank']}{host}) failed: "
                f"{peer['message']}")

    def lost_words(self, err: BaseException) -> str:
        return (f"One of the {self.world_size} training processes stopped without saying why (it may have run out "
                f"of memory or been ended), so the run was stopped; the launcher's messages say which one. "
                f"({type(err).__name__}: {str(err)[:300]})")


def _pad(order: torch.Tensor, n: int) -> torch.Tensor:
    """``order`` cut or repeated to ``n`` entries (as DistributedSampler pads a set that does not divide)."""
    if len(order) >= n:
        return order[:n]
    return order.repeat(math.ceil(n / len(order)))[:n]


def _failure_key(rank: int) -> str:
    return f"tl_failure/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{rank}"


def _store():
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - an older or newer PyTorch without it: failures keep their exit code only
        return None


class TrainablePart(nn.Module):
    """A module whose forward is ``forward`` and whose parameters are ``model``'s, for DDP: the
    frozen prefix's features go in, the logits come out. DDP keeps only the trainable parameters."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.fn = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class RankZeroOnly(Callback):
    """Passes the events to ``callback`` in rank 0 only (printing, recording): the other processes train
    in silence. The callback still sees the trainer, so it can read it."""

    def __init__(self, callback: Callback, dist: Dist):
        self.callback = callback
        self.enabled = dist.is_main

    def set_trainer(self, trainer):
        self.trainer = trainer
        self.callback.set_trainer(trainer)

    def on_fit_start(self, info):
        if self.enabled:
            self.callback.on_fit_start(info)

    def on_prepare(self, stage, done, total):
        if self.enabled:
            self.callback.on_prepare(stage, done, total)

    def on_batch_end(self, step, logs):
        if self.enabled:
            self.callback.on_batch_end(step, logs)

    def on_epoch_end(self, epoch, logs):
        if self.enabled:
            self.callback.on_epoch_end(epoch, logs)

    def on_warning(self, kind, message):
        if self.enabled:
            self.callback.on_warning(kind, message)

    def on_fit_end(self, logs):
        if self.enabled:
            self.callback.on_fit_end(logs)


class InjectedFailure(Callback):
    """For tests of failure handling: this process fails on purpose, during preparation ("prepare") or
    at the end of an epoch ("epoch": the first, "epoch:N": the N-th)."""

    def __init__(self, rank: int, at: str):
        self.rank, self.at = rank, at

    def _fail(self):
        raise TransferLabError(f"A failure was injected for testing in rank {self.rank} ({FAIL_RANK_ENV}).")

    def on_prepare(self, stage, done, total):
        if self.at == "prepare":
            self._fail()

    def on_epoch_end(self, epoch, logs):
        if self.at.startswith("epoch") and epoch == int(self.at.partition(":")[2] or 1):
            self._fail()


def rank_callbacks(callbacks: Iterable[Callback], dist: Dist) -> list[Callback]:
    """The caller's callbacks as this process runs them: as they are for one process, else heard in
    rank 0 only; plus the test-only injected failure when ``TL_TEST_FAIL_RANK`` names this rank."""
    out = list(callbacks) if dist.is_main else [RankZeroOnly(cb, dist) for cb in callbacks]
    if os.environ.get(FAIL_RANK_ENV) == str(dist.rank) and dist.active:
        out.append(InjectedFailure(dist.rank, os.environ.get(FAIL_AT_ENV, "epoch")))
    return out


# -- the process group ------------------------------------------------------------------------------

_current = Dist()


def current() -> Dist:
    """This process's :class:`Dist` (the single process outside a :func:`session`)."""
    return _current


@contextmanager
def session(device: str = "auto") -> Iterator[Dist]:
    """The process group for the duration of a training, when a launcher started several processes;
    the single process otherwise (no group is made). Re-entrant: an inner session is the outer one.
    A training in a background thread (the app's) is always one process, whatever the environment says."""
    global _current
    rank, world = env_rank_world()
    if _current.active or world <= 1 or threading.current_thread() is not threading.main_thread():
        yield _current
        return
    ctx = _init(rank, world, device)
    previous = _on_sigterm(ctx)
    _current = ctx
    try:
        yield ctx
    finally:
        _current = Dist()
        if previous is not None and not ctx.failing:   # failing: the launcher's SIGTERM waits for the last words
            signal.signal(signal.SIGTERM, previous)
        try:
            torch.distributed.destroy_process_group()
        except Exception:  # noqa: BLE001 - a group broken by a failed peer: nothing left to release
            pass


def _init(rank: int, world: int, device: str) -> Dist:
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda and local_world > torch.cuda.device_count():
        raise ConfigError(f"{local_world} training processes were started on this computer, but it has "
                          f"{torch.cuda.device_count()} GPU(s): each process needs its own. Start at most "
                          f"{torch.cuda.device_count()} (--nproc-per-node), or train on the CPU with --device cpu.")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    try:
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}.") from None
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"This command was started as one of {world} processes (WORLD_SIZE={world}), but "
                          f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set, so the processes "
                          "cannot find each other. Start it with torchrun (or tl train --nproc N).")
    try:
        torch.distributed.init_process_group(backend, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - an address in use, a peer that never came: plain words
        raise RunError(f"The {world} training processes could not connect to each other ({type(err).__name__}: "
                       f"{str(err)[:300]}). Check the --rdzv-endpoint / --master-addr address and port.") from None
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Dist(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world, backend=backend,
                device=dev)


def _on_sigterm(ctx: Dist):
    """torchrun ends the other processes with SIGTERM when one fails: raised as :class:`PeerStopped` (once),
    so rank 0 still records the run as failed with the failing process's message."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if not ctx.failing:
            ctx.failing = True
            raise PeerStopped("ended by the launcher (SIGTERM)")

    return signal.signal(signal.SIGTERM, handler)


def failure_detail(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))
