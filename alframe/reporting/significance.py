"""Significance of one paired sample of per-seed differences: a bootstrap interval of the mean,
the paired t-test (sign test where all differences are equal), a verdict and the seeds a paired
t-test needs (power analysis). Used by :mod:`alframe.reporting.paired`, which pairs the runs.

Why the verdict also asks the t-test. A bootstrap interval of a mean is too narrow with few observations: on
standard-normal differences with no effect, the 95% BCa interval of this module excludes 0 in
50% of samples of 2 seeds, 29% of 3, 16% of 5, 10% of 10 and 7% of 20 (4,000 samples each,
``python -m benchmarks.bench_paired --samples 4000``) instead of 5%; whenever all n differences
have the same sign, every resampled mean has it too. So by default (``require_t_test=True``) a
verdict of "better" or "worse" also needs the two-sided paired t-test
(:func:`scipy.stats.ttest_1samp` of the differences) to reject 0 at ``alpha``: in the same
simulation that gives a false verdict in 4-5% of samples for every n. The interval columns are
the bootstrap interval either way, and the ``note`` says when the t-test overruled it.

Seeds needed is computed from the observed d = mean / sd of the differences; with few seeds d is
itself uncertain, so read the number as an order of magnitude ("3 more" or "300 more").
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
#: seed of the bootstrap generator; every interval uses a fresh generator with this seed, so an
#: interval depends only on its own differences (not on which other comparisons were made)
RANDOM_STATE = 0
POWER = 0.8
ALPHA = 0.05
#: mean differences smaller than this (in absolute value) count as "no effect observed"
ZERO_EFFECT = 1e-12
#: scipy >= 1.15 takes ``rng``; older versions (pyproject allows scipy >= 1.11) ``random_state``
_RNG_ARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _diffs(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"diffs has shape {d.shape}: expected a 1-D array of per-seed differences")
    if not np.isfinite(d).all():
        raise ValueError(f"diffs {d.tolist()}: contains NaN or inf; only finite differences are allowed")
    return d


def bootstrap_ci(diffs, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 random_state: int = RANDOM_STATE) -> tuple[float, float, str]:
    """Bootstrap confidence interval of the mean of paired differences.

    ``scipy.stats.bootstrap`` with the differences as one sample (a paired design: each
    resample draws whole seeds), method BCa; where BCa is degenerate (all differences equal, or
    too few distinct values: scipy returns NaN) the percentile interval is used instead.

    Args:
        diffs: ``[n_seeds] float`` per-seed differences A - B, n_seeds >= 2.
        confidence: confidence level in (0, 1).
        n_resamples: number of bootstrap resamples, >= 1.
        random_state: seed of the ``numpy.random.default_rng`` used (same inputs -> same interval).

    Returns:
        ``(low, high, method)`` with ``method`` ``"BCa"`` or ``"percentile"``; the interval is in
        the units of ``diffs``.

    Raises:
        ValueError: ``diffs`` is not 1-D, has fewer than 2 values or non-finite ones, or
            ``confidence`` / ``n_resamples`` is out of range.
    """
    d = _diffs(diffs)
    if len(d) < 2:
        raise ValueError(f"diffs has {len(d)} value(s): a bootstrap interval needs at least 2 seeds")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence}: expected a level in (0, 1), e.g. 0.95")
    if n_resamples < 1:
        raise ValueError(f"n_resamples {n_resamples}: expected an integer >= 1")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa's degenerate case warns (DegenerateDataWarning, divide by zero) and gives NaN
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=int(n_resamples),
                                  method=method, **{_RNG_ARG: np.random.default_rng(random_state)})
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return low, high, method
    raise AssertionError("the percentile bootstrap interval of finite values is finite")  # pragma: no cover


def paired_t_pvalue(diffs) -> float:
    """Two-sided p-value of the paired t-test of mean(diffs) = 0 (``scipy.stats.ttest_1samp``).

    Where all differences are equal the t statistic is undefined (sd = 0; common for labels
    saved, which are multiples of the acquisition batch): then the exact two-sided sign test
    (``scipy.stats.binomtest``: ``2 * 0.5**n``, so 6 equal non-zero differences are needed at
    alpha 0.05), and 1.0 when they are all 0.

    Args:
        diffs: ``[n_seeds] float`` per-seed differences.

    Returns:
        The p-value; NaN with fewer than 2 values.

    Raises:
        ValueError: ``diffs`` is not 1-D or has non-finite values.
    """
    d = _diffs(diffs)
    if len(d) < 2:
        return float("nan")
    if np.ptp(d) == 0.0:
        return 1.0 if abs(d[0]) <= ZERO_EFFECT else float(stats.binomtest(len(d), len(d)).pvalue)
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def paired_t_power(effect_size: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs for standardised effect ``d``.

    ``d`` = mean / standard deviation of the differences; the test statistic follows a
    noncentral t with ``n - 1`` degrees of freedom and noncentrality ``d * sqrt(n)``.

    Args:
        effect_size: d (either sign).
        n: number of pairs (seeds), >= 2.
        alpha: two-sided significance level in (0, 1).

    Returns:
        The probability of rejecting mean = 0, in [0, 1].

    Raises:
        ValueError: ``n`` < 2, ``alpha`` outside (0, 1) or ``effect_size`` not finite.
    """
    if n < 2:
        raise ValueError(f"n {n}: a paired t-test needs at least 2 pairs")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha}: expected a significance level in (0, 1), e.g. 0.05")
    if not np.isfinite(effect_size):
        raise ValueError(f"effect_size {effect_size}: expected a finite number")
    df = n - 1
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(effect_size) * math.sqrt(n)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(effect_size: float, power: float = POWER, alpha: float = ALPHA) -> int:
    """Smallest number of paired seeds at which a two-sided paired t-test has ``power``.

    Args:
        effect_size: standardised effect d = mean / sd of the per-seed differences (either sign,
            non-zero; e.g. d = 0.5 needs 34 seeds at power 0.8, alpha 0.05).
        power: wanted power in (0, 1).
        alpha: two-sided significance level in (0, 1).

    Returns:
        The number of seeds n >= 2 (exact search over :func:`paired_t_power`, which increases with n).

    Raises:
        ValueError: ``effect_size`` is 0 or not finite, or ``power`` / ``alpha`` is outside (0, 1).
    """
    if not np.isfinite(effect_size) or effect_size == 0:
        raise ValueError(f"effect_size {effect_size}: expected a finite non-zero number")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power {power}: expected a probability in (0, 1), e.g. 0.8")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha}: expected a significance level in (0, 1), e.g. 0.05")
    if paired_t_power(effect_size, 2, alpha) >= power:
        return 2
    # (z_a/2 + z_b)^2 / d^2 (normal approximation) is about the answer; double until power is reached
    z = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
    lo, hi = 2, max(3, math.ceil((z / abs(effect_size)) ** 2))  # power(lo) < power
    while paired_t_power(effect_size, hi, alpha) < power:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # power(lo) < power <= power(hi)
        mid = (lo + hi) // 2
        if paired_t_power(effect_size, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def verdict(ci_low: float, ci_high: float, n_seeds: int, p_value: float | None = None,
            alpha: float = ALPHA) -> str:
    """Plain verdict of a comparison A - B from its interval.

    Args:
        ci_low, ci_high: interval of the mean difference (NaN when there is none).
        n_seeds: number of paired seeds behind it.
        p_value: paired t-test p-value; when given, "better"/"worse" also need ``p_value < alpha``.
        alpha: significance level for ``p_value``.

    Returns:
        ``"better"`` (interval above 0), ``"worse"`` (below 0), ``"no paired seeds"`` (n = 0) or
        ``"not distinguishable with n seed(s)"``.
    """
    if n_seeds == 0:
        return "no paired seeds"
    agrees = p_value is None or (np.isfinite(p_value) and p_value < alpha)
    if np.isfinite(ci_low) and ci_low > 0 and agrees:
        return "better"
    if np.isfinite(ci_high) and ci_high < 0 and agrees:
        return "worse"
    return f"not distinguishable with {n_seeds} seed" + ("" if n_seeds == 1 else "s")


def compare(diffs, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
            random_state: int = RANDOM_STATE, require_t_test: bool = True, power: float = POWER,
            alpha: float = ALPHA) -> dict:
    """Everything the table says about one comparison, from its per-seed differences.

    Args:
        diffs: ``[n_seeds] float`` per-seed differences A - B (may be empty).
        confidence, n_resamples, random_state: see :func:`bootstrap_ci`.
        require_t_test: "better"/"worse" also need the paired t-test at ``alpha`` (see the module doc).
        power, alpha: of the seeds-needed calculation (:func:`seeds_needed`).

    Returns:
        Dict with ``n_seeds, mean_diff, ci_low, ci_high, verdict, seeds_needed`` (int, or None
        where the verdict is not "not distinguishable", the mean is 0 or there are < 2 seeds;
        where all differences are equal, the seeds the sign test needs),
        ``p_value, ci_method`` (``"BCa"``, ``"percentile"`` or ``""`` without interval) and
        ``note`` (text, possibly empty: "no effect observed", t-test overruled the interval, ...).

    Raises:
        ValueError: as :func:`bootstrap_ci`.
    """
    d = _diffs(diffs)
    n = len(d)
    notes: list[str] = []
    out = {"n_seeds": n, "mean_diff": float(d.mean()) if n else float("nan"), "ci_low": float("nan"),
           "ci_high": float("nan"), "seeds_needed": None, "p_value": float("nan"), "ci_method": ""}
    if n >= 2:
        out["ci_low"], out["ci_high"], out["ci_method"] = bootstrap_ci(d, confidence, n_resamples, random_state)
        out["p_value"] = paired_t_pvalue(d)
    elif n == 1:
        notes.append("one paired seed: no interval")
    boot = verdict(out["ci_low"], out["ci_high"], n)
    out["verdict"] = verdict(out["ci_low"], out["ci_high"], n, out["p_value"] if require_t_test else None, alpha)
    if boot != out["verdict"]:
        notes.append(f"interval excludes 0 but the paired t-test does not (p = {out['p_value']:.2g}): "
                     "too few seeds to trust the bootstrap")
    if out["verdict"].startswith("not distinguishable") and n >= 2:
        sd = float(np.std(d, ddof=1))
        if abs(out["mean_diff"]) <= ZERO_EFFECT:
            notes.append("no effect observed")
        elif sd > 0:
            d_eff = out["mean_diff"] / sd
            out["seeds_needed"] = seeds_needed(d_eff, power, alpha)
            notes.append(f"effect size d = {d_eff:.2g}")
        else:  # all differences equal: the sign test needs n with 2 * 0.5**n < alpha
            out["seeds_needed"] = int(math.floor(math.log2(2.0 / alpha))) + 1
            notes.append(f"all {n} differences equal: sign test instead of the t-test")
    out["note"] = "; ".join(notes)
    return out
