"""Several processes on one job, on ``torch.distributed``: what ``torchrun`` starts, joined into one group.

:func:`joined` is where a process joins: only when torchrun's environment says it is one of several
(``WORLD_SIZE`` > 1, with ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``); otherwise it
gives None and touches nothing. Inside, :class:`Ranks` says which process this is and exchanges Python
objects between all of them.

The exchange protocol. Every synchronisation is one ``all_gather_object``: each rank sends a message,
every rank receives all of them. A message is either a payload (:meth:`Ranks.round`) or a stop
(:meth:`Ranks.stop`: an exit code and one line saying why). A rank that fails sends its stop at the
point where the others make their next exchange, whatever that is, so no rank waits in a collective
the others never enter; a rank that receives a stop raises :class:`Stopped`, and from then on no rank
exchanges again. Every collective has a timeout (``DROPBLOCK_DIST_TIMEOUT`` seconds, default 1800): a
rank that died or hangs makes the others raise :class:`RanksLost` instead of waiting for ever.

Backends: gloo on the CPU; on CUDA ``cpu:gloo,cuda:nccl``, so that GPU tensors would go over NCCL while
the object exchange (small pickles in CPU memory) stays on gloo, whose timeout raises an exception
where NCCL's watchdog would abort the process. Each CUDA process takes the GPU ``LOCAL_RANK`` (modulo
the GPUs present, so two ranks may share one GPU for a check).

Threads: K processes on one machine each start torch's intra-op pool with one thread per core, K times
as many threads as cores; they preempt one another in the middle of parallel regions and a small
forward pass can take tens of times longer. Each process therefore gets ``OMP_NUM_THREADS`` threads
when that is set (torchrun sets 1 when it starts several processes) and ``cores // local processes``
otherwise; the previous count is restored on leaving.

Nothing here prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["ENVIRONMENT", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S", "Stop", "Stopped", "RanksLost", "Ranks", "launched",
           "timeout_s", "threads_per_process", "joined"]

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun sets in each process it starts."""
TIMEOUT_ENV = "DROPBLOCK_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Stop:
    """Rank ``rank`` stopped: its exit ``code`` (1 failure, 2 usage, 130 interrupted) and ``line``, the
    one line that says why ('' when there is nothing to add, as for an interruption)."""

    rank: int
    code: int
    line: str


class Stopped(Exception):
    """An exchange found that some rank stopped. ``stops``: every stop of that exchange, in rank order;
    ``payloads``: {rank: payload} of the ranks that sent one; ``code``: the exit code all ranks agree
    on (the first stop's)."""

    def __init__(self, stops: list[Stop], payloads: dict[int, object]) -> None:
        self.stops, self.payloads = stops, payloads
        self.code = stops[0].code
        super().__init__(f"rank {stops[0].rank} stopped with code {self.code}: {stops[0].line}")


class RanksLost(RuntimeError):
    """An exchange failed: a rank died, hangs past the timeout, or the connection broke. One line."""


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """True in a process that torchrun started as one of several (``WORLD_SIZE`` > 1 and all of
    :data:`ENVIRONMENT` set). A ``WORLD_SIZE`` that is not a whole number counts as not launched."""
    env = os.environ if environ is None else environ
    if any(name not in env for name in ENVIRONMENT):
        return False
    try:
        return int(env["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """The collectives' timeout in seconds: ``DROPBLOCK_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`.
    Raises ValueError when the variable is not a number > 0."""
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def threads_per_process(local_world: int, cores: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """torch threads for each of ``local_world`` processes sharing ``cores`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    try:
        wanted = int(env.get("OMP_NUM_THREADS", ""))
        if wanted >= 1:
            return wanted
    except ValueError:
        pass
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, local_world))


class Ranks:
    """This process's place in the group: ``rank`` of ``world``; ``local_rank`` of ``local_world`` on
    this machine; ``stopped`` once an exchange carried a stop (no exchange may follow)."""

    def __init__(self, rank: int, world: int, local_rank: int, local_world: int, exchange=None) -> None:
        self.rank, self.world, self.local_rank, self.local_world = rank, world, local_rank, local_world
        self.stopped = False
        self._all_gather = exchange or _all_gather

    @property
    def leader(self) -> bool:
        """Rank 0: the one that reads and writes the files."""
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This rank's share of ``items``: every ``world``-th from position ``rank`` (strided, so the
        k-th round of every rank covers consecutive items)."""
        return list(items[self.rank::self.world])

    def round(self, payload: object = None) -> list:
        """Send ``payload``; every rank's payload, in rank order. Raises Stopped when some rank sent a
        stop, RanksLost when the exchange fails, KeyboardInterrupt (once the exchange is complete, so the
        ranks stay in step) when Ctrl-C came during it."""
        with _sigint_deferred() as interrupted:
            messages = self._exchange(("ok", payload))
        stops = [Stop(r, m[1], m[2]) for r, m in enumerate(messages) if m[0] == "stop"]
        if stops:
            self.stopped = True
            raise Stopped(stops, {r: m[1] for r, m in enumerate(messages) if m[0] == "ok"})
        _deliver(interrupted)
        return [m[1] for m in messages]

    def stop(self, code: int, line: str = "") -> list[Stop]:
        """Send a stop (this rank ends with ``code``) at the others' next exchange; every stop of that
        exchange, this one included, in rank order. After a stop was seen: no exchange, []."""
        if self.stopped:
            return []
        self.stopped = True
        with _sigint_deferred():  # this rank is stopping already
            messages = self._exchange(("stop", int(code), str(line)))
        return [Stop(r, m[1], m[2]) for r, m in enumerate(messages) if m[0] == "stop"]

    def _exchange(self, message: tuple) -> list:
        if self.stopped and message[0] == "ok":
            raise RuntimeError("no exchange may follow a stop")
        try:
            return self._all_gather(message, self.world)
        except Exception as e:  # gloo: timeouts and closed connections are RuntimeErrors (DistBackendError)
            from dropblock.errors import one_line

            self.stopped = True
            raise RanksLost(f"lost contact with the other ranks ({one_line(e, limit=200)})") from None


@contextmanager
def _sigint_deferred() -> Iterator[list]:
    """SIGINT held for the block (a KeyboardInterrupt inside ``all_gather_object`` would leave this rank
    between its two collectives, out of step with the others), and SIGTERM too when a Python handler is set
    for it (the command line's raises as Ctrl-C does); the list yielded holds the signals that came. The
    previous handlers are restored. Outside the main thread (no signal handlers there): nothing."""
    import signal
    import threading

    came: list = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    held = [signal.SIGINT] + [signal.SIGTERM] * callable(signal.getsignal(signal.SIGTERM))
    previous = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in held}
    try:
        yield came
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _deliver(came: list) -> None:
    """What the held signals would have done: SIGTERM to its own handler, SIGINT as KeyboardInterrupt."""
    import signal

    if signal.SIGTERM in came:
        signal.raise_signal(signal.SIGTERM)
    if signal.SIGINT in came:
        raise KeyboardInterrupt


def _all_gather(message: object, world: int) -> list:
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, message)
    return out


def _cuda_device(local_rank: int):
    import torch

    if not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no CUDA device is available in this process")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextmanager
def joined(device: str = "cpu", environ: Mapping[str, str] | None = None) -> Iterator[Ranks | None]:
    """This process in torchrun's group for the block (None, and nothing touched, when not launched).

    ``device``: "cpu" (gloo) or "cuda" (this process's GPU is made current; see the module docstring).
    The process group is created here unless one exists (then it is used, and left as it was), and
    destroyed on leaving; torch's thread count is set for the block and restored.

    Raises:
        ValueError: a bad ``DROPBLOCK_DIST_TIMEOUT`` or torchrun variable, or CUDA asked for without one.
        RanksLost: the group cannot be formed within the timeout.
    """
    env = os.environ if environ is None else environ
    if not launched(env):
        yield None
        return
    import torch
    import torch.distributed as dist

    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank = int(env["LOCAL_RANK"])
    local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    seconds = timeout_s(env)
    cuda = str(device).split(":")[0] == "cuda"
    if cuda:
        _cuda_device(local_rank)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_process(local_world, environ=env))
    created = not dist.is_initialized()
    try:
        if created:
            try:
                dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", init_method="env://",
                                        rank=rank, world_size=world, timeout=timedelta(seconds=seconds))
            except Exception as e:  # the store could not be reached, or a peer never came
                from dropblock.errors import one_line

                raise RanksLost(f"cannot join the group of {world} processes: {one_line(e, limit=200)}") from None
        yield Ranks(rank, world, local_rank, local_world)
    finally:
        torch.set_num_threads(threads)
        if created and dist.is_initialized():
            dist.destroy_process_group()
