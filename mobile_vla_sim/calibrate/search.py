"""Derivative-free search over the knob space: a scan of the camera, then Nelder-Mead; deterministic, resumable.

Why this optimiser: the distance is a function of rendered pixels, so it is not differentiable (a camera that moves
a hair moves an edge by a fraction of a pixel, then by a whole one) and finite-difference gradients are noise; the
knobs are bounded and mixed (a few scalars, texture choices); and each evaluation renders every episode, so the
budget is hundreds of evaluations. With the colours solved in closed form (`calibrate.colours`) only the camera's
height, pitch and field of view and the light's ambient share are searched, and their valleys are narrow and
diagonal (a higher camera tilted further down with a wider view frames the corridor much as before): a search along
the axes (compass search, tried first) stalls in such valleys, while Nelder-Mead's simplex turns along them. CMA-ES
would too, but spends a population per step and draws random numbers; here nothing is random, so the same data and
options give the same evaluations in the same order, and an interrupted run replays its logged evaluations and
continues.

Steps: (1) a grid over the horizon's height in the frame and the field of view (the two coordinates that move the
picture most) finds the right valley, the colours solved at each point; (2) each texture option is tried at the best
point, and kept only if clearly better; (3) Nelder-Mead (SciPy's, bounded) over every fitted scalar from there;
(2) and (3) repeat with a smaller simplex while a texture changes. It stops there or at the budget of evaluations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mobile_vla_sim.calibrate.evaluate import Evaluation, Evaluator
from mobile_vla_sim.calibrate.space import UNITS, Point, Space
from mobile_vla_sim.config import to_dict
from mobile_vla_sim.envs.look import LookConfig
from mobile_vla_sim.errors import OutputError

#: Offsets (fraction of each scalar's range; colour units for colours) of the sensitivity profiles around the fit.
PROFILE = (-0.2, -0.1, -0.05, 0.05, 0.1, 0.2)
COLOUR_PROFILE = (-0.1, 0.1)


def look_key(look: LookConfig) -> str:
    """A look as one canonical string: the key of its evaluation in the log."""
    return json.dumps(to_dict(look), sort_keys=True)


class EvalLog:
    """`evaluations.jsonl`: a header naming the calibration (data and options), then one evaluated look per line.

    Lines are appended and flushed as evaluations finish, so an interrupted calibration keeps every one of them; a
    torn last line (killed mid-write) is ignored. A log of another calibration is refused, not mixed in.
    """

    def __init__(self, path: Path, identity: dict):
        self.path, self.done = Path(path), {}
        header = {"calibration": identity}
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            try:
                first = json.loads(lines[0]) if lines else None
            except json.JSONDecodeError:
                first = None
            if first != header:
                raise OutputError(f"{self.path} holds evaluations of another calibration (other data or options); "
                                  "choose a new --out folder or delete the file to start over")
            for line in lines[1:]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.done[record["key"]] = Evaluation.from_json(record)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(header) + "\n")
        self._file = self.path.open("a")

    def add(self, key: str, evaluation: Evaluation) -> None:
        self.done[key] = evaluation
        self._file.write(json.dumps({"key": key, **evaluation.to_json()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Objective:
    """Evaluations through the log, each rendered once whatever the number of runs: search points (colours solved)
    and plain looks."""

    def __init__(self, evaluator: Evaluator, space: Space, log: EvalLog,
                 on_eval: Callable[[Evaluation], None] = lambda evaluation: None):
        self.evaluator, self.space, self.log, self.on_eval = evaluator, space, log, on_eval
        self.prior = np.array([space.start_values[k] for k in space.colors], dtype=float).reshape(-1, 3)
        self.count = 0

    def _logged(self, key: str, compute: Callable[[], Evaluation]) -> Evaluation:
        if key not in self.log.done:
            self.log.add(key, compute())
        self.count += 1
        self.on_eval(self.log.done[key])
        return self.log.done[key]

    def point(self, point: Point) -> Evaluation:
        """A search point: its look with the fitted colours solved (`Evaluation.colours`)."""
        look = self.space.look(point)
        return self._logged("solve " + look_key(look), lambda: self.evaluator.evaluate_solving(
            look, self.space.colors, self.prior))

    def look(self, look: LookConfig) -> Evaluation:
        """A look as it is (rendered by the env's own path)."""
        return self._logged("look " + look_key(look), lambda: self.evaluator.evaluate(look))


@dataclass
class SearchResult:
    best: Point
    trace: list[float]       # best distance after each evaluation


class _Spent(Exception):
    """The budget of evaluations is used up."""


#: Grid of the first step: points along the horizon coordinate and the field of view (each over its whole range).
SCAN = (13, 5)
#: Nelder-Mead's first simplex: this fraction of each scalar's range along each axis, halving per round.
SIMPLEX = 0.15
ROUNDS = 3
#: A texture replaces the current one only if it lowers the distance by this fraction: where the frames cannot tell
#: two textures apart (a box a few pixels wide, a bottle behind the box), the base look's stays.
TEXTURE_MARGIN = 0.02
XTOL = 1 / 256               # ~0.3 degrees of pitch, 2 mm of height, 0.3 degrees of field of view
FTOL = 1e-5


def search(objective: Objective, space: Space, budget: int) -> SearchResult:
    """Minimise the distance over `space` from its start in at most `budget` evaluations (module doc)."""
    from scipy.optimize import minimize

    best = space.start()
    trace: list[float] = []
    best_d = float("inf")

    def f(point: Point, margin: float = 0.0) -> float:
        nonlocal best, best_d
        if len(trace) >= budget:
            raise _Spent
        d = objective.point(point).distance
        if d < best_d * (1.0 - margin):
            best, best_d = point, d
        trace.append(best_d)
        return d

    def textures() -> bool:
        changed = False
        for c in range(len(space.choices)):
            current = best
            for option in space.options(c):
                if option != current.options[c]:
                    f(Point(current.u, tuple(option if k == c else o for k, o in enumerate(current.options))),
                      TEXTURE_MARGIN)
            changed |= best.options[c] != current.options[c]
        return changed

    try:
        f(best)
        for point in _scan(space, best):
            f(point)
        n = len(space.dims)
        for r in range(ROUNDS):
            if not textures() and r > 0 or n == 0:
                break
            x0, options = np.array(best.u), best.options
            step = SIMPLEX / 2 ** r
            simplex = [x0] + [np.clip(x0 + (step if x0[i] + step <= 1 else -step) * np.eye(n)[i], 0, 1)
                              for i in range(n)]
            minimize(lambda x: f(Point(tuple(float(v) for v in x), options)), x0, method="Nelder-Mead",
                     bounds=[(0.0, 1.0)] * n, options={"initial_simplex": np.array(simplex), "xatol": XTOL,
                                                       "fatol": FTOL, "maxfev": budget})
    except _Spent:
        pass
    return SearchResult(best, trace)


def _scan(space: Space, start: Point) -> list[Point]:
    """Grid points over the horizon and the field of view (those fitted), the other coordinates at `start`."""
    axes = [(space.dims.index(name), count) for name, count in zip(("camera_pitch", "camera_fov"), SCAN)
            if name in space.dims]
    points = [start.u]
    for i, count in axes:
        points = [tuple(float(x) if k == i else v for k, v in enumerate(u))
                  for u in points for x in np.linspace(0.0, 1.0, count)]
    return [Point(u, start.options) for u in points] if axes else []


@dataclass
class Sensitivity:
    """How the distance changes around the fitted look, one knob at a time (renders by the env's own path)."""

    centre: float                                           # the distance of the fitted look
    profiles: dict[str, list[tuple[float, float, float]]]   # label -> [(offset, knob value, distance)], offset 0 in
    options: dict[str, dict[str, float]]                    # texture knob -> option -> distance
    units: dict[str, str]


def sensitivity(objective: Objective, point: Point, colours: dict[str, tuple[float, ...]]) -> Sensitivity:
    """Profiles of the distance along each fitted scalar (offsets `PROFILE` of its range), each channel of each
    fitted colour (offsets `COLOUR_PROFILE`), and over each texture's options, around (`point`, `colours`)."""
    space = objective.space
    centre = objective.look(space.look(point, colours)).distance
    profiles, units = {}, {}
    for i, name in enumerate(space.dims):
        rows = [(0.0, space.scalars(point)[name], centre)]
        for offset in PROFILE:
            if 0.0 <= point.u[i] + offset <= 1.0:
                u = list(point.u)
                u[i] += offset
                moved = Point(tuple(u), point.options)
                rows.append((offset, space.scalars(moved)[name],
                             objective.look(space.look(moved, colours)).distance))
        profiles[name], units[name] = sorted(rows), UNITS[name]
    for knob in space.colors:
        for c, channel in enumerate("rgb"):
            value = colours[knob][c]
            rows = [(0.0, value, centre)]
            for offset in COLOUR_PROFILE:
                if 0.0 <= value + offset <= 1.0:
                    rgb = list(colours[knob])
                    rgb[c] = value + offset
                    look = space.look(point, {**colours, knob: tuple(rgb)})
                    rows.append((offset, value + offset, objective.look(look).distance))
            label = f"{knob}[{channel}]"
            profiles[label], units[label] = sorted(rows), "0..1"
    options = {}
    for c, knob in enumerate(space.choices):
        options[knob] = {}
        for option in space.options(c):
            moved = Point(point.u, tuple(option if k == c else o for k, o in enumerate(point.options)))
            options[knob][option] = objective.look(space.look(moved, colours)).distance
    return Sensitivity(centre, profiles, options, units)
