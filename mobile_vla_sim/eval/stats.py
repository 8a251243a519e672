"""Every statistic the package reports: intervals, the exact paired test, multiplicity, training seeds as the unit,
planning, and sequential tests that stay valid when one stops as soon as they decide.

`docs/statistics.md` says when to use which. The arithmetic comes from scipy and statsmodels; what is written here is
the glue and the choices (which interval, which reference distribution, what a decision means).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, special, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from mobile_vla_sim.errors import EvalError

#: Discordance assumed when planning a paired comparison and none was measured: the share of episodes on which
#: exactly one of the two policies succeeds. 0.5 is what two policies near 50% success with unrelated failures give;
#: policies that fail on the same hard episodes have less and need fewer episodes (measure it from a pilot run:
#: `McNemarResult.discordance`).
DEFAULT_DISCORDANCE = 0.5
#: Fewest training seeds per method for a method-level claim: with one seed the spread between training runs is
#: unknown, so any difference may be the luck of that run.
MIN_SEEDS = 2
#: Multiplicity adjustments by their option name: statsmodels' method and what it controls.
ADJUSTMENTS = {"holm": ("holm", "Holm (1979) step-down: family-wise error <= alpha"),
               "bh": ("fdr_bh", "Benjamini-Hochberg (1995): false discovery rate <= alpha")}


class StatsInputError(EvalError):
    """Input a statistic cannot use (mismatched pairs, non-binary outcomes, a level outside (0, 1))."""


def _check_level(value: float, what: str) -> None:
    if not 0 < value < 1:
        raise StatsInputError(f"{what} must be between 0 and 1 (exclusive), got {value}")


def _z(p: float) -> float:
    return float(stats.norm.ppf(p))


# --- intervals and the exact paired test ------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); well-behaved at 0% and 100%, unlike the
    normal one. No episode means no information: the whole [0, 1]."""
    if n <= 0:
        return (0.0, 1.0)
    low, high = proportion_confint(int(successes), int(n), alpha=1 - confidence, method="wilson")
    return (0.0 if successes <= 0 else float(low), 1.0 if successes >= n else float(high))  # exact at the ends


def paired_difference_interval(a: Sequence[bool], b: Sequence[bool],
                               confidence: float = 0.95) -> tuple[float, float, float]:
    """(difference, low, high): success rate of `b` minus that of `a` on the same episodes, with Newcombe's hybrid
    score interval for paired proportions (Newcombe 1998, Stat. Med. 17:2635, method 10: the two Wilson intervals
    combined by square-and-add, corrected for the correlation of the pairs with his continuity-adjusted phi).

    Unlike a Wald interval it stays inside [-1, 1] and is not degenerate at 0% or 100% success or with no
    discordant pair; the exact McNemar test (`mcnemar_exact`) is its companion test.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = a.size
    if n == 0 or a.shape != b.shape:
        return float("nan"), -1.0, 1.0
    both, only_a, only_b, neither = (int(x.sum()) for x in (a & b, a & ~b, ~a & b, ~a & ~b))
    pa, pb = a.mean(), b.mean()
    la, ua = wilson_interval(int(a.sum()), n, confidence)
    lb, ub = wilson_interval(int(b.sum()), n, confidence)
    margins = float(a.sum()) * (n - a.sum()) * b.sum() * (n - b.sum())
    cross = both * neither - only_a * only_b
    adjusted = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = adjusted / np.sqrt(margins) if margins > 0 else 0.0
    diff = float(pb - pa)
    low = diff - np.sqrt(max((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0.0))
    high = diff + np.sqrt(max((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2, 0.0))
    return diff, float(max(-1.0, low)), float(min(1.0, high))


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired binary outcomes (A and B on the same episodes)."""

    n: int
    both_success: int
    only_a: int
    only_b: int
    both_fail: int
    p_value: float

    @property
    def discordance(self) -> float:
        """Share of episodes on which exactly one policy succeeded (what planning needs; NaN with no episode)."""
        return (self.only_a + self.only_b) / self.n if self.n else float("nan")

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the success rates differ at level ``alpha`` (two-sided)."""
        return self.p_value < alpha

    def to_dict(self, alpha: float = 0.05) -> dict:
        return {**asdict(self), "alpha": alpha, "significant": self.significant(alpha)}


def mcnemar_pvalue(only_a: np.ndarray | int, only_b: np.ndarray | int) -> np.ndarray | float:
    """Two-sided exact McNemar p-value from the discordant counts, elementwise: under H0 the discordant pairs split
    Binomial(b + c, 1/2), and p = min(1, 2 P[X <= min(b, c)]) (the symmetric case of `scipy.stats.binomtest`).
    With no discordant pair p = 1: nothing speaks for a difference."""
    only_a, only_b = np.asarray(only_a), np.asarray(only_b)
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(only_a, only_b), only_a + only_b, 0.5))
    return float(p) if p.ndim == 0 else p


def mcnemar_exact(success_a: np.ndarray, success_b: np.ndarray) -> McNemarResult:
    """Two-sided exact McNemar test of two policies run on the same episodes (`mcnemar_pvalue`)."""
    a = np.asarray(success_a)
    b = np.asarray(success_b)
    if a.shape != b.shape or a.ndim != 1:
        raise StatsInputError(f"McNemar needs two 1-D outcome arrays of equal length, got {a.shape} and "
                              f"{b.shape}; pair the episodes first")
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise StatsInputError("McNemar outcomes must be booleans (success / failure)")
    a, b = a.astype(bool), b.astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return McNemarResult(n=int(a.size), both_success=int((a & b).sum()), only_a=only_a, only_b=only_b,
                         both_fail=int((~a & ~b).sum()), p_value=mcnemar_pvalue(only_a, only_b))


# --- multiplicity -----------------------------------------------------------------------------------------------
def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """P-values of one family of tests adjusted for multiplicity (statsmodels' `multipletests`): a test is
    significant at level alpha when its adjusted p-value is below alpha.

    ``holm`` (Holm 1979) bounds the chance of *any* false significance in the family by alpha, whatever the
    dependence between the tests; ``bh`` (Benjamini & Hochberg 1995) bounds the expected share of false ones among
    those declared, which is less strict and suits screening many perturbations. NaN entries (tests not run, e.g.
    a group with no episode) stay NaN and do not count in the family.
    """
    if method not in ADJUSTMENTS:
        raise StatsInputError(f"unknown multiplicity adjustment {method!r}; choose one of {', '.join(ADJUSTMENTS)}")
    p = np.asarray(p_values, dtype=float)
    tested = ~np.isnan(p)
    if ((p[tested] < 0) | (p[tested] > 1)).any():
        raise StatsInputError(f"p-values must lie in [0, 1], got {p[tested].min():g} to {p[tested].max():g}")
    adjusted = np.full(p.shape, np.nan)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method=ADJUSTMENTS[method][0])[1]
    return adjusted


# --- training runs as the unit ----------------------------------------------------------------------------------
def _outcomes(successes: Sequence[Sequence[bool]], what: str) -> np.ndarray:
    """Per-seed outcomes as a (seeds, episodes) float array of 0/1."""
    try:
        y = np.asarray(successes, dtype=float)
    except ValueError:
        raise StatsInputError(f"{what}: every seed must have run the same episodes (equal-length outcome rows)") \
            from None
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
        raise StatsInputError(f"{what}: give outcomes as (seeds, episodes), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise StatsInputError(f"{what}: outcomes must be booleans (success / failure)")
    return y


@dataclass(frozen=True)
class SeedRates:
    """One method's success per training seed on a shared episode set, and the spread between the seeds."""

    rates: tuple[float, ...]
    episodes: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.rates))

    @property
    def spread(self) -> float:
        """Standard deviation of the per-seed rates (ddof 1); NaN with one seed."""
        return float(np.std(self.rates, ddof=1)) if len(self.rates) > 1 else float("nan")

    @property
    def episode_noise(self) -> float:
        """The spread the episodes alone would give (binomial SD at the mean rate): a seed spread well above it
        means the training runs themselves differ."""
        return math.sqrt(self.mean * (1 - self.mean) / self.episodes)

    def to_dict(self) -> dict:
        return {"rates": list(self.rates), "episodes": self.episodes, "mean": self.mean, "spread": self.spread,
                "episode_noise": self.episode_noise}


def seed_rates(successes: Sequence[Sequence[bool]]) -> SeedRates:
    """Per-seed success rates from a (seeds, episodes) outcome array."""
    y = _outcomes(successes, "seed_rates")
    return SeedRates(rates=tuple(float(r) for r in y.mean(1)), episodes=y.shape[1])


@dataclass(frozen=True)
class MethodComparison:
    """Method B against method A at one dataset size, training seeds as the unit (`compare_methods`)."""

    a: SeedRates
    b: SeedRates
    difference: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    confidence: float
    seeds_paired: bool
    min_seeds: int
    resamples: int

    @property
    def supported(self) -> bool:
        """Whether both methods have enough seeds for a method-level claim."""
        return min(len(self.a.rates), len(self.b.rates)) >= self.min_seeds

    def decide(self, p_value: float | None = None) -> str:
        """"B" or "A" (the better method), "none" (no difference supported) or "unsupported" (too few seeds: the
        difference may be the luck of single training runs), at level 1 - confidence.

        Without ``p_value`` this is whether the interval excludes 0; pass the adjusted p-value when the comparison
        is one of a family (sizes x difficulties, `adjust_pvalues`)."""
        if not self.supported:
            return "unsupported"
        if not (self.p_value if p_value is None else p_value) < 1 - self.confidence:  # NaN: not tested, no claim
            return "none"
        return "B" if self.difference > 0 else "A"

    def to_dict(self) -> dict:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "difference": self.difference,
                "ci": [self.low, self.high], "se": self.se, "df": self.df, "p_value": self.p_value,
                "confidence": self.confidence, "seeds_paired": self.seeds_paired, "min_seeds": self.min_seeds,
                "resamples": self.resamples, "decision": self.decide(), "supported": self.supported,
                "method": "two-stage cluster bootstrap over training seeds then episodes, Student-t interval"}


def _resampled_means(y: np.ndarray, seed_weights: np.ndarray, episode_weights: np.ndarray) -> np.ndarray:
    """Mean success of each bootstrap replicate: seeds and episodes counted as often as they were drawn.

    The seeds' deviations from the method's mean are first scaled by sqrt(k / (k - 1)), so that drawing k of k
    seeds reproduces the unbiased between-seed variance instead of (k - 1)/k of it (a third too little at 3 seeds).
    """
    k, n = y.shape
    centre = y.mean(0)
    y = centre + math.sqrt(k / (k - 1)) * (y - centre)
    return ((y @ episode_weights.T).T * seed_weights).sum(1) / (k * n)


def compare_methods(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], *, seeds_paired: bool = False,
                    confidence: float = 0.95, resamples: int = 2000, seed: int = 0,
                    min_seeds: int = MIN_SEEDS) -> MethodComparison:
    """Mean success of method B minus method A, each given as (seeds, episodes) outcomes on the same episodes,
    with an interval that counts the training run as the unit of replication.

    The interval comes from a two-stage (hierarchical) cluster bootstrap (Davison & Hinkley 1997, sec. 3.8; Field &
    Welsh 2007, JRSS B 69:369): each replicate draws training seeds with replacement, then episodes with
    replacement. The episode draw is shared by every seed and both methods because they all ran the same episodes,
    so the pairing by episode is kept (for such crossed seeds x episodes data this is Owen's 2007 "pigeonhole"
    bootstrap, which errs on the wide side). With ``seeds_paired`` seed i of A and of B are drawn together (same
    data subset or initialisation); otherwise each method's seeds are drawn on their own.

    With a handful of seeds the between-seed variance is itself uncertain, so the interval is the difference plus
    or minus a Student-t quantile times the bootstrap standard error (Efron & Tibshirani 1993), with the
    seeds' degrees of freedom: k - 1 for paired seeds, Welch-Satterthwaite (Welch 1947) on the per-seed rates,
    never below min(k_A, k_B) - 1, otherwise. A percentile interval would cover only about 90% at 3 seeds when
    training runs differ as much as in the study. The p-value is the matching two-sided t-test of no difference.
    Deterministic for a given ``seed``.
    """
    _check_level(confidence, "confidence")
    ya, yb = _outcomes(a, "method A"), _outcomes(b, "method B")
    if ya.shape[1] != yb.shape[1]:
        raise StatsInputError(f"methods A and B ran {ya.shape[1]} and {yb.shape[1]} episodes; compare them on the "
                              "same episode set")
    if seeds_paired and ya.shape[0] != yb.shape[0]:
        raise StatsInputError(f"paired seeds need as many seeds for A as for B, got {ya.shape[0]} and {yb.shape[0]}")
    ra, rb = seed_rates(ya), seed_rates(yb)
    ka, kb, n = ya.shape[0], yb.shape[0], ya.shape[1]
    difference = rb.mean - ra.mean
    common = {"a": ra, "b": rb, "difference": difference, "confidence": confidence, "seeds_paired": seeds_paired,
              "min_seeds": min_seeds, "resamples": resamples}
    if min(ka, kb) < 2:
        nan = float("nan")
        return MethodComparison(low=nan, high=nan, se=nan, df=nan, p_value=nan, **common)
    rng = np.random.default_rng(seed)
    episodes = rng.multinomial(n, np.full(n, 1 / n), size=resamples)
    seeds_a = rng.multinomial(ka, np.full(ka, 1 / ka), size=resamples)
    seeds_b = seeds_a if seeds_paired else rng.multinomial(kb, np.full(kb, 1 / kb), size=resamples)
    replicates = _resampled_means(yb, seeds_b, episodes) - _resampled_means(ya, seeds_a, episodes)
    df = float(min(ka, kb) - 1)
    va, vb = np.var(ra.rates, ddof=1) / ka, np.var(rb.rates, ddof=1) / kb
    if not seeds_paired and va + vb > 0:
        df = max(df, float((va + vb) ** 2 / (va ** 2 / (ka - 1) + vb ** 2 / (kb - 1))))
    se = float(replicates.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    p_value = float(2 * stats.t.sf(abs(difference) / se, df)) if se > 0 else float(difference == 0)
    return MethodComparison(low=max(-1.0, difference - half), high=min(1.0, difference + half), se=se, df=df,
                            p_value=p_value, **common)


@dataclass(frozen=True)
class NoiseFloor:
    """One checkpoint's success on two disjoint episode sets: how far two evaluations differ when nothing but the
    episodes does."""

    first: float
    second: float
    n_first: int
    n_second: int
    difference: float
    low: float
    high: float
    confidence: float

    def to_dict(self) -> dict:
        return {**asdict(self), "ci": [self.low, self.high]}


def noise_floor(first: Sequence[bool], second: Sequence[bool], confidence: float = 0.95) -> NoiseFloor:
    """Success on the second episode set minus the first, with Newcombe's hybrid score interval for independent
    proportions (Newcombe 1998, Stat. Med. 17:873, method 10; statsmodels' ``newcomb``). The sets must not share an
    episode; an interval far from 0 says the two sets are not alike (different difficulty mix)."""
    _check_level(confidence, "confidence")
    x, y = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if x.ndim != 1 or y.ndim != 1 or not x.size or not y.size:
        raise StatsInputError("noise_floor needs two non-empty 1-D outcome arrays, one per episode set")
    low, high = confint_proportions_2indep(int(y.sum()), y.size, int(x.sum()), x.size, method="newcomb",
                                           compare="diff", alpha=1 - confidence)
    return NoiseFloor(first=float(x.mean()), second=float(y.mean()), n_first=int(x.size), n_second=int(y.size),
                      difference=float(y.mean() - x.mean()), low=float(low), high=float(high),
                      confidence=confidence)


# --- planning ---------------------------------------------------------------------------------------------------
def wilson_halfwidth(n: int, p: float = 0.5, confidence: float = 0.95) -> float:
    """Half-width of the Wilson interval from n episodes when the observed rate is p (largest at p = 0.5)."""
    if n < 1:
        raise StatsInputError(f"the number of episodes must be at least 1, got {n}")
    z = _z((1 + confidence) / 2)
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def episodes_for_halfwidth(w: float, p: float = 0.5, confidence: float = 0.95) -> int:
    """Fewest episodes whose Wilson interval is at most +-w around an observed rate p; p = 0.5 (the default) is the
    worst case and holds whatever the rate turns out to be."""
    if not 0 < w < 0.5:
        raise StatsInputError(f"half-width must be between 0 and 0.5, got {w}")
    _check_level(confidence, "confidence")
    if not 0 <= p <= 1:
        raise StatsInputError(f"the expected rate must lie in [0, 1], got {p}")
    low, high = 1, math.ceil(_z((1 + confidence) / 2) ** 2 / (4 * w * w))  # enough at p = 0.5, hence for any p
    while low < high:  # the half-width falls as n grows
        mid = (low + high) // 2
        low, high = (low, mid) if wilson_halfwidth(mid, p, confidence) <= w else (mid + 1, high)
    return low


def _check_paired_plan(discordance: float, alpha: float, power: float) -> None:
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    if not 0 < discordance <= 1:
        raise StatsInputError(f"discordance (share of episodes where exactly one policy succeeds) must be in (0, 1], "
                              f"got {discordance}")


def paired_episodes_for_difference(d: float, discordance: float = DEFAULT_DISCORDANCE, alpha: float = 0.05,
                                   power: float = 0.8) -> int:
    """Paired episodes for a two-sided McNemar test at level alpha to detect a success-rate difference d with the
    given power (Connor 1987, Biometrics 43:207): n = (z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - d^2))^2 / d^2.

    ``discordance`` (psi) is the share of episodes on which exactly one policy succeeds under the alternative, so
    |d| <= psi; `DEFAULT_DISCORDANCE` says what the default assumes. The exact test is a little conservative: its
    power at this n is within a few points of the target (checked in the tests).
    """
    _check_paired_plan(discordance, alpha, power)
    d = abs(d)
    if not 0 < d <= discordance:
        raise StatsInputError(f"the difference must be in (0, discordance = {discordance}]: a difference needs at "
                              f"least that share of episodes where only one policy succeeds; got {d}")
    za, zb = _z(1 - alpha / 2), _z(power)
    return math.ceil((za * math.sqrt(discordance) + zb * math.sqrt(discordance - d * d)) ** 2 / (d * d))


def minimum_detectable_difference(n: int, discordance: float = DEFAULT_DISCORDANCE, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """Smallest paired success-rate difference that n paired episodes detect with the given power (the inverse of
    `paired_episodes_for_difference`); NaN when even a difference as large as the discordance is out of reach."""
    _check_paired_plan(discordance, alpha, power)
    if n < 1:
        raise StatsInputError(f"the number of paired episodes must be at least 1, got {n}")
    za, zb = _z(1 - alpha / 2), _z(power)

    def gap(d: float) -> float:  # zero where Connor's formula gives exactly n
        return math.sqrt(n) * d - zb * math.sqrt(discordance - d * d) - za * math.sqrt(discordance)

    if gap(discordance) < 0:
        return float("nan")
    return float(optimize.brentq(gap, 0.0, discordance))


def minimum_detectable_effect(n: int, p: float = 0.5, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest change from a reference rate p that a two-sided test on n episodes detects with the given power,
    on the arcsine scale (Cohen's h, statsmodels' `NormalIndPower`): the larger of the upward and downward change
    that stay inside [0, 1]; NaN when neither does (too few episodes)."""
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    if n < 1 or not 0 <= p <= 1:
        raise StatsInputError(f"need at least 1 episode and a reference rate in [0, 1], got n={n}, p={p}")
    h = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power, ratio=0)
    angle = math.asin(math.sqrt(p))
    changes = [abs(math.sin(x) ** 2 - p) for x in (angle - h / 2, angle + h / 2) if 0 <= x <= math.pi / 2]
    return float(max(changes)) if changes else float("nan")


def detectable_difference(n: int, discordance: float | None = None, alpha: float = 0.05,
                          power: float = 0.8) -> dict:
    """What a paired comparison on n episodes could detect (`minimum_detectable_difference`), as reports state it:
    at the observed discordance when one was measured and is above 0, else at `DEFAULT_DISCORDANCE`; the dict says
    which (``discordance_source``: "observed" or "assumed")."""
    observed = discordance is not None and math.isfinite(discordance) and discordance > 0
    psi = float(discordance) if observed else DEFAULT_DISCORDANCE
    return {"pairs": int(n), "discordance": psi, "discordance_source": "observed" if observed else "assumed",
            "alpha": alpha, "power": power,
            "difference": minimum_detectable_difference(n, psi, alpha, power) if n >= 1 else float("nan")}


def minimum_detectable_method_difference(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference in mean success between two training methods that `compare_methods` detects with the
    given power, when its standard error is ``se`` with ``df`` degrees of freedom: the t-test's detectable effect
    (statsmodels' `TTestPower`, n = df + 1 so that its degrees of freedom match) times se * sqrt(n). NaN without a
    standard error (fewer than 2 seeds), or with a zero one (every outcome alike: the spread is unknown, not 0)."""
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    if not (math.isfinite(se) and se > 0 and math.isfinite(df) and df >= 1):
        return float("nan")
    n = df + 1
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)
    return float(effect * se * math.sqrt(n))


# --- sequential tests valid under optional stopping -------------------------------------------------------------
def _log_mixture_ratio(successes: np.ndarray | int, failures: np.ndarray | int, p: float) -> np.ndarray | float:
    """Log of the uniform-prior (Beta(1, 1)) mixture likelihood ratio against a success probability p.

    Under p it is a nonnegative martingale with mean 1, so by Ville's inequality (Ville 1939) it ever reaches 1/alpha
    with probability at most alpha, at whatever time one looks or stops (Robbins 1970; Howard et al. 2021).
    """
    s, f = np.asarray(successes, dtype=float), np.asarray(failures, dtype=float)
    value = special.betaln(1 + s, 1 + f) - special.xlogy(s, p) - special.xlog1py(f, -p)
    return float(value) if value.ndim == 0 else value


def rate_confidence_sequence(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Anytime-valid (1 - alpha) interval for a success rate: the rates the Beta(1, 1) mixture likelihood ratio has
    not rejected at level alpha (Robbins 1970; Howard et al. 2021, Ann. Statist. 49:1055). With probability
    1 - alpha it holds the true rate after every episode at once, so an evaluation may stop as soon as it is narrow
    enough and still report it; a Wilson interval looked at after every episode would not keep its level."""
    _check_level(alpha, "alpha")
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise StatsInputError(f"successes must be between 0 and the trials ({trials}), got {successes}")
    failures, bound = trials - successes, math.log(1 / alpha)

    def excess(p: float) -> float:
        return _log_mixture_ratio(successes, failures, p) - bound

    mle = successes / trials  # the ratio is below 1 there, so always inside
    low = 0.0 if successes == 0 else optimize.brentq(excess, 1e-15, mle)
    high = 1.0 if failures == 0 else optimize.brentq(excess, mle, 1 - 1e-15)
    return (float(low), float(high))


@dataclass
class SequentialAB:
    """Sequential paired A/B test of two policies on the same episode stream, valid under optional stopping.

    Only discordant pairs (one policy succeeds, the other fails) carry evidence; under H0 (equal success rates) each
    favours B with probability 1/2. The evidence is the uniform-mixture likelihood ratio of the B-wins among them
    against 1/2 (`_log_mixture_ratio`, Robbins 1970); the test decides for the policy with more wins as soon as it
    reaches 1/alpha, and by Ville's inequality it declares a difference under H0 with probability at most alpha
    however long it runs. Pairs after the decision are not counted, so the counts alone restore the state: resume
    with ``SequentialAB(alpha, only_a=..., only_b=..., concordant=...)``.
    """

    alpha: float = 0.05
    only_a: int = 0
    only_b: int = 0
    concordant: int = 0

    def __post_init__(self) -> None:
        _check_level(self.alpha, "alpha")

    @property
    def pairs_used(self) -> int:
        return self.only_a + self.only_b + self.concordant

    @property
    def log_evidence(self) -> float:
        """Log of the mixture likelihood ratio against equal success rates (decides at log(1/alpha))."""
        return _log_mixture_ratio(self.only_b, self.only_a, 0.5)

    @property
    def decision(self) -> str:
        """"A" or "B" (the better policy) once decided, else "undecided"."""
        if self.log_evidence < math.log(1 / self.alpha):
            return "undecided"
        return "B" if self.only_b > self.only_a else "A"

    def update(self, success_a: Sequence[bool] | bool, success_b: Sequence[bool] | bool) -> str:
        """Count paired outcomes in order up to the pair that decides (later ones are ignored); the decision."""
        a, b = np.atleast_1d(np.asarray(success_a, dtype=bool)), np.atleast_1d(np.asarray(success_b, dtype=bool))
        if a.shape != b.shape or a.ndim != 1:
            raise StatsInputError(f"A/B outcomes must be paired 1-D arrays, got shapes {a.shape} and {b.shape}")
        if self.decision != "undecided" or not a.size:
            return self.decision
        wins_a, wins_b = self.only_a + np.cumsum(a & ~b), self.only_b + np.cumsum(~a & b)
        crossed = np.flatnonzero(_log_mixture_ratio(wins_b, wins_a, 0.5) >= math.log(1 / self.alpha))
        last = int(crossed[0]) if crossed.size else a.size - 1
        self.concordant += int((a[:last + 1] == b[:last + 1]).sum())
        self.only_a, self.only_b = int(wins_a[last]), int(wins_b[last])
        return self.decision

    def fixed_sample_pairs(self, power: float = 0.8) -> int | None:
        """Paired episodes a fixed-size McNemar design at the same alpha would need to detect the observed
        difference with the given power (`paired_episodes_for_difference`); None with no observed difference.

        The difference observed when a sequential test stops early tends to be larger than the true one, so this
        flatters the fixed design: a conservative yardstick for the episodes the sequential test saved. Connor's
        normal approximation is floored where it breaks down, at the pairs that hold, at the observed discordance,
        the fewest discordant pairs an exact McNemar test can reject with (all on one side: 2 * 0.5^m < alpha)."""
        d = (self.only_b - self.only_a) / self.pairs_used if self.pairs_used else 0.0
        if d == 0:
            return None
        discordance = (self.only_a + self.only_b) / self.pairs_used
        fewest = math.floor(math.log2(2 / self.alpha)) + 1
        return max(paired_episodes_for_difference(d, discordance, self.alpha, power), math.ceil(fewest / discordance))

    def to_dict(self, power: float = 0.8) -> dict:
        return {**asdict(self), "pairs_used": self.pairs_used, "decision": self.decision,
                "log_evidence": self.log_evidence, "threshold": math.log(1 / self.alpha),
                "fixed_sample_pairs": self.fixed_sample_pairs(power), "power": power}


def sequential_ab(success_a: Sequence[bool], success_b: Sequence[bool], alpha: float = 0.05) -> SequentialAB:
    """The sequential A/B test run over a whole stream of paired outcomes, in order (`SequentialAB`)."""
    test = SequentialAB(alpha)
    test.update(success_a, success_b)
    return test
