"""`mvla-sim plan`: how many episodes a question needs, before running it, and what a run of N episodes can detect.

The arithmetic is `eval.stats`' (Wilson half-widths, Connor's paired sample size, minimum detectable effects, the
anytime-valid confidence sequence); this module asks it the three questions users have and says the answers in the
units the other commands take (`--episodes` per (difficulty, task) group).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.errors import ConfigError
from mobile_vla_sim.eval.stats import (DEFAULT_DISCORDANCE, episodes_for_halfwidth, minimum_detectable_difference,
                                       minimum_detectable_effect, paired_episodes_for_difference,
                                       rate_confidence_sequence, wilson_halfwidth)


@dataclass
class PlanConfig:
    """The questions: give --halfwidth, --difference and/or --episodes."""

    halfwidth: float | None = knob(None, "estimate one policy's success rate to +-W: how many episodes?",
                                   min=0.001, max=0.499)
    difference: float | None = knob(None, "detect a success difference D between two policies run on the same "
                                    "episodes: how many paired episodes?", min=0.001, max=1.0)
    episodes: int | None = knob(None, "what can N episodes (or N paired episodes) detect?", min=1)
    rate: float = knob(0.5, "expected success rate, for --halfwidth and --episodes (0.5 is the worst case: the "
                       "answer then holds whatever the rate turns out to be)", min=0.0, max=1.0)
    discordance: float = knob(DEFAULT_DISCORDANCE, "share of episodes on which exactly one of the two policies "
                              "succeeds, for --difference and --episodes; the default assumes two policies near 50% "
                              "with unrelated failures: measure it on a pilot run (`discordance` in compare.json, "
                              "ab.json)", min=0.001, max=1.0)
    alpha: float = knob(0.05, "significance level (two-sided); the interval's confidence is 1 - alpha",
                        min=1e-6, max=0.5)
    power: float = knob(0.8, "chance of detecting the difference when it is there", min=0.5, max=0.999)
    tests: int = knob(1, "tests in the family the comparison will be one of (a default probe: up to 64, perturbation "
                      "x difficulty); plans at alpha / tests, what the most significant test of a Holm family needs",
                      min=1)
    groups: int = knob(6, "(difficulty, task) groups of the run, to turn totals into --episodes per group (6: "
                       "--difficulty all with both tasks; 2: one difficulty)", min=1)

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.halfwidth is None and self.difference is None and self.episodes is None:
            raise ConfigError("nothing to plan: give --halfwidth W (episodes for a rate to +-W), --difference D "
                              "(paired episodes to detect D) and/or --episodes N (what N episodes detect)")


def sequential_episodes(halfwidth: float, rate: float, alpha: float) -> int:
    """Episodes an `eval --target-halfwidth` run needs when the success rate is `rate`: the fewest n whose
    anytime-valid interval at k = round(rate * n) successes is at most +-`halfwidth` (bisection: it narrows as n
    grows)."""
    def narrow(n: int) -> bool:
        low, high = rate_confidence_sequence(round(rate * n), n, alpha)
        return (high - low) / 2 <= halfwidth

    high = 1
    while not narrow(high):
        high *= 2
    low = high // 2 + 1 if high > 1 else 1
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if narrow(mid) else (mid + 1, high)
    return low


def plan(cfg: PlanConfig) -> dict:
    """The answers, as numbers (`plan_markdown` words them)."""
    alpha = cfg.alpha / cfg.tests
    answers: dict = {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "alpha_per_test": alpha}
    if cfg.halfwidth is not None:
        n = episodes_for_halfwidth(cfg.halfwidth, cfg.rate, 1 - cfg.alpha)
        answers["halfwidth"] = {"episodes": n, "per_group": math.ceil(n / cfg.groups),
                                "sequential": sequential_episodes(cfg.halfwidth, cfg.rate, cfg.alpha)}
    if cfg.difference is not None:
        n = paired_episodes_for_difference(cfg.difference, cfg.discordance, alpha, cfg.power)
        answers["difference"] = {"pairs": n, "per_group": math.ceil(n / cfg.groups)}
    if cfg.episodes is not None:
        n = cfg.episodes
        answers["episodes"] = {"halfwidth": wilson_halfwidth(n, cfg.rate, 1 - cfg.alpha),
                               "rate_change": minimum_detectable_effect(n, cfg.rate, alpha, cfg.power),
                               "paired_difference": minimum_detectable_difference(n, cfg.discordance, alpha,
                                                                                  cfg.power)}
    return answers


def _pp(x: float) -> str:
    return f"{100 * x:.1f} percentage points" if math.isfinite(x) else "nothing (too few episodes)"


def plan_markdown(answers: dict) -> str:
    """The answers in words, each with what it assumed."""
    cfg = answers["config"]
    level = (f"alpha = {cfg['alpha']:g}" if cfg["tests"] == 1
             else f"alpha = {cfg['alpha']:g} / {cfg['tests']} tests = {answers['alpha_per_test']:.3g}")
    discordance = (f"discordance {cfg['discordance']:g} ("
                   + ("assumed: two policies near 50% with unrelated failures; measure it on a pilot run)"
                      if cfg["discordance"] == DEFAULT_DISCORDANCE else "given)"))
    lines = []
    if "halfwidth" in answers:
        a = answers["halfwidth"]
        lines.append(f"- Success rate to +-{cfg['halfwidth']:g} ({100 * (1 - cfg['alpha']):g}% Wilson interval, "
                     f"expected rate {cfg['rate']:g}): {a['episodes']} episodes (--episodes {a['per_group']} over "
                     f"{cfg['groups']} groups). Stopping as soon as it is that narrow (`eval --target-halfwidth "
                     f"{cfg['halfwidth']:g}`, an interval valid at any stop) takes about {a['sequential']} at that "
                     "rate: more near 50%, fewer near 0% or 100%.")
    if "difference" in answers:
        a = answers["difference"]
        lines.append(f"- Detect a difference of {_pp(cfg['difference'])} between two policies on the same "
                     f"episodes (exact McNemar, {level}, {100 * cfg['power']:g}% power, {discordance}): "
                     f"{a['pairs']} paired episodes (--episodes {a['per_group']} over {cfg['groups']} groups, for "
                     "each policy; Connor 1987). `mvla-sim ab` stops earlier when the difference is large.")
    if "episodes" in answers:
        a = answers["episodes"]
        lines.append(f"- {cfg['episodes']} episodes: a success rate near {cfg['rate']:g} to "
                     f"+-{_pp(a['halfwidth'])}; a change of that rate by {_pp(a['rate_change'])} "
                     f"({level}, {100 * cfg['power']:g}% power); a paired difference to another policy of "
                     f"{_pp(a['paired_difference'])} ({discordance}).")
    return "\n".join(lines) + "\n"
