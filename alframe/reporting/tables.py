"""Tables of a report: mean curves, per-strategy summary (final accuracy, AUBC, labels to each
target, savings against the baseline), Lüth et al.'s pairwise matrix, machine-label evidence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alframe.loop import machine_labels
from alframe.metrics import aubc, labels_to_target
from alframe.reporting import paired as paired_stats
from alframe.reporting.runs import RunCurve

DEFAULT_TARGETS = (0.90, 0.95)


@dataclass
class Report:
    """Everything a report computes (the files are written from these tables).

    Attributes:
        runs: the runs used.
        curves: plotted data, one row per (group, labels): ``n_seeds, mean, std``.
        summary: one row per group (strategy), numeric columns (see :func:`summarise`).
        pairwise: ``[G, G]`` share of (seed, budget) pairs where the row beats the column
            (None with fewer than 2 seeds per strategy).
        targets: target accuracies of the labels-to-target columns.
        notes: warnings to show with the report (skipped runs, unequal lengths, ...).
        machine_labels: per (group, threshold) the final machine-label count, coverage and
            accuracy averaged over seeds (:func:`machine_label_table`); None without such metrics.
        paired: paired comparisons (:func:`alframe.reporting.paired.paired_table`); None with
            fewer than 2 strategies.
        paired_curves: mean paired difference from the baseline per (group, labels)
            (:func:`alframe.reporting.paired.paired_difference_curves`); None without baseline.
    """

    runs: list[RunCurve]
    curves: pd.DataFrame
    summary: pd.DataFrame
    pairwise: pd.DataFrame | None
    targets: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    machine_labels: pd.DataFrame | None = None
    paired: pd.DataFrame | None = None
    paired_curves: pd.DataFrame | None = None


# --------------------------------------------------------------------------- statistics
def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); NaN for fewer than 2 values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")


def quantile_inf(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile that allows ``inf`` ("not reached") values.

    ``numpy.quantile`` of ``[a, inf]`` can give NaN (``inf * 0``); here any interpolation that
    involves ``inf`` with a positive weight gives ``inf``.
    """
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) == 0:
        return float("nan")
    pos = q * (len(v) - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    frac = pos - lo
    if frac == 0.0:
        return float(v[lo])
    if np.isinf(v[hi]) or np.isinf(v[lo]):
        return float("inf")
    return float(v[lo] + (v[hi] - v[lo]) * frac)


def quantile_observed(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile as one of the observed values (nearest rank, ties to the even index).

    Used for quartiles of label counts: a budget is a number of labels that was evaluated, and an
    interpolated one (``62.5`` between runs that reached a target at 60 and 70 labels) never was.
    ``inf`` ("not reached") values are ordinary values here.

    Args:
        values: ``[S]`` numbers (``inf`` allowed).
        q: quantile in [0, 1].

    Returns:
        An element of ``values`` (NaN when empty).
    """
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) == 0:
        return float("nan")
    return float(v[int(np.rint(q * (len(v) - 1)))])


def mean_curves(runs: Sequence[RunCurve]) -> pd.DataFrame:
    """Mean and standard deviation of the budget curves per group at each label count.

    Returns:
        DataFrame with columns ``group, labels, n_seeds, mean, std`` sorted by group order of
        appearance and labels; ``std`` is NaN where fewer than 2 runs reach that label count.
    """
    rows = []
    for group in dict.fromkeys(r.group for r in runs):
        values: dict[int, list[float]] = {}
        for r in runs:
            if r.group != group:
                continue
            for x, y in zip(r.labels.tolist(), r.accuracy.tolist(), strict=True):
                values.setdefault(int(x), []).append(float(y))
        for x in sorted(values):
            v = np.asarray(values[x])
            rows.append({"group": group, "labels": x, "n_seeds": len(v), "mean": float(v.mean()), "std": _std(v)})
    return pd.DataFrame(rows, columns=["group", "labels", "n_seeds", "mean", "std"])


def target_key(t: float) -> str:
    """Column key of a target accuracy: 0.9 -> ``"90"``, 0.925 -> ``"92.5"``."""
    return f"{t * 100:g}"


def summarise(runs: Sequence[RunCurve], curves: pd.DataFrame, targets: Sequence[float] = DEFAULT_TARGETS,
              baseline: str = "random") -> pd.DataFrame:
    """Per-group summary table.

    Columns: ``group, n_seeds, labels_min, labels_max, final_acc_mean, final_acc_std,
    aubc_mean, aubc_std`` and for each target ``t`` (key ``k`` = :func:`target_key`):
    ``reached_k`` (runs that reached it), ``labels_k_mean`` (NaN unless every run reached it),
    ``labels_k_median`` (interpolated) and the quartiles ``labels_k_q25 / _q75`` (observed label
    counts, :func:`quantile_observed`; ``inf`` = not reached), ``labels_k_meancurve`` (first
    label count at which the mean curve reaches ``t``; NaN if never), ``savings_k`` (baseline's
    mean-curve labels minus this group's; NaN when either did not reach ``t`` or there is no
    baseline), ``savings_k_pct`` (the same relative to the baseline's labels, in percent) and
    ``savings_k_min``: when the baseline never reaches ``t`` but the group does, a lower bound of
    the savings (the baseline's largest label count minus the group's labels; else NaN).
    """
    rows = []
    for group in dict.fromkeys(r.group for r in runs):
        rs = [r for r in runs if r.group == group]
        final = np.array([r.accuracy[-1] for r in rs])
        areas = np.array([aubc(r.labels, r.accuracy) for r in rs])
        row = {"group": group, "n_seeds": len(rs), "labels_min": int(min(r.labels[-1] for r in rs)),
               "labels_max": int(max(r.labels[-1] for r in rs)), "final_acc_mean": float(final.mean()),
               "final_acc_std": _std(final), "aubc_mean": float(areas.mean()), "aubc_std": _std(areas)}
        mc = curves[curves.group == group]
        mean_hist = [{"n_labelled": x, "acc": y} for x, y in zip(mc["labels"], mc["mean"], strict=True)]
        for t in targets:
            k = target_key(t)
            per_seed = np.array([labels_to_target([{"n_labelled": x, "acc": y} for x, y in
                                                   zip(r.labels.tolist(), r.accuracy.tolist(), strict=True)], t, "acc")
                                 for r in rs])
            per_seed = np.where(np.isnan(per_seed), np.inf, per_seed)
            reached = np.isfinite(per_seed)
            row[f"reached_{k}"] = int(reached.sum())
            row[f"labels_{k}_mean"] = float(per_seed.mean()) if reached.all() else float("nan")
            row[f"labels_{k}_q25"] = quantile_observed(per_seed, 0.25)
            row[f"labels_{k}_median"] = quantile_inf(per_seed, 0.5)
            row[f"labels_{k}_q75"] = quantile_observed(per_seed, 0.75)
            row[f"labels_{k}_meancurve"] = labels_to_target(mean_hist, t, "acc")
        rows.append(row)
    table = pd.DataFrame(rows)
    base = table[table.group == baseline]
    for t in targets:
        k = target_key(t)
        table[f"savings_{k}"] = table[f"savings_{k}_pct"] = table[f"savings_{k}_min"] = float("nan")
        if len(base):
            b = float(base[f"labels_{k}_meancurve"].iloc[0])
            own = table[f"labels_{k}_meancurve"]
            table[f"savings_{k}"] = b - own
            table[f"savings_{k}_pct"] = 100.0 * table[f"savings_{k}"] / b
            if np.isnan(b):
                table[f"savings_{k}_min"] = float(curves[curves.group == baseline]["labels"].max()) - own
    return table


def pairwise_matrix(runs: Sequence[RunCurve]) -> pd.DataFrame | None:
    """Pairwise comparison matrix in the spirit of Lüth et al. 2023.

    Entry ``[A, B]`` is the share of (seed, budget) pairs - same ``seed`` tag, same number of
    labels, both runs evaluated there - at which A's accuracy is higher than B's (a tie counts
    one half). Each run's first point (the initial labelled set, identical for all strategies
    of one seed) is left out. ``[A, B] + [B, A] = 1`` wherever they share a point; NaN where they share none;
    the diagonal is NaN.

    Returns:
        ``[G, G]`` DataFrame indexed by group, or None when no group has 2+ seeds.
    """
    groups = list(dict.fromkeys(r.group for r in runs))
    if max(sum(r.group == g for r in runs) for g in groups) < 2 or len(groups) < 2:
        return None
    points: dict[str, dict[tuple[str, int], float]] = {g: {} for g in groups}
    for r in runs:
        for x, y in zip(r.labels.tolist()[1:], r.accuracy.tolist()[1:], strict=True):
            points[r.group][(r.seed, int(x))] = float(y)
    m = pd.DataFrame(np.nan, index=groups, columns=groups, dtype=float)
    for a in groups:
        for b in groups:
            if a == b:
                continue
            common = points[a].keys() & points[b].keys()
            if not common:
                continue
            wins = sum(1.0 if points[a][p] > points[b][p] else 0.5 if points[a][p] == points[b][p] else 0.0
                       for p in common)
            m.loc[a, b] = wins / len(common)
    m.index.name = "row beats column"
    return m


def machine_label_table(runs: Sequence[RunCurve]) -> pd.DataFrame | None:
    """Final machine-label evidence per strategy and threshold, mean over the strategy's runs.

    Reads each run's last ``machine_labels/t<t>/count|coverage|accuracy`` values (logged by the
    loop in simulations, for the last model on the remaining pool).

    Returns:
        Columns ``group, threshold, n_seeds, count, coverage, accuracy`` (means; accuracy over
        the runs that kept at least one sample), sorted by group and threshold; None when no
        run has such metrics.
    """
    rows = []
    for r in runs:
        for t, v in machine_labels.from_metrics(r.final_metrics).items():
            rows.append({"group": r.group, "threshold": t, "count": v.get("count", 0.0),
                         "coverage": v.get("coverage", np.nan), "accuracy": v.get("accuracy", np.nan)})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    out = df.groupby(["group", "threshold"], as_index=False).agg(
        n_seeds=("count", "size"), count=("count", "mean"), coverage=("coverage", "mean"),
        accuracy=("accuracy", "mean"))
    return out.sort_values(["group", "threshold"]).reset_index(drop=True)


def last_run_per_seed(runs: Sequence[RunCurve], notes: list[str]) -> list[RunCurve]:
    """One run per (strategy, seed): the last of ``runs`` (listed oldest first), so a rerun or a
    test run of a seed is not counted twice; runs without a seed tag are all kept. Each seed with
    several runs gets a line in ``notes``."""
    keep: dict[tuple, RunCurve] = {}
    counts: dict[tuple, int] = {}
    for i, r in enumerate(runs):
        key = (r.group, str(r.seed)) if str(r.seed) not in ("?", "") else (r.group, "?", i)
        keep[key] = r
        counts[key] = counts.get(key, 0) + 1
    for (group, seed, *_), c in counts.items():
        if c > 1:
            notes.append(f"{group}, seed {seed}: {c} runs; the report uses the last one")
    return list(keep.values())


def build_report(runs: Sequence[RunCurve], targets: Sequence[float] = DEFAULT_TARGETS,
                 baseline: str = "random", notes: list[str] | None = None) -> Report:
    """Compute curves, summary table and pairwise matrix for ``runs`` (see the module doc), over
    the last run of each (strategy, seed) (:func:`last_run_per_seed`)."""
    notes = list(notes or [])
    runs = last_run_per_seed(runs, notes)
    curves = mean_curves(runs)
    summary = summarise(runs, curves, targets, baseline)
    for _, row in summary.iterrows():
        if row.labels_min != row.labels_max:
            notes.append(f"{row.group}: runs end at different numbers of labels ({row.labels_min}-{row.labels_max}); "
                         "the mean curve averages the runs that reach each point")
        if row.n_seeds == 1:
            notes.append(f"{row.group}: a single seed, no standard deviation")
    if summary.labels_max.nunique() > 1:
        ends = ", ".join(f"{g} {m}" for g, m in zip(summary.group, summary.labels_max, strict=True))
        notes.append(f"strategies end at different numbers of labels ({ends}): compare AUBC and final "
                     "accuracy with care")
    if baseline not in set(summary.group):
        notes.append(f"no {baseline!r} runs: label savings are not computed")
    paired = paired_stats.paired_table(runs, baseline, targets, notes=notes)
    paired_curves = paired_stats.paired_difference_curves(runs, baseline)
    return Report(runs=list(runs), curves=curves, summary=summary, pairwise=pairwise_matrix(runs),
                  targets=tuple(targets), notes=notes, machine_labels=machine_label_table(runs),
                  paired=paired if len(paired) else None, paired_curves=paired_curves if len(paired_curves) else None)
