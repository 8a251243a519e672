"""Frozen vs LoRA (or any two checkpoints): representations, offline and closed-loop performance, hypotheses.

Answers the real project's open question (frozen or LoRA?) with one report. Both policies are probed on the
*same* windows of the validation split (the one training validated on, `datasets.splits`), so every representation
measure is paired; closed-loop success is compared on the *same* seeded episodes with the exact McNemar test.

Hypotheses of the real project, evaluated on the measured numbers:

* H1: context similarity > 0.8, where "context similarity" is the mean per-token cosine similarity of the
  Kosmos-2 context vectors (64 latent tokens per frame) of A and B on the same frames.
* H2: latent difference > 0.3, where "latent difference" is ``1 − mean cosine(h_n(A), h_n(B))`` over the
  same windows (h_n: last LSTM layer's final hidden state).
* H3: ``|val loss(A) − val loss(B)| < 0.01``, both losses measured here on the same validation split.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mobile_vla_sim.config import check_knobs, knob, to_dict
from mobile_vla_sim.envs.difficulty import DIFFICULTIES
from mobile_vla_sim.errors import EvalError, OutputError
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.paths import check_output_dir
from mobile_vla_sim.progress import bar as progress_bar
from mobile_vla_sim.eval.metrics import summarize as summarize_records
from mobile_vla_sim.eval.records import EpisodeRecord
from mobile_vla_sim.eval.report import adjustment_name, detectable_sentence, read_results, success_cell
from mobile_vla_sim.eval.schema import json_safe
from mobile_vla_sim.analysis.similarity import RepresentationComparison, compare_representations
from mobile_vla_sim.eval.stats import ADJUSTMENTS, adjust_pvalues, detectable_difference, mcnemar_exact

H1_MIN_CONTEXT_COSINE = 0.8
H2_MIN_LATENT_DIFFERENCE = 0.3
H3_MAX_LOSS_DIFFERENCE = 0.01
COSINE_BOUNDS = (-1.0, 1.0)

#: Representation name → (features key, token axis averaged for pooled values and CKA, report title).
REPRESENTATIONS: dict[str, tuple[str, int | None, str]] = {
    "context": ("context", 2, "Context vectors (Kosmos-2 image features, per latent token)"),
    "action_token": ("action_token", None, "Action-token hidden state (LSTM input, per frame)"),
    "h_n": ("h_n", None, "LSTM final hidden state h_n (per window)"),
}


@dataclass
class CompareConfig:
    """What to compare and where to write the report."""

    checkpoint_a: Path = knob(help="first checkpoint (A, e.g. frozen)", argument=True)
    checkpoint_b: Path = knob(help="second checkpoint (B, e.g. LoRA)", argument=True)
    data: Path = knob(help="dataset folder; both policies are probed on the same windows of its val split")
    eval_dirs: tuple[Path, Path] | None = knob(None, "`mvla-sim eval --out` folders of A and B, for the paired "
                                               "closed-loop comparison", flag="--eval", nargs=2)
    out: Path = knob(Path("runs/compare"), "folder for report.md, compare.json and plots")
    max_windows: int = knob(64, "validation windows probed (the same for both policies)", min=2)
    seed: int = knob(0, "window sampling and t-SNE seed", min=0)
    alpha: float = knob(0.05, "significance level of the McNemar tests, after the adjustment for multiplicity",
                        min=0.0, max=1.0)
    adjust: str = knob("holm", "multiplicity adjustment over the closed-loop tests (each difficulty and all): holm "
                       "(family-wise error) or bh (Benjamini-Hochberg: false discovery rate)",
                       choices=tuple(ADJUSTMENTS))

    def __post_init__(self) -> None:
        check_knobs(self)
        self.checkpoint_a, self.checkpoint_b = Path(self.checkpoint_a), Path(self.checkpoint_b)
        self.data, self.out = Path(self.data), Path(self.out)
        if self.eval_dirs is not None:
            if len(self.eval_dirs) != 2:
                raise EvalError(f"eval_dirs needs two result directories (A then B), got {len(self.eval_dirs)}")
            self.eval_dirs = (Path(self.eval_dirs[0]), Path(self.eval_dirs[1]))
        if self.max_windows < 2:
            raise EvalError(f"max_windows must be at least 2 to compare representations, got {self.max_windows}")
        if not 0.0 < self.alpha < 1.0:
            raise EvalError(f"alpha must be in (0, 1), got {self.alpha}")


# --- probing the two policies ------------------------------------------------------------------


@dataclass
class PolicyProbe:
    """What one checkpoint produced on the shared validation windows."""

    label: str
    features: dict[str, Any]
    offline: dict[str, float]
    checkpoint_val_loss: float | None


def _label(path: Path, metadata: dict) -> str:
    mode = metadata.get("mode") if isinstance(metadata, dict) else None
    return f"{mode} ({path.stem})" if mode and mode not in path.stem else path.stem


def probe_checkpoint(path: Path, episodes, cfg: CompareConfig) -> PolicyProbe:
    """Load a checkpoint and measure it on the validation windows (features) and episodes (the training objective,
    and the RMSE of `mvla-sim eval --offline-data`)."""
    from mobile_vla_sim.eval.offline import offline_metrics
    from mobile_vla_sim.analysis.features import extract_features
    from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint
    from mobile_vla_sim.policies.train import dataset_loss

    policy = load_policy_checkpoint(path)
    try:
        metadata = policy.checkpoint
        features = extract_features(policy, episodes, max_windows=cfg.max_windows, seed=cfg.seed)
        offline = {"loss": dataset_loss(policy.model, episodes), "rmse": offline_metrics(policy, episodes).rmse}
    finally:
        policy.close()
    val_loss = metadata.get("val_loss")
    return PolicyProbe(_label(path, metadata), features, offline, None if val_loss is None else float(val_loss))


def _check_same_windows(a: dict, b: dict) -> None:
    for key in ("episode", "frame"):
        if not np.array_equal(np.asarray(a[key]), np.asarray(b[key])):
            raise EvalError(f"the two checkpoints were probed on different windows ('{key}' differs); "
                            "use checkpoints with the same window length and the same --data")


# --- closed loop ---------------------------------------------------------------------------------


def _episode_key(r: EpisodeRecord) -> tuple:
    return (int(r.seed), r.difficulty, r.task, int(r.index))


def _success_table(records: Sequence[EpisodeRecord]) -> dict[str, dict]:
    """Closed-loop summary (success with Wilson 95% CI, SPL, failure modes) per difficulty and overall."""
    groups: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for r in records:
        groups[r.difficulty].append(r)
    order = [d for d in DIFFICULTIES if d in groups] + sorted(set(groups) - set(DIFFICULTIES))
    table = {d: summarize_records(groups[d]) for d in order}
    table["all"] = summarize_records(records)
    return table


def closed_loop_comparison(eval_dirs: tuple[Path, Path] | None, alpha: float = 0.05, adjust: str = "holm") -> dict:
    """Success per difficulty for A and B, and the exact McNemar test on the episodes both ran, per difficulty and
    overall: one family of tests, significance decided on p-values adjusted over it (with one difficulty, its test
    is the overall one, counted once). Also what the overall test could detect (`stats.detectable_difference`)."""
    if eval_dirs is None:
        return {"status": "not run"}
    recs_a, recs_b = (read_results(d).episodes for d in eval_dirs)
    by_key_b = {_episode_key(r): r for r in recs_b}
    shared = [(r, by_key_b[_episode_key(r)]) for r in recs_a if _episode_key(r) in by_key_b]
    paired: dict[str, Any] = {}
    groups: dict[str, list] = defaultdict(list)
    for pair in shared:
        groups[pair[0].difficulty].append(pair)
    tests = {}
    for name, pairs in [*groups.items(), ("all", shared)]:  # levels in the episode set's order
        if pairs:
            tests[name] = mcnemar_exact(np.array([a.success for a, _ in pairs]),
                                        np.array([b.success for _, b in pairs]))
    single = len(tests) == 2  # one difficulty: its test is the overall one, counted once
    family = [g for g in tests if not (single and g == "all")]
    adjusted = dict(zip(family, adjust_pvalues([tests[g].p_value for g in family], adjust))) if family else {}
    if single:
        adjusted["all"] = adjusted[family[0]]
    for name, test in tests.items():
        p_adjusted = float(adjusted[name])
        paired[name] = {**test.to_dict(alpha), "p_adjusted": p_adjusted, "significant": bool(p_adjusted < alpha)}
    overall = tests.get("all")
    return {"status": "run", "episodes_a": len(recs_a), "episodes_b": len(recs_b), "shared_episodes": len(shared),
            "success_a": _success_table(recs_a), "success_b": _success_table(recs_b), "mcnemar": paired,
            "adjustment": {"method": adjust, "name": ADJUSTMENTS[adjust][1], "tests": len(family), "alpha": alpha},
            "detectable": detectable_difference(len(shared), overall.discordance if overall else None, alpha)}


# --- hypotheses ----------------------------------------------------------------------------------


def evaluate_hypotheses(reps: dict[str, RepresentationComparison], loss_a: float, loss_b: float) -> dict:
    """H1-H3 of the real project on the measured numbers, each with its value, threshold and verdict."""
    context_cos = float(reps["context"].per_token_cosine.mean())
    latent_diff = 1.0 - float(reps["h_n"].per_token_cosine.mean())
    loss_diff = abs(loss_a - loss_b)
    rows = {
        "H1": ("context similarity (mean per-token cosine)", context_cos, ">", H1_MIN_CONTEXT_COSINE,
               context_cos > H1_MIN_CONTEXT_COSINE),
        "H2": ("latent difference (1 - mean cosine of h_n)", latent_diff, ">", H2_MIN_LATENT_DIFFERENCE,
               latent_diff > H2_MIN_LATENT_DIFFERENCE),
        "H3": ("abs(val loss A - val loss B)", loss_diff, "<", H3_MAX_LOSS_DIFFERENCE,
               loss_diff < H3_MAX_LOSS_DIFFERENCE),
    }
    return {k: {"measure": m, "value": v, "op": op, "threshold": t, "holds": bool(h)}
            for k, (m, v, op, t, h) in rows.items()}


# --- plots ---------------------------------------------------------------------------------------


def _tsne(points: np.ndarray, seed: int) -> np.ndarray | None:
    """2-D t-SNE embedding; perplexity shrunk for few points (it must stay below the sample count)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(points)
    if n < 4:
        return None
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):  # a few hundred points: OpenMP threads only contend
        return tsne.fit_transform(points)


def _axis_range(values: np.ndarray, bounds: tuple[float | None, float | None],
                threshold: float | None) -> tuple[float, float]:
    """x-range showing the data and the threshold, at least 5% of the values' magnitude wide, inside `bounds`."""
    marks = [float(values.min()), float(values.max())] + ([threshold] if threshold is not None else [])
    lo, hi = min(marks), max(marks)
    width = max(hi - lo, 0.05 * max(abs(lo), abs(hi), 1e-6))
    x0, x1 = (lo + hi - width) / 2 - 0.04 * width, (lo + hi + width) / 2 + 0.04 * width
    if bounds[1] is not None and x1 > bounds[1]:
        x0, x1 = x0 - (x1 - bounds[1]), bounds[1]
    if bounds[0] is not None and x0 < bounds[0]:
        x0, x1 = bounds[0], x1 + (bounds[0] - x0)
    return (x0 if bounds[0] is None else max(x0, bounds[0]), x1 if bounds[1] is None else min(x1, bounds[1]))


def _plot_histogram(ax, values: np.ndarray, title: str, xlabel: str, bounds: tuple[float | None, float | None],
                    threshold: float | None = None, threshold_label: str = "") -> None:
    """Histogram binned over the displayed range, so near-identical values still show as a visible bar."""
    values = np.clip(np.asarray(values, dtype=float), bounds[0], bounds[1])  # rounding can give cosine 1 + 1e-16
    x0, x1 = _axis_range(values, bounds, threshold)
    ax.hist(values, bins=np.linspace(x0, x1, 41), color="tab:blue", alpha=0.85, zorder=3)
    ax.axvline(values.mean(), color="black", linestyle=":", zorder=4,
               label=f"mean {values.mean():.4g} (std {values.std():.2g})")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", label=threshold_label)
    ax.set_xlim(x0, x1)
    ax.set(title=title, xlabel=xlabel, ylabel="count")
    ax.legend(fontsize=8, loc="best", framealpha=0.9)


def _plot_context(rep: RepresentationComparison, tokens: int, path: Path, labels: tuple[str, str]) -> None:
    from mobile_vla_sim.plotting import subplots

    fig, axes = subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    _plot_histogram(axes[0], rep.per_token_cosine, "Per-token cosine of context vectors", "cosine similarity",
                    COSINE_BOUNDS, H1_MIN_CONTEXT_COSINE, f"H1 threshold {H1_MIN_CONTEXT_COSINE}")
    per_token = rep.per_token_cosine.reshape(-1, tokens)
    mean, std = per_token.mean(0), per_token.std(0)
    idx = np.arange(tokens)
    axes[1].plot(idx, mean, color="tab:blue", label="mean over frames")
    axes[1].fill_between(idx, mean - std, np.minimum(mean + std, 1.0), color="tab:blue", alpha=0.25,
                         label="± 1 std (capped at 1)")
    axes[1].axhline(H1_MIN_CONTEXT_COSINE, color="tab:red", linestyle="--", label="H1 threshold")
    axes[1].set(title="Cosine by latent token index", xlabel="latent token index", ylabel="cosine similarity")
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"Context vectors: {labels[0]} vs {labels[1]}")
    fig.savefig(path, dpi=110)


def _plot_latent(reps: dict[str, RepresentationComparison], path: Path, labels: tuple[str, str]) -> None:
    from mobile_vla_sim.plotting import subplots

    fig, axes = subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    h_n = reps["h_n"]
    _plot_histogram(axes[0], h_n.per_token_cosine, "Cosine of h_n per window", "cosine similarity",
                    COSINE_BOUNDS, 1.0 - H2_MIN_LATENT_DIFFERENCE,
                    f"H2: cosine {1 - H2_MIN_LATENT_DIFFERENCE:.1f} = difference {H2_MIN_LATENT_DIFFERENCE}")
    _plot_histogram(axes[1], h_n.per_token_euclidean, "Euclidean distance of h_n per window", "distance",
                    (0.0, None))
    _plot_histogram(axes[2], reps["action_token"].per_token_cosine, "Cosine of action-token state per frame",
                    "cosine similarity", COSINE_BOUNDS)
    fig.suptitle(f"Latent states: {labels[0]} vs {labels[1]}")
    fig.savefig(path, dpi=110)


def _plot_tsne(h_a: np.ndarray, h_b: np.ndarray, tasks: np.ndarray, labels: tuple[str, str], seed: int,
               path: Path) -> bool:
    from mobile_vla_sim.plotting import subplots

    embedding = _tsne(np.concatenate([h_a, h_b]).astype(np.float64), seed)
    if embedding is None:
        return False
    n = len(h_a)
    policy = np.array([labels[0]] * n + [labels[1]] * n)
    task = np.concatenate([tasks, tasks])
    markers = {labels[0]: "o", labels[1]: "^"}
    fig, axes = subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    # Sides and policies get different colour sets, so blue never means "left" in one panel and a policy in the other.
    panels = ((axes[0], task, "coloured by task side", ("tab:blue", "tab:orange")),
              (axes[1], policy, "coloured by policy", ("tab:green", "tab:purple")))
    for ax, colour_by, title, colours in panels:
        for value, colour in zip(dict.fromkeys(colour_by), colours):
            for name, marker in markers.items():
                sel = (colour_by == value) & (policy == name)
                if sel.any():
                    label = f"{value} ({name})" if colour_by is task else str(value)
                    ax.scatter(*embedding[sel].T, s=22, marker=marker, color=colour, alpha=0.75, label=label)
        ax.set(title=title, xlabel="t-SNE 1", ylabel="t-SNE 2")
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")
    fig.suptitle(f"t-SNE of LSTM h_n: {labels[0]} (o) and {labels[1]} (^) on the same windows")
    fig.savefig(path, dpi=110)
    return True


# --- report --------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(result: dict) -> str:
    """Markdown report of a `compare` result (tables and the embedded plots)."""
    a, b = result["labels"]
    out = [f"# Policy comparison: {a} (A) vs {b} (B)", "",
           f"- A: `{result['checkpoints'][0]}`", f"- B: `{result['checkpoints'][1]}`",
           f"- data: `{result['data']}` (val split: {len(result['val_episodes'])} episodes), {result['windows']} "
           f"windows, seed {result['seed']}", *([f"- {result['val_note']}"] if result["val_note"] else []), "",
           "## Hypotheses", "",
           _table(["", "measure", "value", "threshold", "verdict"],
                  [[k, h["measure"], h["value"], f"{h['op']} {h['threshold']}",
                    "holds" if h["holds"] else "does not hold"] for k, h in result["hypotheses"].items()]),
           "", "## Offline performance (validation split)", "",
           _table(["", "val loss", "RMSE", "val loss in checkpoint"],
                  [[f"A: {a}", *(result["offline"]["a"][k] for k in ("loss", "rmse", "checkpoint_val_loss"))],
                   [f"B: {b}", *(result["offline"]["b"][k] for k in ("loss", "rmse", "checkpoint_val_loss"))]]),
           "", "## Closed-loop success", ""]
    closed = result["closed_loop"]
    if closed["status"] != "run":
        out.append("Closed-loop comparison: **not run** (pass `--eval A_RESULTS_DIR B_RESULTS_DIR`).")
    else:
        rows = [[d, success_cell(closed["success_a"][d]) if d in closed["success_a"] else "-",
                 success_cell(closed["success_b"][d]) if d in closed["success_b"] else "-"]
                for d in dict.fromkeys([*closed["success_a"], *closed["success_b"]])]
        family = closed["adjustment"]
        method = adjustment_name(family["method"])
        out += [_table(["difficulty", f"A: {a} success [95% Wilson CI] (k/n)", f"B: {b} success [95% Wilson CI] (k/n)"],
                       rows), "",
                f"Exact McNemar test on the {closed['shared_episodes']} episodes both policies ran "
                f"(matched by seed, difficulty, task, index); significant: {method}-adjusted p < {family['alpha']:g} "
                f"over the {family['tests']} tests of this table ({family['name']}).", ""]
        if not closed["mcnemar"]:
            out.append("No episode appears in both result files: evaluate both policies with the same "
                       "`--seed`, difficulties and episode count to pair them.")
        else:
            out.append(_table(["difficulty", "pairs", "both succeed", "only A", "only B", "both fail", "p-value",
                               f"{method} p", "significant"],
                              [[d, t["n"], t["both_success"], t["only_a"], t["only_b"], t["both_fail"], t["p_value"],
                                t["p_adjusted"], "yes" if t["significant"] else "no"]
                               for d, t in closed["mcnemar"].items()]))
            out += ["", f"What the overall test could detect: {detectable_sentence(closed['detectable'])}"]
    out += ["", "## Representations", "",
            "Cosine, Euclidean and KL are per feature vector (per latent token for context vectors), then averaged; "
            "'pooled' averages the tokens of a frame first. KL: softmax over the feature dimension, symmetric "
            "(KL(A||B) + KL(B||A)) / 2, nats. Pearson: correlation of the two mean feature vectors. "
            "CKA: linear CKA (Kornblith et al. 2019) over pooled vectors.", ""]
    rows = []
    for name, rep in result["representations"].items():
        rows.append([name, rep["cosine_per_token"]["mean"], rep["cosine_pooled"]["mean"],
                     rep["euclidean_per_token"]["mean"], f"{rep['mean_norm_a']:.3g} / {rep['mean_norm_b']:.3g}",
                     rep["kl_symmetric_per_token"]["mean"], rep["pearson_mean_features"], rep["linear_cka"]])
    out.append(_table(["representation", "cosine (per token)", "cosine (pooled)", "Euclidean", "norm A / B",
                       "KL (sym.)", "Pearson (mean feat.)", "linear CKA"], rows))
    out += ["", "## Plots", ""]
    for title, name in (("Context-vector similarity", "context"), ("Latent-state similarity", "latent"),
                        ("t-SNE of h_n", "tsne")):
        if name in result["plots"]:
            out += [f"### {title}", "", f"![{title}]({result['plots'][name]})", ""]
    if "tsne" not in result["plots"]:
        out += ["t-SNE: not drawn (fewer than 4 points).", ""]
    return "\n".join(out)


# --- entry point ---------------------------------------------------------------------------------


def _check_inputs(cfg: CompareConfig) -> None:
    """Refuse what cannot be compared before any slow work: non-checkpoints, unlike action layouts, missing folders."""
    from mobile_vla_sim.policies.checkpoint import read_checkpoint_config

    for name, path in (("checkpoint A", cfg.checkpoint_a), ("checkpoint B", cfg.checkpoint_b)):
        if not path.exists():
            raise EvalError(f"{name} not found: {path}; train one with `mvla-sim train`")
    drives = [read_checkpoint_config(path)["drive"] for path in (cfg.checkpoint_a, cfg.checkpoint_b)]
    if drives[0] != drives[1]:
        raise EvalError(f"{cfg.checkpoint_a} drives {drives[0]!r} but {cfg.checkpoint_b} drives {drives[1]!r}: "
                        "their actions and episodes are not comparable; compare checkpoints of one drive")
    if not cfg.data.is_dir():
        raise EvalError(f"--data {cfg.data} is not a folder; create a dataset with `mvla-sim generate`")
    for path in cfg.eval_dirs or ():
        if not path.is_dir():
            raise EvalError(f"--eval {path} is not a folder; run `mvla-sim eval --out {path}` first")
    if cfg.eval_dirs:
        results = [read_results(d) for d in cfg.eval_dirs]
        for ckpt, res, folder in zip((cfg.checkpoint_a, cfg.checkpoint_b), results, cfg.eval_dirs):
            evaluated = res.config.get("policy")
            if evaluated is not None and Path(str(evaluated)).name != ckpt.name:
                raise EvalError(f"--eval {folder} holds results of {evaluated}, not of {ckpt}; pass the eval folders "
                                "of A and B, in that order")
        if not {_episode_key(r) for r in results[0].episodes} & {_episode_key(r) for r in results[1].episodes}:
            raise EvalError(f"--eval {cfg.eval_dirs[0]} and {cfg.eval_dirs[1]} share no episode, so nothing pairs; "
                            "evaluate both with the same --seed, --difficulty and --episodes")


def write_comparison(probe_a: PolicyProbe, probe_b: PolicyProbe, cfg: CompareConfig,
                     val_episodes: Sequence[str] = (), val_note: str | None = None) -> dict:
    """Everything after probing: measures, closed loop, hypotheses, plots, `report.md` and `compare.json`.

    `val_episodes` / `val_note`: the episodes probed and why they are not the hash split, recorded in the outputs.
    """
    closed_loop = closed_loop_comparison(cfg.eval_dirs, cfg.alpha, cfg.adjust)
    fa, fb = probe_a.features, probe_b.features
    _check_same_windows(fa, fb)
    labels = (probe_a.label, probe_b.label)
    if labels[0] == labels[1]:
        labels = (f"A: {labels[0]}", f"B: {labels[1]}")
    reps = {name: compare_representations(fa[key], fb[key], token_axis=axis)
            for name, (key, axis, _) in REPRESENTATIONS.items()}

    cfg.out.mkdir(parents=True, exist_ok=True)
    plots = {"context": "context_similarity.png", "latent": "latent_similarity.png", "tsne": "tsne_h_n.png"}
    _plot_context(reps["context"], np.asarray(fa["context"]).shape[2], cfg.out / plots["context"], labels)
    _plot_latent(reps, cfg.out / plots["latent"], labels)
    if not _plot_tsne(np.asarray(fa["h_n"]), np.asarray(fb["h_n"]), np.asarray(fa["task"]).astype(str), labels,
                      cfg.seed, cfg.out / plots["tsne"]):
        del plots["tsne"]

    result = json_safe({
        "config": _job(cfg),
        "labels": list(labels),
        "checkpoints": [str(cfg.checkpoint_a), str(cfg.checkpoint_b)],
        "data": str(cfg.data),
        "val_episodes": list(val_episodes),
        "val_note": val_note,
        "seed": cfg.seed,
        "windows": int(len(np.asarray(fa["h_n"]))),
        "hypotheses": evaluate_hypotheses(reps, probe_a.offline["loss"], probe_b.offline["loss"]),
        "offline": {side: {**p.offline, "checkpoint_val_loss": p.checkpoint_val_loss}
                    for side, p in (("a", probe_a), ("b", probe_b))},
        "closed_loop": closed_loop,
        "representations": {name: rep.to_dict() for name, rep in reps.items()},
        "plots": plots,
    })
    atomic_write(cfg.out / "report.md", render_report(result))
    atomic_write(cfg.out / "compare.json", json.dumps(result, indent=2))  # last: it marks the folder complete
    return result


def _job(cfg: CompareConfig) -> dict:
    """What decides a comparison's numbers: its config but the output folder."""
    return {k: v for k, v in json_safe(to_dict(cfg)).items() if k != "out"}


def check_compare_out(cfg: CompareConfig) -> None:
    """`cfg.out` can be written, and holds no comparison of another job (a re-run of the same one replaces it)."""
    check_output_dir(cfg.out, "--out")
    done = cfg.out / "compare.json"
    if not done.exists():
        return
    try:
        job = json.loads(done.read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError):
        job = None
    if job != _job(cfg):
        raise OutputError(f"--out {cfg.out} holds another comparison (compare.json); choose another --out, or "
                          "delete that folder to replace it")


def compare(cfg: CompareConfig, progress: bool = True) -> dict:
    """Compare two checkpoints; writes `report.md`, `compare.json` and PNG plots to `cfg.out`, returns the numbers."""
    from mobile_vla_sim.datasets.reader import EpisodeDataset

    check_compare_out(cfg)
    _check_inputs(cfg)
    closed_loop_comparison(cfg.eval_dirs, cfg.alpha, cfg.adjust)  # fail on bad result files before the slow part
    episodes = EpisodeDataset(cfg.data, split="val")
    paths = progress_bar([cfg.checkpoint_a, cfg.checkpoint_b], desc="probing checkpoints", unit="checkpoint",
                         enabled=progress)
    probe_a, probe_b = (probe_checkpoint(path, episodes, cfg) for path in paths)
    return write_comparison(probe_a, probe_b, cfg, episodes.names, episodes.note)
