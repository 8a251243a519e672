"""`mvla-sim calibrate`: fit the camera and the look of the sim to a lab's real start frames, or score a config.

Steps: read frame 0 of up to `--episodes` real files (`calibrate.real`), build the sim scene each names
(`calibrate.scenes`), resize the real frames to the fit size, then search the knob space (`calibrate.space`,
`calibrate.search`) for the look whose renders are closest (`calibrate.distance`), logging every evaluation to
`evaluations.jsonl` (a re-run resumes), and write `calibrated.yaml` (an env config for `eval`, `generate`, `probe`
and a study spec), `calibration.json`, `calibration.md` and its figures (`calibrate.report`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mobile_vla_sim.calibrate.distance import FeatureTower, combine, terms
from mobile_vla_sim.calibrate.evaluate import Evaluation, Evaluator, stats_of
from mobile_vla_sim.calibrate.real import REAL_COLOR_ORDERS, RealStart, load_starts, resize
from mobile_vla_sim.calibrate.scenes import check_env, start_scenes
from mobile_vla_sim.calibrate.report import Outcome, write_outputs
from mobile_vla_sim.calibrate.search import EvalLog, Objective, search, sensitivity
from mobile_vla_sim.calibrate.space import FIT_KNOBS, UNITS, Space
from mobile_vla_sim.config import check_knobs, knob, parse_choices, to_dict
from mobile_vla_sim.envs.config import CAMERAS, EnvConfig
from mobile_vla_sim.errors import DatasetError, Interrupted

#: Bumped when the distance or the search changes, so an old evaluation log is not replayed into a new method.
METHOD_VERSION = 1
LOG_NAME = "evaluations.jsonl"


@dataclass
class CalibrateConfig:
    """What `mvla-sim calibrate` fits, to which data, and how hard it searches."""

    real: Path = knob(help="folder of real episodes in the real HDF5 layout (episode_..._<n>box_hori_<left|right>_"
                      "[<core|variant>_][<close|medium|far>]....h5); frame 0 of each is its start view")
    out: Path = knob(Path("runs/calibrate"), "output folder: calibrated.yaml, calibration.md and figures, "
                     "evaluations.jsonl (re-running the same command resumes from it)")
    episodes: int = knob(20, "real episodes used, evenly spread over the sorted file names", min=1)
    score_only: bool = knob(False, "only print the distance of the real frames to the env config (its look: "
                            "--config FILE or the look options) and exit")
    fit: tuple[str, ...] = knob(("all",), "knobs to fit, a comma list of " + ", ".join(FIT_KNOBS) + " (or all); "
                                "the others keep the env config's values")
    budget: int = knob(400, "most distance evaluations of the search (each renders every episode once; the "
                       "search usually converges in 200-350); the sensitivity analysis adds ~6 per fitted scalar and "
                       "~4 per colour channel", min=1)
    fit_height: int = knob(96, "rows of the compared frames: real frames are resized to it, the sim renders at it, "
                           "both with the real frames' aspect", min=16, max=720)
    real_color_order: str = knob("attr", "channel order of the real images: attr (each file's color_order "
                                 "attribute, RGB when absent, as the layout documents), rgb, or bgr",
                                 choices=REAL_COLOR_ORDERS)
    feature_weight: float = knob(0.1, "weight of the vision-tower feature term in the distance (0: colour and "
                                 "texture statistics only)", min=0.0)
    workers: int = knob(0, "render processes (0: one per CPU); results do not depend on it", min=0)
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self) -> None:
        self.real, self.out = Path(self.real), Path(self.out)
        check_knobs(self)
        self.fit = parse_choices(self.fit, FIT_KNOBS, "knob to fit")
        self.env = self.env.resolved()  # no policy to take unset knobs from: the defaults
        check_env(self.env)


@dataclass
class Problem:
    """The real start frames of a calibration, their sim scenes, and the distance to any look."""

    starts: list[RealStart]
    size: tuple[int, int]            # fit (width, height)
    reals: list[np.ndarray]          # real start frames resized to the fit size
    tower: FeatureTower | None       # the feature extractor (None when the feature term is off)
    evaluator: Evaluator
    notes: list[str]

    def identity(self, cfg: CalibrateConfig) -> dict:
        """What fixes every evaluation: the data, the fit options, the method; not the budget or the workers."""
        return {"method": METHOD_VERSION, "episodes": [s.name for s in self.starts],
                "real_shape": list(self.starts[0].image.shape), "fit_height": cfg.fit_height,
                "real_color_order": cfg.real_color_order, "feature_weight": cfg.feature_weight,
                "fit": list(cfg.fit), "env": to_dict(cfg.env)}


def fit_size(shape: tuple[int, ...], fit_height: int) -> tuple[int, int]:
    """(width, height) of the compared frames: `fit_height` rows (at most the real ones), the real aspect."""
    height = min(fit_height, shape[0])
    return max(16, round(height * shape[1] / shape[0])), height


def open_problem(cfg: CalibrateConfig, echo: Callable[[str], None] = lambda s: None) -> Problem:
    """Read the real starts, build their scenes and the evaluator (the caller closes `problem.evaluator`)."""
    starts, notes = load_starts(cfg.real, cfg.episodes, cfg.real_color_order)
    shapes = sorted({s.image.shape for s in starts})
    if len(shapes) > 1:
        sizes = ", ".join(f"{w}x{h}" for h, w, _ in shapes)
        raise DatasetError(f"the real frames have {len(shapes)} sizes ({sizes}); calibrate one camera at a time: put "
                           "each camera's episodes in a folder of their own")
    size = fit_size(shapes[0], cfg.fit_height)
    width, height = cfg.env.resolution
    if abs(width / height - shapes[0][1] / shapes[0][0]) > 0.02:
        notes.append(f"the real frames are {shapes[0][1]}x{shapes[0][0]}, the env's camera renders {width}x{height}: "
                     "the fit uses the real aspect, but an eval with this config sees another crop of the scene "
                     "(use --camera real, or --image-width/--image-height with the real aspect)")
    echo(f"{len(starts)} real start frames of {cfg.real} ({shapes[0][1]}x{shapes[0][0]}), compared at "
         f"{size[0]}x{size[1]}")
    scenes = start_scenes(starts, cfg.env)
    reals = [resize(s.image, size) for s in starts]
    tower = FeatureTower() if cfg.feature_weight > 0 else None
    stats = stats_of(reals, tower)
    evaluator = Evaluator(scenes, stats, size, cfg.env, cfg.feature_weight, cfg.workers)
    return Problem(starts, size, reals, tower, evaluator, notes)


@dataclass
class Score:
    """`--score-only`: the distance of the real frames to the env config's look, and with red and blue swapped."""

    real: Path
    episodes: int
    size: tuple[int, int]
    evaluation: Evaluation
    swapped: float

    def describe(self) -> str:
        e = self.evaluation
        parts = ", ".join(f"{k} {v:.4f}" for k, v in e.terms.items())
        text = (f"distance {e.distance:.4f} ({parts}) between {self.episodes} start frames of {self.real} and the "
                f"env config, compared at {self.size[0]}x{self.size[1]}")
        if self.swapped < e.distance:
            text += (f"\nnote: with the real frames' red and blue swapped the distance is lower ({self.swapped:.4f}):"
                     " they may be BGR stored as RGB; check with --real-color-order bgr")
        return text


def score(cfg: CalibrateConfig) -> Score:
    """The distance of the real frames to the env config's look (`--score-only`), and, as a check of their channel
    order, of the same frames with red and blue swapped. Two renders per episode: in this process unless
    `--workers` says otherwise (starting workers would take longer)."""
    problem = open_problem(dataclasses.replace(cfg, workers=cfg.workers or 1))
    try:
        evaluation = problem.evaluator.evaluate(cfg.env.look)
        sims = stats_of(problem.evaluator.frames(cfg.env.look), problem.tower)
    finally:
        problem.evaluator.close()
    swapped = stats_of([np.ascontiguousarray(r[..., ::-1]) for r in problem.reals], problem.tower)
    distance = float(np.mean([combine(terms(r, s), cfg.feature_weight) for r, s in zip(swapped, sims)]))
    return Score(cfg.real, len(problem.starts), problem.size, evaluation, distance)


@dataclass
class Calibration:
    """Outcome of a calibration: the written files and what the report shows."""

    paths: dict[str, Path]
    outcome: Outcome


def calibrate(cfg: CalibrateConfig, echo: Callable[[str], None] = print, progress: bool = True) -> Calibration:
    """Fit the look to the real frames and write the config, the report and the figures into `cfg.out`."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    problem = open_problem(cfg, echo)
    for note in problem.notes:
        echo(f"note: {note}")
    space = Space(cfg.fit, cfg.env.look, CAMERAS[cfg.env.camera])
    log = EvalLog(cfg.out / LOG_NAME, problem.identity(cfg))
    if log.done:
        echo(f"resuming: {len(log.done)} evaluations already in {log.path}")
    bar = tqdm(total=cfg.budget, desc="calibrate", unit="eval", disable=None if progress else True,
               dynamic_ncols=True)

    def tick(evaluation: Evaluation) -> None:
        bar.update(1)
        bar.set_postfix(distance=f"{evaluation.distance:.4f}", refresh=False)

    objective = Objective(problem.evaluator, space, log, tick)
    try:
        before = objective.look(cfg.env.look)
        result = search(objective, space, cfg.budget)
        bar.close()
        echo(f"search: {len(result.trace)} evaluations, distance {before.distance:.4f} -> {result.trace[-1]:.4f}; "
             "now the sensitivity around the fit")
        colours = {k: tuple(v) for k, v in objective.point(result.best).colours.items()}
        fitted = space.values(result.best, colours, rounded=True)
        fitted_look = space.look(result.best, colours, rounded=True)
        after = objective.look(fitted_look)
        sens = sensitivity(objective, result.best, {k: fitted[k] for k in colours})
        frames = {"real": problem.reals, "before": problem.evaluator.frames(cfg.env.look),
                  "after": problem.evaluator.frames(fitted_look)}
    except KeyboardInterrupt:
        raise Interrupted(f"the evaluations so far are kept in {log.path}; run the same command again to continue "
                          "from them") from None
    finally:
        bar.close()
        log.close()
        problem.evaluator.close()
    outcome = Outcome(names=[s.name for s in problem.starts], size=problem.size, before=before, after=after,
                      start={k: space.start_values[k] for k in fitted}, fitted=fitted,
                      units=UNITS, sens=sens, trace=result.trace,
                      frames=frames,
                      evaluations=objective.count, seconds=time.perf_counter() - t0, notes=problem.notes)
    paths = write_outputs(cfg, dataclasses.replace(cfg.env, look=fitted_look), outcome)
    paths[LOG_NAME] = log.path
    return Calibration(paths, outcome)
