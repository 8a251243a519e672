"""Distance of a candidate look to the real start frames, the episodes split over worker processes.

Each worker holds its share of the episodes (scenes and real-frame statistics), one PyBullet world and, when the
feature term is on, its own copy of the vision tower. Two kinds of evaluation:

* `evaluate(look)`: render every episode in `look` (the env's own path) and compare;
* `evaluate_solving(look, colour_knobs, prior)`: render with the fitted surfaces white, solve their colours over all
  episodes (`calibrate.colours`), then compare the renders tinted with them: what the search uses.

An episode's terms never depend on which worker computed it (one torch thread, fixed-shape tower calls, colours
solved in the parent from every episode in a fixed order), so a calibration gives the same numbers with any
`--workers`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass, field

import numpy as np

from mobile_vla_sim.calibrate.colours import Split, solve
from mobile_vla_sim.calibrate.distance import TERMS, FeatureTower, FrameStats, combine, frame_stats, terms
from mobile_vla_sim.calibrate.scenes import StartRenderer
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.look import LookConfig
from mobile_vla_sim.envs.scenario import Scenario


@dataclass
class Evaluation:
    """A look's distance: the mean over episodes, its terms, each episode's distance, and the solved colours."""

    distance: float
    terms: dict[str, float]
    per_episode: list[float]
    colours: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"distance": self.distance, "terms": self.terms, "per_episode": self.per_episode,
                "colours": self.colours}

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        return cls(float(data["distance"]), dict(data["terms"]), list(data["per_episode"]),
                   dict(data.get("colours", {})))


def stats_of(frames: list[np.ndarray], tower: FeatureTower | None) -> list[FrameStats]:
    """Statistics (and tower features, with a tower) of RGB uint8 frames."""
    features = tower(frames) if tower is not None else [None] * len(frames)
    return [frame_stats(f, x) for f, x in zip(frames, features)]


class _Shard:
    """Some episodes: renders them and compares them with their real frames."""

    def __init__(self, scenes: list[Scenario], reals: list[FrameStats], size: tuple[int, int], env: EnvConfig,
                 features: bool):
        self.reals, self.size = reals, size
        self.renderer = StartRenderer(scenes, size, env)
        self.tower = FeatureTower() if features else None
        self.splits: list[Split] = []

    def _terms(self, frames: list[np.ndarray]) -> list[dict[str, float]]:
        return [terms(real, sim) for real, sim in zip(self.reals, stats_of(frames, self.tower))]

    def __call__(self, kind: str, *args):
        if kind == "frames":
            return self.renderer.render(*args)
        if kind == "terms":
            return self._terms(self.renderer.render(*args))
        if kind == "split":
            self.splits = self.renderer.render_split(*args)
            return [split.basis(len(args[1])) for split in self.splits]
        if kind == "tinted":
            return self._terms([split.tinted(args[0]) for split in self.splits])
        raise ValueError(f"unknown request {kind!r}")

    def close(self) -> None:
        self.renderer.close()


def _serve(conn, args) -> None:
    """A worker process: build a shard, then answer requests until None."""
    try:
        shard = _Shard(*args)
        conn.send(("ok", None))
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises it)
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while (request := conn.recv()) is not None:
            try:
                conn.send(("ok", shard(*request)))
            except Exception:  # noqa: BLE001
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        shard.close()


class Evaluator:
    """Computes `Evaluation`s of looks over all episodes; `workers` processes (1: in this process)."""

    def __init__(self, scenes: list[Scenario], reals: list[FrameStats], size: tuple[int, int], env: EnvConfig,
                 feature_weight: float, workers: int = 0):
        n = len(scenes)
        workers = min(n, workers or os.cpu_count() or 1)
        self.feature_weight, self.n, self.reals = feature_weight, n, reals
        self.order = [list(range(k, n, workers)) for k in range(workers)]
        features = feature_weight > 0
        shard_args = [([scenes[i] for i in idx], [reals[i] for i in idx], size, env, features) for idx in self.order]
        self._local, self._conns, self._procs = None, [], []
        if workers == 1:
            self._local = _Shard(*shard_args[0])
            return
        ctx = mp.get_context("spawn")
        try:
            for args in shard_args:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, args), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for conn in self._conns:
                self._answer(conn)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _answer(conn):
        try:
            status, payload = conn.recv()
        except EOFError:
            raise RuntimeError("a calibration worker process died") from None
        if status == "error":
            raise RuntimeError(f"a calibration worker failed:\n{payload}")
        return payload

    def _map(self, *request) -> list:
        """Every episode's answer to `request`, in episode order."""
        if self._local is not None:
            parts = [self._local(*request)]
        else:
            for conn in self._conns:
                conn.send(request)
            parts = [self._answer(conn) for conn in self._conns]
        out: list = [None] * self.n
        for idx, part in zip(self.order, parts):
            for i, value in zip(idx, part):
                out[i] = value
        return out

    def _evaluation(self, per: list[dict[str, float]], colours: dict | None = None) -> Evaluation:
        distances = [combine(t, self.feature_weight) for t in per]
        means = {k: float(np.mean([t[k] for t in per])) for k in TERMS}
        return Evaluation(float(np.mean(distances)), means, distances, colours or {})

    def evaluate(self, look: LookConfig) -> Evaluation:
        """The distance of renders in `look`."""
        return self._evaluation(self._map("terms", look))

    def evaluate_solving(self, look: LookConfig, colour_knobs: list[str], prior: np.ndarray) -> Evaluation:
        """The distance of renders in `look` with the colours of `colour_knobs` solved (prior: (n, 3))."""
        if not colour_knobs:
            return self.evaluate(look)
        bases = self._map("split", look, tuple(colour_knobs))
        colours = solve(bases, [r.colour.reshape(-1, 3) for r in self.reals], prior)
        per = self._map("tinted", colours)
        return self._evaluation(per, {k: [float(v) for v in c] for k, c in zip(colour_knobs, colours)})

    def frames(self, look: LookConfig) -> list[np.ndarray]:
        """The sim start frames of every episode in `look`."""
        return self._map("frames", look)

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        for conn in self._conns:
            try:
                conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []
