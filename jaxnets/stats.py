"""Small-sample statistics for comparing training runs over seeds.

Every number here is a plain function of a short vector of per-seed results
(n = 3 .. 20 seeds): the mean with a Student-t confidence interval, and the
paired difference of two optimizers run on the same seeds with its interval and
two-sided paired t-test. With x_1..x_n the values,

    x̄ = Σ x_i / n,    s² = Σ (x_i − x̄)² / (n − 1),    se = s / √n,
    CI = x̄ ± t_{1−α/2, n−1} · se

and for pairs (a_i, b_i) the same is applied to d_i = a_i − b_i, with

    t = d̄ / se_d,    p = 2 · (1 − F_{n−1}(|t|))

F_{n−1} being the t distribution's CDF. Values that are NaN (a diverged run, a
target never reached) are left out and counted in ``missing``; for pairs, a pair
is dropped when either side is NaN, so pairing is kept.

Two more tools make a family of comparisons survive review:

* :func:`sign_flip_test`, an exact paired permutation test that needs no
  normality: under H0 (no difference) each d_i is as likely to be +|d_i| as
  −|d_i|, so the 2^n sign patterns are equally likely and

      p = #{ε ∈ {±1}^n : |Σ ε_i d_i| >= |Σ d_i|} / 2^n

  (two-sided, every pattern enumerated for n <= :data:`EXACT_PERMUTATION_MAX`).
  Its smallest possible value is 2/2^n (:func:`min_permutation_p`): 0.0625 with
  5 seeds, so with 5 seeds no permutation p-value reaches 0.05.
* :func:`holm`, Holm's step-down adjustment of a family of m p-values: with
  p_(1) <= ... <= p_(m), adjusted p_(i) = max_{j<=i} min(1, (m − j + 1)·p_(j)).
  It controls the family-wise error rate with no assumption on how the tests
  depend on each other.

Quantiles and CDFs come from ``scipy.stats.t`` (scipy is installed with
scikit-learn).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

#: Confidence level used when none is given.
DEFAULT_CONFIDENCE = 0.95

#: Largest n for which :func:`sign_flip_test` enumerates all 2^n sign patterns.
EXACT_PERMUTATION_MAX = 20

#: Random sign patterns drawn (fixed seed) when n exceeds :data:`EXACT_PERMUTATION_MAX`.
MONTE_CARLO_FLIPS = 200_000


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence: got {confidence!r}; allowed: 0 < confidence < 1")
    return float(confidence)


def _as_vector(values: Sequence[float] | np.ndarray, field: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{field}: got shape {array.shape}; allowed: a 1-D sequence of numbers")
    return array


def t_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile of Student's t with ``dof`` degrees of freedom.

    Args:
      probability: in (0, 1), e.g. 0.975 for a two-sided 95% interval.
      dof: degrees of freedom, >= 1.

    Returns:
      t such that P(T <= t) = probability.

    >>> round(t_quantile(0.975, 4), 4)
    2.7764
    """
    from scipy import stats as scipy_stats

    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability: got {probability!r}; allowed: 0 < probability < 1")
    if isinstance(dof, bool) or not isinstance(dof, (int, np.integer)) or dof < 1:
        raise ValueError(f"dof: got {dof!r}; allowed: an integer >= 1")
    return float(scipy_stats.t.ppf(probability, int(dof)))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval over n values.

    Attributes:
      mean: x̄ (NaN when no value is finite).
      low, high: x̄ ∓ t·se (NaN when n < 2: one value has no spread to estimate).
      std: the sample standard deviation s (ddof = 1; NaN when n < 2).
      n: number of finite values used.
      missing: number of NaN values left out.
      confidence: the interval's level, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    std: float
    n: int
    missing: int
    confidence: float

    @property
    def half_width(self) -> float:
        """(high − low) / 2, the ± part of the interval."""
        return (self.high - self.low) / 2.0

    def as_dict(self) -> dict:
        """The fields (and ``half_width``) as a plain dict for JSON."""
        return {**dataclasses.asdict(self), "half_width": self.half_width}

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """``"mean ± half_width"`` (or just the mean when n < 2), values multiplied by ``scale``.

        >>> mean_ci([1.0, 2.0, 3.0]).format(2)
        '2.00 ± 2.48'
        """
        if not math.isfinite(self.mean):
            return "n/a"
        text = f"{self.mean * scale:.{digits}f}"
        if math.isfinite(self.half_width):
            text += f" ± {self.half_width * scale:.{digits}f}"
        return text


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Mean and two-sided Student-t confidence interval of the finite values.

    CI = x̄ ± t_{(1+c)/2, n−1} · s/√n with s the sample standard deviation (ddof = 1).

    Args:
      values: per-seed results; NaN entries are left out (and counted).
      confidence: the level c, 0 < c < 1.

    Returns:
      An :class:`Interval`.

    >>> ci = mean_ci([1.0, 2.0, 3.0])   # s = 1, se = 1/√3, t(0.975, 2) = 4.3027
    >>> round(ci.mean, 4), round(ci.low, 4), round(ci.high, 4)
    (2.0, -0.4841, 4.4841)
    """
    confidence = _check_confidence(confidence)
    array = _as_vector(values, "values")
    finite = array[np.isfinite(array)]
    n = int(finite.size)
    missing = int(array.size - n)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0, missing, confidence)
    mean = float(finite.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, math.nan, n, missing, confidence)
    std = float(finite.std(ddof=1))
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, std, n, missing, confidence)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """The difference a − b over paired values, with its interval and paired t-test.

    Attributes:
      difference: an :class:`Interval` of d_i = a_i − b_i.
      t: the statistic d̄ / (s_d/√n) (±inf when every d_i is the same nonzero number,
        NaN when n < 2 or all d_i are 0).
      p_value: two-sided p = 2·(1 − F_{n−1}(|t|)) (1.0 when all d_i are 0, NaN when n < 2).
      n: the number of complete pairs.
      permutation_p: the exact sign-flip permutation p-value (:func:`sign_flip_test`;
        NaN when n < 1).
      min_permutation_p: the smallest value ``permutation_p`` can take with n pairs (2/2^n).
    """

    difference: Interval
    t: float
    p_value: float
    n: int
    permutation_p: float = math.nan
    min_permutation_p: float = math.nan

    def as_dict(self) -> dict:
        """A plain dict for JSON."""
        return {"difference": self.difference.as_dict(), "t": self.t, "p_value": self.p_value, "n": self.n,
                "permutation_p": self.permutation_p, "min_permutation_p": self.min_permutation_p}


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      confidence: float = DEFAULT_CONFIDENCE) -> PairedTest:
    """Paired comparison of a and b (same seeds, same order): CI of a − b and the paired t-test.

    d_i = a_i − b_i;  t = d̄ / (s_d/√n);  p = 2·(1 − F_{n−1}(|t|)).
    Pairs with a NaN on either side are dropped.

    Args:
      a, b: per-seed values of the two arms, ``a[i]`` and ``b[i]`` from the same seed.
      confidence: the interval's level.

    Returns:
      A :class:`PairedTest`.

    >>> test = paired_difference([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])   # d = 1, 2, 3
    >>> round(test.difference.mean, 3), round(test.t, 4), round(test.p_value, 4)
    (2.0, 3.4641, 0.0742)
    """
    left = _as_vector(a, "a")
    right = _as_vector(b, "b")
    if left.shape != right.shape:
        raise ValueError(f"b: got {right.size} values; allowed: {left.size} (one per value of a)")
    keep = np.isfinite(left) & np.isfinite(right)
    diffs = left[keep] - right[keep]
    interval = mean_ci(diffs, confidence)
    interval = dataclasses.replace(interval, missing=int(left.size - diffs.size))
    n = int(diffs.size)
    exact = {"permutation_p": sign_flip_test(diffs) if n >= 1 else math.nan,
             "min_permutation_p": min_permutation_p(n) if n >= 1 else math.nan}
    if n < 2:
        return PairedTest(interval, math.nan, math.nan, n, **exact)
    if interval.std == 0.0:
        if interval.mean == 0.0:
            return PairedTest(interval, math.nan, 1.0, n, **exact)
        return PairedTest(interval, math.copysign(math.inf, interval.mean), 0.0, n, **exact)
    from scipy import stats as scipy_stats

    t = interval.mean / (interval.std / math.sqrt(n))
    p = float(2.0 * scipy_stats.t.sf(abs(t), n - 1))
    return PairedTest(interval, float(t), p, n, **exact)


def min_permutation_p(n: int) -> float:
    """The smallest two-sided p-value the sign-flip test can give with n pairs: 2/2^n.

    Only the observed signs and their mirror image reach the observed |Σ d_i| when
    every |d_i| > 0, so no seed count below 6 can reach p < 0.05.

    >>> min_permutation_p(5), min_permutation_p(6)
    (0.0625, 0.03125)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: got {n!r}; allowed: an integer >= 1")
    return min(1.0, 2.0 / 2.0 ** int(n))


def sign_flip_test(differences: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired permutation p-value of the mean of d_1..d_n (no normality assumed).

    p = #{ε ∈ {±1}^n : |Σ ε_i d_i| >= |Σ d_i|} / 2^n, every pattern enumerated when
    n <= :data:`EXACT_PERMUTATION_MAX` (the 2^n sums are built by doubling, O(2^n)
    memory); above that, :data:`MONTE_CARLO_FLIPS` random patterns from a fixed seed
    with p = (hits + 1)/(draws + 1). NaN entries are dropped. Sums equal to the
    observed one up to float rounding count as reaching it.

    Args:
      differences: the paired differences d_i = a_i − b_i.

    Returns:
      p in (0, 1]; NaN when no finite difference is left.

    >>> sign_flip_test([0.1, 0.2, 0.3, 0.4, 0.5])     # all positive: 2 of 32 patterns
    0.0625
    >>> sign_flip_test([1.0, -1.0, 2.0])              # |Σ| = 2; sums ±2, ±2, ±4 reach it, ±0 do not: 6 of 8
    0.75
    """
    d = _as_vector(differences, "differences")
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return math.nan
    observed = abs(float(d.sum()))
    slack = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if n <= EXACT_PERMUTATION_MAX:
        sums = np.zeros(1)
        for value in d:
            sums = np.concatenate([sums + value, sums - value])
        return float(np.count_nonzero(np.abs(sums) >= observed - slack)) / sums.size
    rng = np.random.default_rng(0)
    hits = 0
    for start in range(0, MONTE_CARLO_FLIPS, 10_000):
        signs = rng.choice((-1.0, 1.0), size=(min(10_000, MONTE_CARLO_FLIPS - start), n))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - slack))
    return (hits + 1) / (MONTE_CARLO_FLIPS + 1)


def holm(p_values: Sequence[float] | np.ndarray) -> list[float]:
    """Holm's step-down adjustment of one family of p-values (NaN entries stay NaN, outside the family).

    With the m finite p-values sorted, p_(1) <= ... <= p_(m):
    adjusted p_(i) = max_{j<=i} min(1, (m − j + 1)·p_(j)), returned in the input order.
    Rejecting where the adjusted p < α keeps the family-wise error rate <= α.

    Args:
      p_values: the family's raw p-values.

    Returns:
      The adjusted p-values, same order and length.

    >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03])]   # 3·0.01; max(0.03, 2·0.03); max(0.06, 1·0.04)
    [0.03, 0.06, 0.06]
    """
    p = _as_vector(p_values, "p_values")
    if np.any((p[np.isfinite(p)] < 0) | (p[np.isfinite(p)] > 1)):
        raise ValueError(f"p_values: got {p.tolist()!r}; allowed: numbers in [0, 1] (or NaN)")
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p[index])))
        out[index] = running
    return [float(v) for v in out]


def identical(test: PairedTest | Mapping[str, Any]) -> bool:
    """Whether every one of at least 2 paired differences is exactly 0: the arms agree seed by seed.

    There is no t statistic then (0/0); :func:`paired_difference` stores t = NaN and p = 1,
    and a report should say "identical" rather than print them.

    Args:
      test: a :class:`PairedTest`, or its ``as_dict()`` read back from JSON (NaN as None).

    Returns:
      True for identical arms; False otherwise, including a constant nonzero difference.

    >>> identical(paired_difference([0.9, 0.8], [0.9, 0.8])), identical(paired_difference([0.9, 0.8], [0.8, 0.8]))
    (True, False)
    """
    if isinstance(test, PairedTest):
        test = test.as_dict()
    t, p = test.get("t"), test.get("p_value")
    return test.get("n", 0) >= 2 and p == 1.0 and (t is None or math.isnan(t))


__all__ = ["DEFAULT_CONFIDENCE", "EXACT_PERMUTATION_MAX", "Interval", "PairedTest", "holm", "identical", "mean_ci",
           "min_permutation_p", "paired_difference", "sign_flip_test", "t_quantile"]
