"""Confidence intervals and paired t-tests against hand-computed cases and closed forms."""
import doctest
import math

import numpy as np
import pytest

from jaxnets import stats

# Student-t quantiles t_{0.975, dof} from printed tables (independent of scipy).
T975 = {1: 12.7062, 2: 4.3027, 4: 2.7764, 7: 2.3646, 9: 2.2622}


def test_mean_ci_hand_computed_case():
    # x = 2, 4, 4, 4, 5, 5, 7, 9: mean 5, Σ(x − 5)² = 32, s² = 32/7, se = √(32/7)/√8 = 0.755929
    ci = stats.mean_ci([2, 4, 4, 4, 5, 5, 7, 9])
    se = math.sqrt(32 / 7) / math.sqrt(8)
    assert ci.mean == 5.0 and ci.n == 8 and ci.missing == 0
    assert ci.std == pytest.approx(math.sqrt(32 / 7), rel=1e-12)
    assert ci.half_width == pytest.approx(T975[7] * se, rel=1e-4)
    assert ci.low == pytest.approx(5 - T975[7] * se, rel=1e-4)
    assert ci.high == pytest.approx(5 + T975[7] * se, rel=1e-4)


def test_mean_ci_three_values_and_other_levels():
    ci = stats.mean_ci([0.60, 0.65, 0.70])   # s = 0.05, se = 0.05/√3
    assert ci.mean == pytest.approx(0.65)
    assert ci.half_width == pytest.approx(T975[2] * 0.05 / math.sqrt(3), rel=1e-4)
    # 90%: t_{0.95, 2} = 2.9200 (table)
    assert stats.mean_ci([0.60, 0.65, 0.70], 0.90).half_width == pytest.approx(2.9200 * 0.05 / math.sqrt(3), rel=1e-4)


def test_t_quantiles_match_tables():
    for dof, value in T975.items():
        assert stats.t_quantile(0.975, dof) == pytest.approx(value, abs=1e-4)


def test_nan_values_are_left_out_and_counted():
    ci = stats.mean_ci([1.0, float("nan"), 3.0])
    assert ci.n == 2 and ci.missing == 1 and ci.mean == 2.0
    assert ci.half_width == pytest.approx(T975[1] * math.sqrt(2) / math.sqrt(2), rel=1e-4)


def test_one_value_has_a_mean_but_no_interval():
    ci = stats.mean_ci([0.7])
    assert ci.mean == 0.7 and math.isnan(ci.low) and math.isnan(ci.std) and ci.format() == "0.700"
    assert math.isnan(stats.mean_ci([]).mean)


def test_paired_difference_df2_closed_form():
    # d = (0.03, 0.01, 0.05): mean 0.03, s = 0.02, t = 0.03/(0.02/√3) = 2.598
    a = [0.70, 0.66, 0.72]
    b = [0.67, 0.65, 0.67]
    test = stats.paired_difference(a, b)
    t = 0.03 / (0.02 / math.sqrt(3))
    assert test.n == 3
    assert test.difference.mean == pytest.approx(0.03)
    assert test.t == pytest.approx(t, rel=1e-9)
    # Student t with 2 dof: F(t) = 1/2 + t / (2√(2 + t²)), so p = 1 − t/√(2 + t²)
    assert test.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert test.difference.half_width == pytest.approx(T975[2] * 0.02 / math.sqrt(3), rel=1e-4)


def test_paired_difference_df1_closed_form_and_sign():
    # Two pairs: d = (−1, −3), mean −2, s = √2, t = −2/(√2/√2) = −2; Cauchy: p = 1 − (2/π)·atan(2)
    test = stats.paired_difference([0.0, 0.0], [1.0, 3.0])
    assert test.t == pytest.approx(-2.0)
    assert test.p_value == pytest.approx(1 - 2 / math.pi * math.atan(2.0), rel=1e-9)


def test_pairs_with_a_nan_are_dropped_together():
    test = stats.paired_difference([1.0, float("nan"), 3.0, 5.0], [0.0, 2.0, float("nan"), 1.0])
    assert test.n == 2 and test.difference.missing == 2
    assert test.difference.mean == pytest.approx((1.0 + 4.0) / 2)


def test_constant_differences():
    same = stats.paired_difference([1.0, 2.0], [1.0, 2.0])
    assert same.p_value == 1.0 and math.isnan(same.t)
    shifted = stats.paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert shifted.p_value == 0.0 and shifted.t == math.inf


def test_paired_is_not_the_unpaired_test():
    # A large seed effect shared by both arms cancels in the paired test only.
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(scale=5.0, size=6)
    a = seed_effect + 1.0 + rng.normal(scale=0.1, size=6)
    b = seed_effect
    assert stats.paired_difference(a, b).p_value < 1e-4
    assert stats.mean_ci(a).low < stats.mean_ci(b).high   # the separate intervals overlap


@pytest.mark.parametrize("call, message", [
    (lambda: stats.mean_ci([1.0, 2.0], confidence=1.5), "confidence: got 1.5; allowed: 0 < confidence < 1"),
    (lambda: stats.mean_ci([[1.0]]), "values: got shape (1, 1); allowed: a 1-D sequence of numbers"),
    (lambda: stats.paired_difference([1.0, 2.0], [1.0]), "b: got 1 values; allowed: 2 (one per value of a)"),
    (lambda: stats.t_quantile(0.975, 0), "dof: got 0; allowed: an integer >= 1"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_doctests():
    result = doctest.testmod(stats)
    assert result.failed == 0 and result.attempted > 0


def test_identical_arms_are_told_apart_from_a_constant_shift():
    """All d_i = 0 is the one case with t = NaN and p = 1; identical() names it, also from JSON."""
    same = stats.paired_difference([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert stats.identical(same)
    stored = {**same.as_dict(), "t": None}  # results.json stores NaN as null
    assert stats.identical(stored)
    assert not stats.identical(stats.paired_difference([0.8, 0.9, 1.0], [0.7, 0.8, 0.9]))  # d = 0.1 each
    assert not stats.identical(stats.paired_difference([0.7, 0.9, 0.8], [0.8, 0.8, 0.8]))  # d̄ = 0, s_d > 0
    assert not stats.identical(stats.paired_difference([0.7], [0.7]))  # one pair: no test at all


# ------------------------------------------------------------------ permutation test and Holm


def test_sign_flip_all_positive_reaches_the_minimum():
    # n = 5, every d_i > 0: only the observed pattern and its mirror reach |Σ d|: p = 2/32.
    assert stats.sign_flip_test([0.01, 0.02, 0.03, 0.04, 0.05]) == 2 / 32
    assert stats.min_permutation_p(5) == 0.0625 and stats.min_permutation_p(1) == 1.0
    assert stats.paired_difference([2.0, 3.0, 4.0, 5.0, 6.0], [1.0] * 5).permutation_p == 0.0625


def test_sign_flip_hand_enumerated_case():
    # d = (1, 2, 3, −4): |Σ| = 2. The 16 sums ±1 ±2 ±3 ±4 are ±10, ±8, ±6, ±4 (twice), ±2 (twice),
    # 0 (twice): 14 of 16 have |s| >= 2.
    assert stats.sign_flip_test([1.0, 2.0, 3.0, -4.0]) == 14 / 16
    assert stats.sign_flip_test([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(stats.sign_flip_test([float("nan")]))


def test_sign_flip_matches_scipy_permutation_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n in (3, 5, 8, 11):
        d = rng.normal(loc=0.3, size=n)
        reference = scipy_stats.permutation_test((d,), np.mean, permutation_type="samples",
                                                 n_resamples=np.inf, alternative="two-sided")
        assert stats.sign_flip_test(d) == pytest.approx(reference.pvalue, rel=1e-12)


def test_sign_flip_above_the_exact_limit_is_close_to_the_t_test():
    rng = np.random.default_rng(1)
    d = rng.normal(loc=0.4, size=30)
    p = stats.sign_flip_test(d)
    assert 0 < p < 1 and p == pytest.approx(stats.paired_difference(d, np.zeros(30)).p_value, abs=0.02)


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # caps at 1, NaN stays out of the family (m = 2 here)
    out = stats.holm([0.6, float("nan"), 0.2])          # m = 2: 2·0.2 = 0.4, max(0.4, 0.6) = 0.6
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.4)
    assert stats.holm([0.6, 0.55]) == [1.0, 1.0]          # 2·0.55 = 1.1 capped at 1
    assert stats.holm([]) == []
    with pytest.raises(ValueError, match="p_values: got"):
        stats.holm([1.5])


def test_holm_matches_statsmodels_when_available():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.001, 0.2, 0.03, 0.04, 0.011]
    np.testing.assert_allclose(stats.holm(p), multitest.multipletests(p, method="holm")[1], rtol=1e-12)
