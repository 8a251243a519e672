"""Run one picklable function over many items, here in order or as Ray tasks across a cluster: `run_tasks`.

Layer-free (like `io.py`): it knows nothing of studies, cells or episodes, so `mvla-sim study` runs its grid cells
through it and an evaluation can run episode shards through it the same way.

Why a callback per finished item and errors per item: a grid of long jobs must keep every finished result whatever
happens to the others (one job raising, a Ray worker process or a whole node dying), so each result is handed to
`on_result` (which stores it) as soon as it exists, and a failure becomes that item's `error`, never the run's.
Ctrl-C is the exception: it cancels whatever has not finished and re-raises `KeyboardInterrupt`; what `on_result`
stored is kept.

Ray is imported only when the `ray` backend is asked for (`pip install 'mobile-vla-sim[ray]'`). With no address a
local Ray instance is started for the call (and shut down after it); `address="auto"` or `ray://HOST:PORT` joins a
cluster (every node needs this package installed, and the function's inputs and outputs must be reachable there:
a shared file system for paths). A Ray task that crashed its worker is retried by Ray `max_retries` times first.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.errors import ConfigError

BACKENDS = ("local", "ray")
RAY_MISSING = "the ray backend needs Ray: pip install 'mobile-vla-sim[ray]'"


@dataclass(frozen=True)
class BackendConfig:
    """Where a job's tasks run (nested in the study's and eval's configs); results never depend on it."""

    backend: str = knob("local", "local: in this process (and its env workers); ray: as Ray tasks, on a local Ray "
                        "instance or a cluster (pip install 'mobile-vla-sim[ray]')", choices=BACKENDS)
    ray_address: str | None = knob(None, "Ray cluster to join (auto, or ray://HOST:PORT); default: start a local "
                                   "Ray instance. On a cluster, output folders must be on a file system every node "
                                   "shares")

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass(frozen=True)
class Resources:
    """What one task declares to Ray's scheduler (the local backend runs tasks one after another and ignores it)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class Outcome:
    """One item's result, or the exception that stopped it (a raised error, a dead worker or node)."""

    index: int
    result: Any = None
    error: BaseException | None = None
    #: Seconds from submission to completion as the driver saw them (a Ray task's includes its queueing).
    seconds: float = 0.0


def check_backend(backend: str) -> None:
    """A known backend whose dependencies are installed, or a one-line `ConfigError` saying how to get them."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: --backend must be one of {', '.join(BACKENDS)}")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(RAY_MISSING) from None


@contextlib.contextmanager
def session(backend: str, ray_address: str | None = None) -> Iterator[None]:
    """Hold one Ray connection (or local instance) across several `run_tasks` calls, so each does not start its own
    (seconds each); nothing for the local backend or when Ray is already initialised by the caller."""
    check_backend(backend)
    if backend != "ray":
        yield
        return
    import ray

    if ray.is_initialized():
        yield
        return
    # Workers of a local instance import this same copy of the package (the driver's cwd is on their path).
    ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def run_tasks(fn: Callable[[Any], Any], items: Sequence[Any], *, backend: str = "local",
              resources: Resources = Resources(), on_result: Callable[[Outcome], None] | None = None,
              ray_address: str | None = None, max_retries: int = 3) -> list[Outcome]:
    """`fn(item)` for every item; returns an `Outcome` per item in item order, each also passed to `on_result` as it
    finishes (local: in order; Ray: in completion order).

    `fn` must be a module-level function and items picklable (Ray ships them to workers). An exception raised by
    `fn` (or a worker/node failure) is stored in that item's `Outcome.error`; the other items go on. Ctrl-C cancels
    unfinished Ray tasks and re-raises `KeyboardInterrupt`.
    """
    check_backend(backend)
    on_result = on_result or (lambda outcome: None)
    if backend == "local":
        return _run_local(fn, list(items), on_result)
    return _run_ray(fn, list(items), resources, on_result, ray_address, max_retries)


def _run_local(fn, items, on_result) -> list[Outcome]:
    outcomes = []
    for index, item in enumerate(items):
        start = time.perf_counter()
        try:
            outcome = Outcome(index, result=fn(item))
        except KeyboardInterrupt:  # Ctrl-C (also `errors.Interrupted`, an Exception too) stops the run
            raise
        except Exception as err:  # noqa: BLE001 (one item's failure is that item's outcome)
            outcome = Outcome(index, error=err)
        outcome.seconds = time.perf_counter() - start
        on_result(outcome)
        outcomes.append(outcome)
    return outcomes


def _task_error(err: BaseException) -> BaseException:
    """The user's exception when the task raised one (Ray wraps it), else Ray's own (a dead worker or node)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _run_ray(fn, items, resources, on_result, ray_address, max_retries) -> list[Outcome]:
    import ray

    with session("ray", ray_address):
        remote = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=max_retries,
                            retry_exceptions=False)(fn)
        start = time.perf_counter()
        pending = {remote.remote(item): index for index, item in enumerate(items)}
        outcomes: dict[int, Outcome] = {}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                index = pending.pop(ref)
                try:
                    outcome = Outcome(index, result=ray.get(ref))
                except ray.exceptions.RayError as err:
                    outcome = Outcome(index, error=_task_error(err))
                outcome.seconds = time.perf_counter() - start
                outcomes[index] = outcome
                on_result(outcome)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [outcomes[i] for i in range(len(items))]
