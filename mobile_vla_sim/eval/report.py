"""Result files of one evaluation: results.json, episodes.csv, summary.md and a trajectory plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from mobile_vla_sim.errors import EvalError, OutputError
from mobile_vla_sim.eval.metrics import rate
from mobile_vla_sim.eval.records import CSV_COLUMNS, EpisodeRecord
from mobile_vla_sim.eval.schema import Aggregates, OfflineMetrics, Results, Throughput, json_safe
from mobile_vla_sim.io import AtomicFile, atomic_write

OUTCOME_COLOURS = {"success": "tab:green", "collision": "tab:red", "wrong_side": "tab:orange",
                   "out_of_bounds": "tab:purple", "timeout": "tab:gray"}


def pct(rate: float | None) -> str:
    """A rate as a whole percentage for tables; "–" when undefined."""
    return "–" if rate is None or not math.isfinite(rate) else f"{100 * rate:.0f}%"


def rate_cell(r: dict) -> str:
    """A `metrics.rate` for tables: "rate [low, high] (k/n)"."""
    lo, hi = r["ci95"]
    return f"{pct(r['rate'])} [{pct(lo)}, {pct(hi)}] ({r['k']}/{r['n']})"


def p_cell(p: float | None) -> str:
    """A p-value for tables: "< 0.001" below that, 3 decimals otherwise, "–" when not tested."""
    return "–" if p is None or not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def adjustment_name(method: str) -> str:
    """The multiplicity adjustment's name for reports ("Holm", "Benjamini-Hochberg")."""
    from mobile_vla_sim.eval.stats import ADJUSTMENTS

    return ADJUSTMENTS[method][1].split(" (")[0]


def detectable_sentence(d: dict) -> str:
    """A `stats.detectable_difference` in words: what a paired McNemar comparison on these episodes detects."""
    diff = d["difference"]
    found = (f"detect a success difference of {100 * diff:.0f} percentage points or more"
             if diff is not None and math.isfinite(diff) else "are too few to detect any difference")
    source = ("observed" if d["discordance_source"] == "observed"
              else "assumed: none was measured (`eval.stats.DEFAULT_DISCORDANCE`)")
    return (f"{d['pairs']} paired episodes {found} with {100 * d['power']:.0f}% power in an exact McNemar test at "
            f"alpha = {d['alpha']:.3g} (discordance {d['discordance']:.2f}, {source}; `mvla-sim plan` sizes a run).")


def success_cell(stats: dict) -> str:
    return rate_cell(stats["success"])


def _grounding_cell(g: dict) -> str:
    if not g or not g["pairs"]:
        return "–"
    return (f"{pct(g['both_success']['rate'])} both / {pct(g['same_side']['rate'])} same side / "
            f"{pct(g['same_path']['rate'])} same path")


def summary_rows(policy: str, aggregates: dict) -> list[str]:
    """Markdown table rows (one per difficulty, then overall) for one policy's aggregates."""
    rows = []
    groups = [*aggregates["by_difficulty"].items(), ("all", aggregates["overall"])]
    for name, stats in groups:
        g = aggregates["grounding"].get("overall" if name == "all" else name, {})
        spl = stats["spl"]
        spl_cell = "–" if spl is None or not math.isfinite(spl) else f"{spl:.2f}"
        rows.append(f"| {policy} | {name} | {success_cell(stats)} | {spl_cell} | "
                    f"{pct(stats['collision_rate'])} | {pct(stats['wrong_side_rate'])} | "
                    f"{pct(stats['timeout_rate'])} | {_grounding_cell(g)} |")
    return rows


SUMMARY_HEADER = ("| policy | difficulty | success [95% CI] | SPL | collisions | wrong side | timeouts | grounding (paired scenes) |\n"
                  "|---|---|---|---|---|---|---|---|")


OFFLINE_HEADER = ("| policy | frames | RMSE | RMSE per dim | MAE | sign agreement |\n"
                  "|---|---|---|---|---|---|")


def offline_row(policy: str, offline: dict) -> str:
    dims = ", ".join(f"{k} {v:.3f}" for k, v in offline["rmse_per_dim"].items())
    return (f"| {policy} | {offline['frames']} | {offline['rmse']:.3f} | {dims} | {offline['mae']:.3f} | "
            f"{pct(offline['sign_agreement'])} |")


def offline_table(policy: str, offline: dict) -> str:
    """Markdown table of offline metrics on held-out demonstrations."""
    return f"{OFFLINE_HEADER}\n{offline_row(policy, offline)}"


def failure_table(aggregates: dict) -> str:
    """Markdown table of the primary failure labels per difficulty and overall: count (share of all episodes).

    Only labels that occur somewhere get a column; "" when no episode failed or the aggregates predate labels.
    """
    if "failures" not in aggregates["overall"]:
        return ""
    counts = aggregates["overall"]["failures"]["counts"]  # every label of the family, in its precedence order
    seen = [name for name, k in counts.items() if k]
    if not seen:
        return ""
    rows = [f"| difficulty | failed | {' | '.join(n.replace('_', ' ') for n in seen)} |",
            "|---|---|" + "---|" * len(seen)]
    for name, stats in [*aggregates["by_difficulty"].items(), ("all", aggregates["overall"])]:
        f = stats["failures"]
        cells = " | ".join(f"{f['counts'][n]} ({pct(f['rates'][n])})" for n in seen)
        rows.append(f"| {name} | {f['failed']}/{f['episodes']} | {cells} |")
    return "\n".join(rows)


def real_trials_table(aggregates: dict, real_trials: dict[str, tuple[int, int]]) -> str:
    """Sim success beside a deployed policy's real trials, for the levels run that are real trial conditions."""
    levels = [level for level in real_trials if level in aggregates["by_difficulty"]]
    if not levels:
        return ""
    rows = ["| condition | sim success [95% CI] | real trials [95% CI] |", "|---|---|---|"]
    for level in levels:
        k, n = real_trials[level]
        rows.append(f"| {level} | {success_cell(aggregates['by_difficulty'][level])} | {rate_cell(rate(k, n))} |")
    return "\n".join(rows)


def detectable(records: Sequence[EpisodeRecord]) -> dict:
    """What an evaluation's episodes could detect (`schema.Results.detectable`)."""
    from mobile_vla_sim.eval.stats import detectable_difference, minimum_detectable_effect

    n = len(records)
    rate = sum(r.success for r in records) / n if n else float("nan")
    return {"episodes": n, "success": rate, "alpha": 0.05, "power": 0.8,
            "rate": minimum_detectable_effect(n, rate) if n else float("nan"), "paired": detectable_difference(n)}


def _stopping_note(stopping: dict) -> str:
    lo, hi = stopping["confidence_sequence"]
    how = (f"its anytime-valid 95% interval was at most +-{stopping['target_halfwidth']:g}" if stopping["reached"]
           else f"the budget ran out before its anytime-valid 95% interval reached +-{stopping['target_halfwidth']:g}")
    return (f"**Stopped after {stopping['episodes']} of {stopping['budget']} episodes** (run index by index, every "
            f"difficulty and side in turn), when {how}: success {pct(stopping['rate'])} [{pct(lo)}, {pct(hi)}], a "
            "confidence sequence valid at whatever episode the run stops (Robbins 1970; Howard et al. 2021). The "
            "Wilson intervals below assume the number of episodes was fixed in advance; report this one.")


def summary_markdown(policy: str, aggregates: dict, offline: dict | None = None, note: str = "",
                     found: dict | None = None, stopping: dict | None = None,
                     real_trials: dict[str, tuple[int, int]] | None = None) -> str:
    """summary.md: a closed-loop table a person can paste into a paper, plus offline metrics when given, what the
    run could detect (`found`: `detectable`), where a `--target-halfwidth` run stopped, and the real trials of the
    task family's real conditions beside their sim scores."""
    parts = [f"# Evaluation of `{policy}`", "", *([note, ""] if note else []),
             *([_stopping_note(stopping), ""] if stopping else []), SUMMARY_HEADER, *summary_rows(policy, aggregates),
             "", "Success: Wilson 95% interval. SPL: success weighted by path length (Anderson et al. 2018). "
             "Grounding: on scenes run with both instructions, how often both succeed / the robot goes around the "
             "same side whatever the instruction / the left and right runs follow the same path (the instruction "
             "is ignored)."]
    if found and found["episodes"]:
        change = found["rate"]
        parts += ["", "What these episodes can detect (80% power, alpha 0.05): a change of the success rate from "
                  f"its observed {pct(found['success'])} by "
                  + (f"{100 * change:.0f} percentage points or more" if math.isfinite(change)
                     else "no amount (too few episodes)")
                  + f"; against another policy on the same episodes: {detectable_sentence(found['paired'])}"]
    failures = failure_table(aggregates)
    if failures:
        parts += ["", "## Failure labels", "", failures, "",
                  "One primary label per failed episode, the first that applies in the order "
                  f"{', '.join(aggregates['overall']['failures']['counts'])} (definitions: "
                  "`mobile_vla_sim.eval.taxonomy`); rates are shares of all "
                  "episodes. episodes.csv lists each episode's label and every label that applies (failure_flags)."]
    real = real_trials_table(aggregates, real_trials or {})
    if real:
        parts += ["", "## Beside the real trials", "", real, "",
                  "The real column is the deployed policy's published trials per condition (not this policy's): a sim "
                  "score sits beside what the real robot achieved in the same condition. `mvla-sim agree` compares "
                  "several policies' sim and real scores."]
    if offline:
        parts += ["", f"## Offline metrics ({offline['split']} split of `{offline['data']}`)", "",
                  offline_table(policy, offline)]
    return "\n".join(parts) + "\n"


def write_csv(path: Path, records: Sequence[EpisodeRecord]) -> None:
    with AtomicFile(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.csv_row() for r in records)


def plot_trajectories(path: Path, records: Sequence[EpisodeRecord], title: str = "") -> None:
    """Top-down plot of every trajectory, one panel per difficulty, coloured by outcome."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from mobile_vla_sim.plotting import subplots

    difficulties = list(dict.fromkeys(r.difficulty for r in records)) or ["none"]
    fig, axes = subplots(1, len(difficulties), figsize=(4.2 * len(difficulties), 4.6), squeeze=False)
    for ax, diff in zip(axes[0], difficulties):
        for r in (r for r in records if r.difficulty == diff):
            if r.trajectory:
                xs, ys = zip(*[(p[0], p[1]) for p in r.trajectory])
                ax.plot(xs, ys, color=OUTCOME_COLOURS[r.outcome], lw=0.9, alpha=0.6)
            for ox, oy, hx, hy in r.obstacles:
                ax.add_patch(Rectangle((ox - hx, oy - hy), 2 * hx, 2 * hy, color="0.45", alpha=0.15, lw=0))
            if r.goal:
                ax.plot(r.goal[0], r.goal[1], "*", color="k", ms=6, alpha=0.3)
        ax.set_title(diff)
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m] (+y left)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, label=n.replace("_", " ")) for n, c in OUTCOME_COLOURS.items()]
    handles += [Line2D([], [], marker="s", ls="", color="0.45", label="box"),
                Line2D([], [], marker="*", ls="", color="k", label="goal")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title or "Trajectories by outcome")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    with AtomicFile(path, keep_suffix=True) as tmp:  # matplotlib picks the format from the suffix
        fig.savefig(tmp, dpi=110)


def results_file(*, policy: str, config: dict, records: Sequence[EpisodeRecord], aggregates: Aggregates,
                 offline: dict | None = None, interrupted: bool = False, throughput: Throughput | None = None,
                 stopping: dict | None = None) -> Results:
    """The `schema.Results` of an evaluation (what results.json holds); `offline` is `OfflineMetrics.to_dict()`."""
    return Results(policy=policy, config=config, aggregates=aggregates, episodes=list(records),
                   offline=OfflineMetrics(**offline) if offline else None, interrupted=interrupted,
                   throughput=throughput or {}, detectable=detectable(records), stopping=stopping)


def write_results(out_dir: Path, *, policy: str, config: dict, records: Sequence[EpisodeRecord],
                  aggregates: Aggregates, offline: dict | None = None, interrupted: bool = False,
                  throughput: Throughput | None = None, stopping: dict | None = None,
                  real_trials: dict[str, tuple[int, int]] | None = None) -> dict:
    """Write results.json (`results_file`), episodes.csv, summary.md and trajectories.png into `out_dir`; return
    the paths. `offline` is `OfflineMetrics.to_dict()`; `real_trials` the task family's (summary.md sets them beside
    the sim scores)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("results.json", "episodes.csv", "summary.md", "trajectories.png")}
    results = results_file(policy=policy, config=config, records=records, aggregates=aggregates, offline=offline,
                           interrupted=interrupted, throughput=throughput, stopping=stopping)
    atomic_write(paths["results.json"], results.to_json())
    write_csv(paths["episodes.csv"], records)
    note = "**Interrupted: only the finished episodes are counted.**" if interrupted else ""
    atomic_write(paths["summary.md"], summary_markdown(policy, aggregates, offline, note, results.detectable,
                                                       stopping, real_trials))
    plot_trajectories(paths["trajectories.png"], records, title=f"{policy}: trajectories by outcome")
    return paths


def read_results(path: str | Path) -> Results:
    """Load a results.json (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise EvalError(f"no evaluation results at {path}: run `mvla-sim eval --out DIR` first")
    try:
        return Results.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError: bad JSON, not UTF-8
        raise EvalError(f"{path} is not a valid results.json ({exc}); re-run `mvla-sim eval`") from exc


def results_table(result_dirs: Sequence[str | Path]) -> str:
    """Markdown over several evaluations on the same episode set (e.g. baselines and checkpoints): the closed-loop
    table, then offline metrics for those evaluated with offline data."""
    rows, offline_rows = [], []
    for path in result_dirs:
        results = read_results(path)
        rows += summary_rows(results.policy, results.aggregates)
        if results.offline:
            offline_rows.append(offline_row(results.policy, results.offline.to_dict()))
    parts = [SUMMARY_HEADER, *rows]
    if offline_rows:
        parts += ["", OFFLINE_HEADER, *offline_rows]
    return "\n".join(parts) + "\n"


#: The episodes of an evaluation as they finish, one JSON line each after a header line naming the evaluation. A
#: SIGKILL, a crash or a full disk at the end cannot lose them: the next run of the same command resumes from them.
#: It is removed once results.json holds every finished episode.
JOURNAL = "episodes.jsonl"
JOURNAL_FORMAT = "mobile-vla-sim/eval-episodes/v1"


def _line(data: dict[str, Any]) -> str:
    return json.dumps(json_safe(data)) + "\n"


class EpisodeJournal:
    """The `JOURNAL` of one evaluation in `out_dir`, started over (atomically) with its header and the `kept`
    episodes of an earlier journal; `append(record)` then writes and flushes one line (the OS holds it even if this
    process is killed the next instant)."""

    def __init__(self, out_dir: str | Path, policy: str, config: dict[str, Any],
                 kept: Sequence[EpisodeRecord] = ()):
        self.path = Path(out_dir) / JOURNAL
        header = {"format": JOURNAL_FORMAT, "policy": policy, "config": config}
        try:
            atomic_write(self.path, "".join([_line(header), *(_line(r.to_dict()) for r in kept)]))
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as err:
            raise self._error(err) from None

    def _error(self, err: OSError) -> OutputError:
        return OutputError(f"cannot write {self.path} ({err.strerror or err}); free space or choose another --out, "
                           "then run the same command again (finished episodes are kept)")

    def _write(self, line: dict[str, Any]) -> None:
        try:
            self._file.write(_line(line))
            self._file.flush()
        except OSError as err:
            raise self._error(err) from None

    def append(self, record: EpisodeRecord) -> None:
        self._write(record.to_dict())

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # every line was flushed when written; what failed was reported then


def read_journal(out_dir: str | Path) -> tuple[dict[str, Any], list[EpisodeRecord]] | None:
    """(header, finished episodes) of the `JOURNAL` in `out_dir`, None when there is none. A last line cut short by
    a kill is skipped; anything else unreadable is a one-line `EvalError`."""
    path = Path(out_dir) / JOURNAL
    if not path.is_file():
        return None
    bad = EvalError(f"{path} is not an episode journal of mobile-vla-sim; delete it (or choose another --out)")
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        raise bad from None
    records, header = [], None
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if header is None:
                if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT or \
                        not isinstance(data.get("config"), dict):
                    raise ValueError("no header")
                header = data
            else:
                records.append(EpisodeRecord.from_dict(data))
        except (ValueError, TypeError, AttributeError):
            if n == len(lines) - 1:
                break  # the line being written when the process died (no newline yet)
            raise bad from None
    return (header, records) if header is not None else None
