"""The package's statistics (`eval/stats.py`): known values, and by simulation the error rates each one promises.

Simulations are seeded and vectorised (seconds each). Each allows three Monte-Carlo standard errors of slack
(`_slack`) on top of the nominal rate, and where a naive procedure would break the promise the test also shows that
the simulation sees it break (so these tests can fail).
"""

from __future__ import annotations

import gc
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from mobile_vla_sim.errors import MvlaError
from mobile_vla_sim.eval.stats import (
    DEFAULT_DISCORDANCE,
    SequentialAB,
    StatsInputError,
    _log_mixture_ratio,
    adjust_pvalues,
    compare_methods,
    episodes_for_halfwidth,
    mcnemar_exact,
    mcnemar_pvalue,
    minimum_detectable_difference,
    minimum_detectable_effect,
    noise_floor,
    paired_difference_interval,
    paired_episodes_for_difference,
    rate_confidence_sequence,
    seed_rates,
    sequential_ab,
    wilson_halfwidth,
    wilson_interval,
)

ALPHA = 0.05


def _slack(rate: float, runs: int) -> float:
    """Three Monte-Carlo standard errors of a proportion estimated from `runs` simulations."""
    return 3 * math.sqrt(rate * (1 - rate) / runs)


def _pairs(rng: np.random.Generator, runs: int, n: int, both: float, only_a: float, only_b: float):
    """`runs` x `n` paired outcomes (A, B) with the given probabilities of the four cells."""
    u = rng.random((runs, n))
    a = u < both + only_a
    b = (u < both) | ((u >= both + only_a) & (u < both + only_a + only_b))
    return a, b


# --- intervals --------------------------------------------------------------------------------------------------
def test_wilson_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(0.0370, abs=1e-4)
    lo, hi = wilson_interval(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.9630, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("n", [20, 100])
def test_wilson_coverage_computed_exactly(n):
    """Coverage summed over the binomial distribution, no simulation: Wilson's coverage oscillates around the
    nominal level with the true rate (Brown, Cai & DasGupta 2001); its average holds and its dips stay small."""
    k = np.arange(n + 1)
    low, high = np.array([wilson_interval(int(x), n) for x in k]).T
    rates = np.linspace(0.05, 0.95, 181)
    coverage = np.array([stats.binom.pmf(k, n, p)[(low <= p) & (p <= high)].sum() for p in rates])
    assert coverage.mean() >= 0.945
    assert coverage.min() >= 0.92


def test_paired_difference_interval_edges():
    same = np.ones(10, bool)
    diff, lo, hi = paired_difference_interval(same, same)
    assert diff == 0 and -1 <= lo < 0 < hi <= 1  # no discordant pair still leaves uncertainty
    diff, lo, hi = paired_difference_interval(np.ones(10, bool), np.zeros(10, bool))
    assert diff == -1 and lo == -1 and hi < -0.5
    a, b = np.array([1, 1, 0, 1, 0, 1, 1, 0], bool), np.array([0, 1, 0, 1, 1, 0, 0, 0], bool)
    d1, lo1, hi1 = paired_difference_interval(a, b)
    d2, lo2, hi2 = paired_difference_interval(b, a)
    assert d1 == pytest.approx(-d2) and lo1 == pytest.approx(-hi2) and hi1 == pytest.approx(-lo2)


@pytest.mark.parametrize("n, both, only_a, only_b", [
    (40, 0.35, 0.25, 0.05),   # correlated pairs, B 20 points worse
    (30, 0.25, 0.25, 0.25),   # independent policies at 50%, no difference
    (100, 0.80, 0.10, 0.05),  # both near the ceiling
])
def test_newcombe_paired_coverage(n, both, only_a, only_b):
    runs = 1500
    a, b = _pairs(np.random.default_rng(n), runs, n, both, only_a, only_b)
    truth = only_b - only_a
    covered = [lo <= truth <= hi for lo, hi in (paired_difference_interval(x, y)[1:] for x, y in zip(a, b))]
    assert np.mean(covered) >= 0.95 - _slack(0.95, runs)


# --- the exact McNemar test -------------------------------------------------------------------------------------
@pytest.mark.parametrize("only_a, only_b, expected", [
    (1, 9, 22 / 1024),    # 2 * (C(10,0) + C(10,1)) / 2^10
    (0, 5, 2 / 32),       # 2 * (1/2)^5
    (3, 3, 1.0),
    (0, 0, 1.0),          # no discordant pair: no evidence of a difference
])
def test_mcnemar_exact_known_tables(only_a, only_b, expected):
    both_success, both_fail = 7, 4
    a = np.array([1] * both_success + [1] * only_a + [0] * only_b + [0] * both_fail, dtype=bool)
    b = np.array([1] * both_success + [0] * only_a + [1] * only_b + [0] * both_fail, dtype=bool)
    res = mcnemar_exact(a, b)
    assert (res.both_success, res.only_a, res.only_b, res.both_fail) == (both_success, only_a, only_b, both_fail)
    assert res.p_value == pytest.approx(expected)
    assert res.discordance == pytest.approx((only_a + only_b) / a.size)
    assert res.significant(0.05) == (expected < 0.05)
    assert res.to_dict()["significant"] == (expected < 0.05)


def test_mcnemar_without_discordant_pairs_is_p_one():
    for outcome in (np.ones(50, bool), np.zeros(50, bool), np.arange(50) % 3 == 0):
        assert mcnemar_exact(outcome, outcome.copy()).p_value == 1.0
    assert mcnemar_pvalue(0, 0) == 1.0


def test_mcnemar_pvalue_is_scipys_binomial_test():
    only_a, only_b = np.meshgrid(np.arange(21), np.arange(21))
    p = mcnemar_pvalue(only_a, only_b)
    for x, y, value in zip(only_a.ravel(), only_b.ravel(), p.ravel()):
        if x + y:
            assert value == pytest.approx(stats.binomtest(int(x), int(x + y), 0.5).pvalue, abs=1e-12)


@pytest.mark.parametrize("call", [
    lambda: mcnemar_exact(np.array([1, 0]), np.array([1, 0, 1])),
    lambda: mcnemar_exact(np.array([2, 0]), np.array([1, 0])),
    lambda: adjust_pvalues([0.1, 0.2], method="bonferroni"),
    lambda: adjust_pvalues([0.1, 1.2]),
    lambda: compare_methods([[1, 0], [0, 1]], [[1, 0, 1], [0, 1, 1]]),
    lambda: compare_methods([[1, 0], [0, 1]], [[1, 0]], seeds_paired=True),
    lambda: compare_methods([[1, 0], [0]], [[1, 0], [1, 1]]),
    lambda: seed_rates([[1, 2]]),
    lambda: episodes_for_halfwidth(0.7),
    lambda: paired_episodes_for_difference(0.3, discordance=0.2),
    lambda: minimum_detectable_difference(0),
    lambda: rate_confidence_sequence(5, 3),
    lambda: SequentialAB(alpha=1.5),
    lambda: sequential_ab([1, 0], [1]),
    lambda: noise_floor([], [1, 0]),
])
def test_bad_inputs_raise_one_line_errors(call):
    with pytest.raises(StatsInputError) as err:
        call()
    assert isinstance(err.value, MvlaError) and "\n" not in str(err.value)


# --- multiplicity -----------------------------------------------------------------------------------------------
def test_adjust_pvalues_is_statsmodels_and_passes_untested_through():
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.012])
    np.testing.assert_allclose(adjust_pvalues(p), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), multipletests(p, method="fdr_bh")[1])
    holm = adjust_pvalues([0.01, np.nan, 0.04])  # a family of two: NaN is not a test
    assert holm[0] == pytest.approx(0.02) and np.isnan(holm[1]) and holm[2] == pytest.approx(0.04)
    assert np.isnan(adjust_pvalues([np.nan, np.nan])).all() and adjust_pvalues([]).size == 0


def test_holm_keeps_family_wise_error_under_a_global_null():
    """4,000 probes of 16 perturbation tests (60 paired episodes, 30% discordant), no perturbation doing anything:
    uncorrected, about one probe in three shows a false star; Holm keeps it under alpha, and so does BH (under the
    global null its false discovery rate is the family-wise error)."""
    rng = np.random.default_rng(22)
    runs, tests, n = 4000, 16, 60
    discordant = rng.binomial(n, 0.3, (runs, tests))
    only_b = rng.binomial(discordant, 0.5)
    p = mcnemar_pvalue(discordant - only_b, only_b)
    p[:, -2:] = np.nan  # e.g. a difficulty without episodes: not part of the family
    gc.freeze()  # statsmodels' Holm runs gc.collect() per call: keep it from walking the whole test process
    try:
        holm = np.mean([(adjust_pvalues(row) < ALPHA).any() for row in p])
        bh = np.mean([(adjust_pvalues(row, "bh") < ALPHA).any() for row in p])
    finally:
        gc.unfreeze()
    raw = np.mean((np.nan_to_num(p, nan=1.0) < ALPHA).any(1))
    assert raw > 0.25
    assert holm <= ALPHA + _slack(ALPHA, runs) and bh <= ALPHA + _slack(ALPHA, runs)


# --- training runs as the unit ----------------------------------------------------------------------------------
def _study(rng, seeds: int, episodes: int, seed_sd: float, effect: float):
    """Outcomes of methods A and B at one size: per-episode difficulty shared (same episodes), per-seed offsets
    (training runs differ), B better by `effect` on the logit scale; and the true mean difference."""
    difficulty = rng.normal(0, 1, episodes)
    a = rng.random((seeds, episodes)) < expit(difficulty + rng.normal(0, seed_sd, (seeds, 1)))
    b = rng.random((seeds, episodes)) < expit(effect + difficulty + rng.normal(0, seed_sd, (seeds, 1)))
    return a, b


def _true_difference(seed_sd: float, effect: float) -> float:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 400_000)
    return float((expit(effect + x + rng.normal(0, seed_sd, x.size)) - expit(x + rng.normal(0, seed_sd, x.size)))
                 .mean())


def test_seed_rates_and_spread():
    rates = seed_rates([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    assert rates.rates == (0.5, 0.75, 0.0) and rates.episodes == 4
    assert rates.mean == pytest.approx(1.25 / 3) and rates.spread == pytest.approx(np.std([0.5, 0.75, 0], ddof=1))
    assert rates.episode_noise == pytest.approx(math.sqrt(rates.mean * (1 - rates.mean) / 4))
    assert math.isnan(seed_rates([[1, 0]]).spread)


def test_compare_methods_counts_training_runs_not_episodes():
    """The laptop study's trap: frozen (A) succeeds 57%, 40% and 52% in three training runs, LoRA (B) 37%, 38% and
    35%, on the same 100 episodes. Pooling the 3 x 100 episodes into one McNemar test finds a 'significant'
    difference (p ~ 0.002); with training runs as the unit none is supported."""
    rng = np.random.default_rng(0)
    a = np.array([rng.permutation(100) < k for k in (57, 40, 52)])
    b = np.array([rng.permutation(100) < k for k in (37, 38, 35)])
    assert mcnemar_exact(a.ravel(), b.ravel()).p_value < 0.01
    result = compare_methods(a, b)
    assert result.decide() == "none" and result.low < 0 < result.high and result.p_value >= ALPHA
    assert result.to_dict()["decision"] == "none" and result.supported
    assert compare_methods(a, b) == result  # deterministic for a seed
    assert compare_methods(a, b, seed=1).low != result.low
    assert result.decide(p_value=0.001) == "A"  # an adjusted p-value from a family decides instead
    assert result.decide(p_value=float("nan")) == "none"


def test_compare_methods_decides_a_clear_difference_and_flags_one_seed():
    rng = np.random.default_rng(4)
    a, b = _study(rng, seeds=4, episodes=80, seed_sd=0.2, effect=2.5)
    result = compare_methods(a, b, seeds_paired=True)
    assert result.decide() == "B" and result.low > 0 and result.df == 3
    assert compare_methods(b, a).decide() == "A"
    single = compare_methods(a[:1], b[:1])
    assert single.decide() == "unsupported" and not single.supported and math.isnan(single.low)
    assert single.difference == pytest.approx(b[0].mean() - a[0].mean())
    assert compare_methods(a[:2], b[:2], min_seeds=3).decide() == "unsupported"


def test_compare_methods_coverage_with_three_seeds_that_differ():
    """Training runs that differ a lot (seed SD 1 on the logit scale, about +-20 points), 3 seeds x 60 episodes,
    no true difference: the interval covers 0 and a difference is declared at most alpha of the time, while the
    pooled McNemar test declares one in about half the runs."""
    rng = np.random.default_rng(5)
    runs = 300
    covered, declared, pooled = [], [], []
    for i in range(runs):
        a, b = _study(rng, seeds=3, episodes=60, seed_sd=1.0, effect=0.0)
        result = compare_methods(a, b, resamples=500, seed=i)
        covered.append(result.low <= 0 <= result.high)
        declared.append(result.decide() != "none")
        pooled.append(mcnemar_exact(a.ravel(), b.ravel()).p_value < ALPHA)
    assert np.mean(covered) >= 0.95 - _slack(0.95, runs)
    assert np.mean(declared) <= ALPHA + _slack(ALPHA, runs)
    assert np.mean(pooled) > 0.3


def test_compare_methods_coverage_with_a_true_difference():
    rng = np.random.default_rng(6)
    runs, truth = 200, _true_difference(0.3, 1.0)
    covered = [(r.low <= truth <= r.high) for r in
               (compare_methods(*_study(rng, 5, 60, 0.3, 1.0), resamples=500, seed=i) for i in range(runs))]
    assert np.mean(covered) >= 0.95 - _slack(0.95, runs)


def test_noise_floor_is_newcombes_independent_interval():
    # Newcombe (1998, Stat. Med. 17:873), Table II example: 56/70 vs 48/80 -> 0.2000 (0.0524, 0.3339), method 10.
    first, second = np.arange(80) < 48, np.arange(70) < 56
    floor = noise_floor(first, second)
    assert floor.difference == pytest.approx(0.2)
    assert floor.low == pytest.approx(0.0524, abs=1e-4) and floor.high == pytest.approx(0.3339, abs=1e-4)
    assert floor.to_dict()["ci"] == [floor.low, floor.high]
    same = noise_floor(np.arange(100) % 2 == 0, np.arange(100) % 2 == 1)
    assert same.difference == 0 and same.low < 0 < same.high


# --- planning ---------------------------------------------------------------------------------------------------
def test_episodes_for_halfwidth_is_the_smallest_enough():
    assert episodes_for_halfwidth(0.1) == 93  # Wald's 1.96^2 / (4 * 0.01) = 97 overshoots
    for w, p in [(0.1, 0.5), (0.05, 0.5), (0.03, 0.2), (0.05, 0.95)]:
        n = episodes_for_halfwidth(w, p)
        assert wilson_halfwidth(n, p) <= w < wilson_halfwidth(n - 1, p)
    for k, n in [(50, 100), (3, 40), (0, 25)]:  # the planning formula is the interval the reports show
        low, high = wilson_interval(k, n)
        assert wilson_halfwidth(n, k / n) == pytest.approx((high - low) / 2)


def _exact_mcnemar_power(n: int, d: float, discordance: float, alpha: float = ALPHA) -> float:
    """Power of the exact McNemar test, summed exactly: the discordant count is Binomial(n, psi), and given m of
    them the B-wins are Binomial(m, (psi + d) / (2 psi))."""
    power = 0.0
    for m, weight in enumerate(stats.binom.pmf(np.arange(n + 1), n, discordance)):
        wins = np.arange(m + 1)
        reject = mcnemar_pvalue(m - wins, wins) < alpha
        power += weight * stats.binom.pmf(wins, m, (discordance + d) / (2 * discordance))[reject].sum()
    return power


@pytest.mark.parametrize("d, discordance", [(0.1, 0.2), (0.15, 0.4), (0.2, DEFAULT_DISCORDANCE), (0.4, 0.6)])
def test_connor_sample_size_against_exact_power(d, discordance):
    n = paired_episodes_for_difference(d, discordance)
    # Connor's normal approximation vs the exact (slightly conservative) test: a few points under the target.
    assert 0.74 <= _exact_mcnemar_power(n, d, discordance) <= 0.85
    assert _exact_mcnemar_power(n // 2, d, discordance) < 0.55
    assert minimum_detectable_difference(n, discordance) == pytest.approx(d, abs=0.01)
    assert paired_episodes_for_difference(-d, discordance) == n


def test_minimum_detectable_effects():
    assert paired_episodes_for_difference(0.1, 0.2) == 155  # (1.960 sqrt(0.2) + 0.842 sqrt(0.19))^2 / 0.01
    assert math.isnan(minimum_detectable_difference(5))  # 5 pairs cannot detect anything at 80% power
    assert minimum_detectable_difference(400) < minimum_detectable_difference(100)
    assert minimum_detectable_difference(100, discordance=0.2) < minimum_detectable_difference(100)
    for n in (50, 300):  # a rate against a fixed reference of 50%: the exact binomial test's power
        e = minimum_detectable_effect(n)
        k = np.arange(n + 1)
        reject = np.array([stats.binomtest(int(x), n, 0.5).pvalue < ALPHA for x in k])
        assert 0.74 <= stats.binom.pmf(k, n, 0.5 + e)[reject].sum() <= 0.85
    assert math.isnan(minimum_detectable_effect(1))


# --- sequential tests -------------------------------------------------------------------------------------------
def test_rate_confidence_sequence_bounds_are_where_the_evidence_rejects():
    for k, n in [(50, 100), (3, 40), (0, 10), (10, 10)]:
        low, high = rate_confidence_sequence(k, n)
        for bound in (low, high):
            if 0 < bound < 1:
                assert _log_mixture_ratio(k, n - k, bound) == pytest.approx(math.log(1 / ALPHA))
        assert low <= k / n <= high
        wilson = wilson_interval(k, n)
        assert low <= wilson[0] and wilson[1] <= high  # the price of validity at every look: wider
    assert rate_confidence_sequence(0, 0) == (0.0, 1.0)
    assert np.diff([np.subtract(*rate_confidence_sequence(n // 2, n)[::-1]) for n in (10, 100, 1000)]).max() < 0


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_rate_confidence_sequence_holds_at_every_look(rate):
    """2,000 evaluations of up to 1,000 episodes, looked at after every episode: the confidence sequence misses the
    true rate at *any* look in at most alpha of them; a Wilson interval looked at the same way misses far more."""
    runs, n = 2000, 1000
    successes = np.cumsum(np.random.default_rng(int(rate * 10)).random((runs, n)) < rate, 1)
    trials = np.arange(1, n + 1)
    missed = (_log_mixture_ratio(successes, trials - successes, rate) >= math.log(1 / ALPHA)).any(1)
    assert missed.mean() <= ALPHA + _slack(ALPHA, runs)
    low, high = proportion_confint(successes[:, 9:], trials[9:], alpha=ALPHA, method="wilson")
    assert ((rate < low) | (rate > high)).any(1).mean() > 2 * ALPHA
    looks = [int(t) for t in np.geomspace(5, n, 12)]  # the function itself, at a few looks of 300 runs
    assert np.mean([any(not lo <= rate <= hi for lo, hi in (rate_confidence_sequence(int(s[t - 1]), t)
                                                            for t in looks)) for s in successes[:300]]) \
        <= ALPHA + _slack(ALPHA, 300)


@pytest.mark.parametrize("both, only_a, only_b", [
    (0.25, 0.25, 0.25),  # independent policies at 50%
    (0.04, 0.16, 0.16),  # independent at 20%
    (0.60, 0.05, 0.05),  # correlated, few discordant pairs
])
def test_sequential_ab_type_one_error_under_optional_stopping(both, only_a, only_b):
    """4,000 null A/B runs of up to 200 pairs, stopped as soon as the test decides: a difference is declared in at
    most alpha of them; the exact McNemar test looked at after every pair declares one far more often."""
    runs = 4000
    a, b = _pairs(np.random.default_rng(int(both * 100)), runs, 200, both, only_a, only_b)
    declared = np.mean([sequential_ab(x, y).decision != "undecided" for x, y in zip(a, b)])
    assert declared <= ALPHA + _slack(ALPHA, runs)
    peeking = (mcnemar_pvalue(np.cumsum(a & ~b, 1), np.cumsum(~a & b, 1)) < ALPHA).any(1).mean()
    assert peeking > 2 * ALPHA


def test_sequential_ab_expert_against_random_decides_early():
    rng = np.random.default_rng(7)
    runs = 500
    expert, random = rng.random((runs, 200)) < 0.95, rng.random((runs, 200)) < 0.1
    tests = [sequential_ab(r, e) for r, e in zip(random, expert)]  # A = random, B = expert
    assert all(t.decision == "B" for t in tests)
    used = np.array([t.pairs_used for t in tests])
    assert np.median(used) <= 15 and used.max() <= 40
    assert all(sequential_ab(e, r).decision == "A" for r, e in zip(random[:50], expert[:50]))


def test_sequential_ab_policy_against_itself_never_decides():
    rng = np.random.default_rng(8)
    for rate in (0.1, 0.5, 0.9):
        for outcomes in rng.random((200, 200)) < rate:
            test = sequential_ab(outcomes, outcomes.copy())
            assert test.decision == "undecided" and test.pairs_used == 200 and test.log_evidence == 0.0
            assert test.fixed_sample_pairs() is None


def test_sequential_ab_state_resumes_and_ignores_pairs_after_the_decision():
    a, b = _pairs(np.random.default_rng(9), 1, 300, 0.3, 0.1, 0.4)
    a, b = a[0], b[0]
    whole = sequential_ab(a, b)
    assert whole.decision == "B" and whole.pairs_used < 300
    chunked = SequentialAB()
    for start in range(0, 300, 7):
        chunked.update(a[start:start + 7], b[start:start + 7])
    assert chunked == whole
    one_by_one = SequentialAB()
    for x, y in zip(a, b):
        one_by_one.update(bool(x), bool(y))
    assert one_by_one == whole
    resumed = SequentialAB(alpha=0.05, only_a=whole.only_a, only_b=whole.only_b, concordant=whole.concordant)
    assert resumed.decision == "B" and resumed.update(np.ones(50, bool), np.zeros(50, bool)) == "B"
    assert resumed.pairs_used == whole.pairs_used
    half = sequential_ab(a[:whole.pairs_used // 2], b[:whole.pairs_used // 2])  # Ctrl-C halfway, then resume
    restored = SequentialAB(half.alpha, half.only_a, half.only_b, half.concordant)
    restored.update(a[whole.pairs_used // 2:], b[whole.pairs_used // 2:])
    assert restored == whole
    record = whole.to_dict()
    assert record["decision"] == "B" and record["pairs_used"] == whole.pairs_used
    assert record["fixed_sample_pairs"] == paired_episodes_for_difference(
        (whole.only_b - whole.only_a) / whole.pairs_used, (whole.only_a + whole.only_b) / whole.pairs_used)
    # An exact McNemar test needs 6 discordant pairs to reject at 0.05 (2 * 0.5^5 = 0.0625): Connor's 4 is floored.
    assert sequential_ab(np.ones(8, bool), np.zeros(8, bool)).fixed_sample_pairs() == 6
    assert mcnemar_pvalue(6, 0) < 0.05 < mcnemar_pvalue(5, 0)


# --- the documentation page -------------------------------------------------------------------------------------
PAGE = Path(__file__).resolve().parents[1] / "docs" / "statistics.md"


def test_statistics_page_snippets_run(capsys):
    for block in re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S):
        exec(compile(block, str(PAGE), "exec"), {})
    assert "B 8" in capsys.readouterr().out


def test_statistics_page_planning_table_is_current():
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\w .]+) \| ([\d.]+) \|$", PAGE.read_text(), re.M)
    assert len(rows) == 4
    for n, halfwidth, paired, overlapping, rate in rows:
        n = int(n)
        assert f"{wilson_halfwidth(n):.3f}" == halfwidth and f"{minimum_detectable_effect(n):.3f}" == rate
        assert f"{minimum_detectable_difference(n):.3f}" == paired
        tight = minimum_detectable_difference(n, discordance=0.2)
        assert (f"{tight:.3f}" if tight == tight else "out of reach") == overlapping


def test_method_detectable_difference_needs_a_spread():
    """With every outcome alike the standard error is 0, and what could be detected is unknown, not 0."""
    import math

    from mobile_vla_sim.eval.stats import minimum_detectable_method_difference

    assert math.isnan(minimum_detectable_method_difference(0.0, 2)) and math.isnan(
        minimum_detectable_method_difference(0.1, 0))
    assert 0 < minimum_detectable_method_difference(0.05, 2) < minimum_detectable_method_difference(0.1, 2)
