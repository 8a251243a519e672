"""`mvla-sim ab POLICY_A POLICY_B`: a paired A/B test that stops as soon as it is decided.

Both policies run the same episode stream: `eval`'s fixed episode set (same seeds, same scenes) taken index by index
(`eval.episodes.interleaved`), so every prefix covers every difficulty and side alike, in batches, each policy loaded
once. After every batch the pairs are counted in stream order by `eval.stats.SequentialAB` (a mixture likelihood
ratio on the discordant pairs, valid under optional stopping: the chance of declaring a difference between two equal
policies stays below alpha at whatever pair it stops). The test stops at the first pair that decides, or after
`--max-episodes` pairs. Only the stream-order prefix up to that pair counts, so neither the batch size nor the number
of workers changes the decision.

Finished work is never lost: after every batch each policy's finished episodes (`OUT/a/results.json`,
`OUT/b/results.json`) and the test's counts (`OUT/ab.json`, `SequentialAB.to_dict`) are written atomically. A run
stopped by Ctrl-C resumes from those counts without re-running a finished episode, and reaches the decision an
uninterrupted run reaches; an undecided run may also be continued with a larger `--max-episodes` (the test stays
valid however long it runs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from mobile_vla_sim.config import check_knobs, knob, to_dict
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import EpisodeSpec, PoolConfig
from mobile_vla_sim.envs.tasks import DEFAULT_FAMILY, get_family
from mobile_vla_sim.errors import EvalError, OutputError
from mobile_vla_sim.eval.episodes import episode_set, interleaved
from mobile_vla_sim.eval.metrics import aggregate, rate
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.report import detectable_sentence, pct, read_results, results_file, write_results
from mobile_vla_sim.eval.rollout import eval_policy
from mobile_vla_sim.eval.run import EvalConfig, as_trained, eval_knob, load_eval_policy, policy_label
from mobile_vla_sim.eval.schema import json_safe
from mobile_vla_sim.eval.stats import SequentialAB, detectable_difference
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.paths import check_output_dir

SIDES = ("a", "b")
#: What the decision means, for the report.
DECISIONS = {"A": "A is better", "B": "B is better", "undecided": "no difference declared"}


@dataclass
class ABConfig:
    """Two policies, the episode stream they share, and the test's error rates."""

    policy_a: str = knob(help="policy A: anything `eval --policy` takes", argument=True)
    policy_b: str = knob(help="policy B", argument=True)
    out: Path = knob(Path("runs/ab"), "folder for ab.md, ab.json and each policy's episodes (a/, b/); re-running "
                     "the same command resumes an interrupted test")
    max_episodes: int = knob(200, "most episode pairs; the test stops earlier as soon as it decides", min=1)
    alpha: float = knob(0.05, "chance of declaring a difference between two equal policies, wherever the test "
                        "stops", min=1e-6, max=0.5)
    power: float = knob(0.8, "power of the fixed-size design the report compares the pairs used with", min=0.5,
                        max=0.999)
    batch: int = knob(20, "pairs run between two looks at the test (each policy runs them on its env workers); "
                      "it never changes the decision, only how many episodes past it are run", min=1)
    difficulty: str = eval_knob("difficulty")
    task: str = eval_knob("task")
    seed: int = eval_knob("seed")
    device: str = eval_knob("device")
    env: EnvConfig = field(default_factory=EnvConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)

    def __post_init__(self) -> None:
        check_knobs(self)
        self.out = Path(self.out)

    @property
    def family(self) -> str:
        """The task family of the stream (`run_ab` sets the policies' when the env names none)."""
        return self.env.task_family or DEFAULT_FAMILY

    def eval_config(self, side: str) -> EvalConfig:
        """Side `side`'s evaluation of the whole stream (its episodes per (difficulty, task) cover the budget)."""
        groups = len(episode_set(self.seed, self.difficulty, self.task, 1, self.family))
        return EvalConfig(policy=self.policy_a if side == "a" else self.policy_b, difficulty=self.difficulty,
                          task=self.task, episodes=math.ceil(self.max_episodes / groups), seed=self.seed,
                          out=self.out / side, device=self.device, env=self.env, pool=self.pool)


def stream(cfg: ABConfig) -> list[EpisodeSpec]:
    """The shared episode stream: the eval episode set index by index, `max_episodes` long."""
    e = cfg.eval_config("a")
    return interleaved(episode_set(e.seed, e.difficulty, e.task, e.episodes, cfg.family))[:cfg.max_episodes]


def _identity(cfg: ABConfig) -> dict:
    """What a resumed test must share with the first run: everything but the budget, the batch and the pool."""
    values = to_dict(cfg)
    return {k: v for k, v in values.items() if k not in ("max_episodes", "batch", "pool", "out", "power")}


@dataclass
class ABResult:
    summary: dict
    paths: dict[str, Path]
    interrupted: bool


def _resume(cfg: ABConfig) -> tuple[SequentialAB, dict[str, dict[str, EpisodeRecord]]]:
    """The test's counts and each side's finished episodes from an earlier run in `cfg.out` (or a fresh start)."""
    records: dict[str, dict[str, EpisodeRecord]] = {side: {} for side in SIDES}
    for side in SIDES:
        if (cfg.out / side / "results.json").is_file():
            records[side] = {r.key: r for r in read_results(cfg.out / side).episodes}
    saved = cfg.out / "ab.json"
    if not saved.is_file():
        return SequentialAB(cfg.alpha), records
    state = json.loads(saved.read_text())
    if state.get("identity") != json.loads(json.dumps(_identity(cfg))):
        raise OutputError(f"--out {cfg.out} holds another A/B test ({state.get('specs')}); choose another --out, or "
                          "delete that folder to start again")
    counts = state["test"]
    test = SequentialAB(cfg.alpha, counts["only_a"], counts["only_b"], counts["concordant"])
    counted = stream(replace(cfg, max_episodes=max(test.pairs_used, 1)))[:test.pairs_used]
    if any(s.key not in records[side] for s in counted for side in SIDES):
        raise OutputError(f"{cfg.out} lost episodes its test already counted (a/ or b/ was changed); delete the "
                          "folder to start the test again")
    return test, records


def run_ab(cfg: ABConfig, progress: bool = True, echo: Callable[[str], None] = print) -> ABResult:
    """Run (or resume) the sequential A/B test; writes ab.md, ab.json and each side's results into `cfg.out`."""
    check_output_dir(cfg.out, "--out")
    policies, configs, interrupted = {}, {}, False
    try:
        for side in SIDES:
            policies[side] = load_eval_policy(cfg.eval_config(side))
            configs[side] = as_trained(cfg.eval_config(side), policies[side])
        families = {configs[side].env.task_family for side in SIDES}
        if len(families) > 1:
            raise EvalError(f"the two policies were trained on different task families ({', '.join(sorted(families))})"
                            "; give --task-family to run both on one")
        cfg = replace(cfg, env=replace(cfg.env, task_family=families.pop()))
        episodes = stream(cfg)
        test, records = _resume(cfg)
        labels = {side: policy_label(configs[side].policy, policies[side]) for side in SIDES}
        while test.decision == "undecided" and test.pairs_used < len(episodes):
            batch = episodes[test.pairs_used:test.pairs_used + cfg.batch]
            echo(f"pairs {test.pairs_used + 1}-{test.pairs_used + len(batch)} of at most {len(episodes)}")
            for side in SIDES:
                todo = [s for s in batch if s.key not in records[side]]
                if not todo:
                    continue
                result = eval_policy(policies[side], todo, configs[side].env, pool=cfg.pool, progress=progress)
                records[side].update({r.key: r for r in result.results})
                if result.interrupted:
                    _save(cfg, test, records, configs, labels, episodes, "interrupted")
                    if result.error is not None:
                        raise result.error
                    interrupted = True
                    break
            if interrupted:
                break
            test.update([records["a"][s.key].success for s in batch], [records["b"][s.key].success for s in batch])
            _save(cfg, test, records, configs, labels, episodes, "running")
    finally:
        for policy in policies.values():
            policy.close()
    if interrupted:
        return ABResult(json.loads((cfg.out / "ab.json").read_text()), {"ab.json": cfg.out / "ab.json"}, True)
    summary = _save(cfg, test, records, configs, labels, episodes, "finished")
    counted = episodes[:test.pairs_used]
    for side in SIDES:  # the full result files, of the counted pairs only
        kept = [records[side][s.key] for s in counted]
        write_results(cfg.out / side, policy=labels[side], config=to_dict(configs[side]), records=kept,
                      aggregates=aggregate(kept, get_family(cfg.family)))
    atomic_write(cfg.out / "ab.md", ab_markdown(summary))
    return ABResult(summary, {"ab.md": cfg.out / "ab.md", "ab.json": cfg.out / "ab.json"}, False)


def _save(cfg: ABConfig, test: SequentialAB, records: dict[str, dict[str, EpisodeRecord]], configs: dict,
          labels: dict[str, str], episodes: list[EpisodeSpec], status: str) -> dict:
    """Each side's finished episodes, then ab.json (the counts last: what they count is already on disk)."""
    for side in SIDES:
        order = {s.key: n for n, s in enumerate(episodes)}
        found = sorted(records[side].values(), key=lambda r: order.get(r.key, len(order)))
        (cfg.out / side).mkdir(parents=True, exist_ok=True)
        atomic_write(cfg.out / side / "results.json",
                     results_file(policy=labels[side], config=to_dict(configs[side]), records=found,
                                  aggregates=aggregate(found, get_family(cfg.family)), interrupted=True).to_json())
    summary = ab_summary(cfg, test, records, labels, episodes, status)
    atomic_write(cfg.out / "ab.json", json.dumps(json_safe(summary), indent=1))
    return summary


def ab_summary(cfg: ABConfig, test: SequentialAB, records: dict[str, dict[str, EpisodeRecord]],
               labels: dict[str, str], episodes: list[EpisodeSpec], status: str) -> dict:
    """ab.json: the decision, the pairs used against the fixed-size design, each side's success on them."""
    counted = episodes[:test.pairs_used]
    success = {side.upper(): rate(sum(records[side][s.key].success for s in counted), len(counted))
               for side in SIDES}
    discordance = (test.only_a + test.only_b) / test.pairs_used if test.pairs_used else None
    decided = test.decision != "undecided"
    return {
        "policies": {"A": labels["a"], "B": labels["b"]}, "specs": {"A": cfg.policy_a, "B": cfg.policy_b},
        "decision": test.decision, "pairs_used": test.pairs_used, "max_episodes": cfg.max_episodes,
        "status": status if status != "finished" else ("decided" if decided else "budget spent"),
        "fixed_sample_pairs": test.fixed_sample_pairs(cfg.power), "power": cfg.power, "alpha": cfg.alpha,
        "discordance": discordance, "success": success, "test": test.to_dict(cfg.power),
        "detectable": None if decided else detectable_difference(test.pairs_used, discordance, cfg.alpha,
                                                                 cfg.power),
        "method": "sequential test on the discordant pairs: Beta(1, 1) mixture likelihood ratio against equal "
                  "success (Robbins 1970), decided when it reaches 1/alpha (Ville's inequality; Howard et al. 2021)",
        "stream": f"episode set of seed {cfg.seed}, difficulty {cfg.difficulty}, task {cfg.task}, index by index",
        "episodes": {"A": str(cfg.out / "a"), "B": str(cfg.out / "b")},
        "identity": _identity(cfg), "config": to_dict(cfg),
    }


def ab_markdown(summary: dict) -> str:
    """ab.md: the decision in one sentence, the counts, and the fixed-size design it is set against."""
    a, b = summary["policies"]["A"], summary["policies"]["B"]
    t = summary["test"]
    n = summary["pairs_used"]
    if summary["decision"] == "undecided":
        head = (f"**Undecided after {n} episode pairs** (the budget): no difference between `{a}` (A) and `{b}` (B) "
                f"was declared at alpha = {summary['alpha']:g}.")
    else:
        better, worse = (a, b) if summary["decision"] == "A" else (b, a)
        head = (f"**{summary['decision']}: `{better}` is better than `{worse}`**, decided after {n} episode pairs "
                f"of at most {summary['max_episodes']}.")
    fixed = summary["fixed_sample_pairs"]
    lines = [f"# Sequential A/B: `{a}` (A) vs `{b}` (B)", "", head, "",
             "| policy | success on the pairs used |", "|---|---|",
             *(f"| {side}: `{summary['policies'][side]}` | {pct(s['rate'])} ({s['k']}/{s['n']}) |"
               for side, s in summary["success"].items()), "",
             f"Pairs: {t['only_a']} only A succeeded, {t['only_b']} only B, {t['concordant']} both or neither. "
             f"Test: {summary['method']}; log evidence {t['log_evidence']:.2f} against the threshold "
             f"{t['threshold']:.2f}. Stream: {summary['stream']}.", ""]
    if fixed is None:
        lines.append("Fixed-size design: no difference was observed, so there is nothing to size.")
    else:
        d = (t["only_b"] - t["only_a"]) / n
        lines.append(f"Fixed-size design: an exact McNemar test at the same alpha with {100 * summary['power']:.0f}% "
                     f"power would need {fixed} pairs to detect the observed difference (B − A {100 * d:+.1f} pp, "
                     f"discordance {summary['discordance']:.2f}); "
                     + (f"the sequential test used {n}. The difference seen when a sequential test stops early tends "
                        "to be larger than the true one, which flatters the fixed design: the comparison is "
                        "conservative." if summary["decision"] != "undecided"
                        else f"the sequential test ran its budget of {n} without deciding."))
    if summary["detectable"]:
        lines += ["", f"What the pairs run could have found: {detectable_sentence(summary['detectable'])}"]
    lines += ["", f"Each policy's episodes: `{summary['episodes']['A']}`, `{summary['episodes']['B']}` (results.json, "
              "summary.md, episodes.csv of the pairs used; `mvla-sim compare --eval` pairs them)."]
    return "\n".join(lines) + "\n"
