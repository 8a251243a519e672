"""Progress for people: a live bar on a terminal, one line per finished stage anywhere else.

A carriage-return bar written to CI logs, `nohup` files or pipes turns into megabytes of redrawn lines; there a
stage says once, when it ends, what it did and its figures (`episodes 120/120 in 38 s, success 64%`). Every long
loop of the package goes through `bar`, so this choice is made here once.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether progress goes to a terminal (stderr, where tqdm draws)."""
    return sys.stderr.isatty()


def write(message: str) -> None:
    """A log line that does not break a live bar."""
    if interactive():
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


class StageLine:
    """tqdm's surface used here (iterate, update, set_postfix, close) that prints one summary line when closed."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None or iterable is None else _len(iterable)
        self.n, self.postfix, self.start, self.closed = 0, "", time.perf_counter(), False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = False, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = f", {self.postfix}" if self.postfix else ""
        write(f"{self.desc}: {count} {self.unit} in {time.perf_counter() - self.start:.1f} s{extra}")

    def __enter__(self) -> "StageLine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _len(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class _Off(StageLine):
    """Progress turned off: counts, prints nothing."""

    def close(self) -> None:
        self.closed = True


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        enabled: bool = True, leave: bool = True) -> Any:
    """A tqdm bar on a terminal, else a `StageLine`; nothing at all when `enabled` is False. A `leave=False` bar is
    transient (an epoch's batches): on a terminal it disappears when done, elsewhere it prints nothing, since the
    caller logs the stage's figures itself."""
    if not enabled or not (leave or interactive()):
        return _Off(iterable, total, desc, unit)
    if interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return StageLine(iterable, total, desc, unit)
