"""Resident memory of this process and its live children, sampled from /proc while work runs (Linux only)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def tree_rss_mib(root: int | None = None) -> float:
    """RSS of `root` (default: this process) plus all its descendants, MiB."""
    root = root or os.getpid()
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(d.name)] = int(fields[1])
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    keep, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid and c not in keep]
        keep.update(kids)
        frontier.extend(kids)
    return sum(rss.get(p, 0) for p in keep) / 2**20


class RssSampler:
    """Samples the process tree's RSS every `period` seconds in a background thread."""

    def __init__(self, period: float = 1.0):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, tree_rss_mib()))
            self._stop.wait(self.period)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> tuple[float, float, float]:
        """(median RSS over the first quarter after warm-up, median over the last quarter, peak), MiB."""
        values = [v for _, v in self.samples]
        if len(values) < 8:
            return (values[0], values[-1], max(values)) if values else (0.0, 0.0, 0.0)
        q = len(values) // 4
        first, last = sorted(values[q // 2:q + q // 2]), sorted(values[-q:])
        return first[len(first) // 2], last[len(last) // 2], max(values)
