"""Paired comparisons of active-learning strategies over seeds: does A beat B?

Seeds are paired: in alframe the same ``seed`` tag means the same initial labelled set (and the
same data split), so strategy A's run of seed s is compared with strategy B's run of seed s and
the per-seed differences are the sample. For every pair of strategies (and so for every strategy
against the baseline) and every metric this module gives:

- ``mean_diff``: the mean over the paired seeds of A - B (AUBC, final accuracy) or of the labels
  B needs minus the labels A needs to reach a target accuracy ("labels saved by A"); positive
  always means A is better;
- a 95% bootstrap confidence interval of that mean (:func:`bootstrap_ci`: ``scipy.stats.bootstrap``
  on the per-seed differences as one sample, BCa, percentile where BCa is degenerate, a fixed
  seed so a report is reproducible);
- a verdict (:func:`verdict`): ``"better"`` when the interval lies above 0, ``"worse"`` when
  below, otherwise ``"not distinguishable with n seeds"``; by default "better" and "worse" also
  need the paired t-test to agree, because a bootstrap interval from few seeds is too narrow
  (:mod:`alframe.reporting.significance` says by how much);
- where the verdict is "not distinguishable", the number of seeds a paired t-test needs to
  detect the observed effect with power 0.8 at alpha 0.05 (:func:`seeds_needed`).

Pairing rules (:func:`paired_table`): only seeds that both strategies have are compared (the
others are counted in the note); runs without a ``seed`` (``"?"``) are left out; where a
strategy has several runs of one seed the last one is used (``alframe.reporting.runs.load_runs`` lists
runs oldest first). Two paired runs that end at different numbers of labels are both cut to the
labels up to the smaller last budget before AUBC, final accuracy and labels-to-target are
computed, so a longer run is not credited for its extra rounds. For labels saved, only seeds at
which both runs reach the target are compared; seeds where only one or neither reaches it are
counted in the note (leaving out seeds where only A reaches the target biases against A: the
note says how many).

Inputs are "curves": objects with ``group`` (strategy), ``seed`` (str), ``labels`` (``[R]`` int,
increasing) and ``accuracy`` (``[R]`` float) attributes, e.g. ``alframe.reporting.runs.RunCurve``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from alframe.metrics import aubc, labels_to_target
from alframe.reporting.significance import (
    ALPHA,
    CONFIDENCE,
    N_RESAMPLES,
    POWER,
    RANDOM_STATE,
    bootstrap_ci,
    compare,
    paired_t_power,
    paired_t_pvalue,
    seeds_needed,
    verdict,
)

__all__ = ["ALPHA", "COLUMNS", "CONFIDENCE", "CURVE_COLUMNS", "N_RESAMPLES", "POWER", "RANDOM_STATE", "Curve",
           "bootstrap_ci", "compare", "comparison_pairs", "display_paired", "paired_difference_curves",
           "paired_t_power", "paired_t_pvalue", "paired_table", "paired_values", "plot_paired_differences",
           "save_paired_plot", "seeds_needed", "verdict"]

COLUMNS = ["a", "b", "metric", "n_seeds", "mean_diff", "ci_low", "ci_high", "verdict", "seeds_needed",
           "p_value", "ci_method", "note"]
CURVE_COLUMNS = ["group", "labels", "n_seeds", "mean_diff", "ci_low", "ci_high"]


class Curve(Protocol):
    """What the comparisons read from a run (``alframe.reporting.runs.RunCurve`` has it)."""

    group: str
    seed: str
    labels: np.ndarray
    accuracy: np.ndarray


# --------------------------------------------------------------------------- pairing runs
def _seed_key(seed: str):
    s = str(seed)
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def _by_group_seed(runs: Iterable[Curve], notes: list[str]) -> dict[str, dict[str, Curve]]:
    """``{group: {seed: run}}``, the last run of a duplicated (group, seed); seedless runs left out."""
    out: dict[str, dict[str, Curve]] = {}
    counts: dict[tuple[str, str], int] = {}
    for r in runs:
        seed = str(r.seed)
        if seed in ("?", ""):
            notes.append(f"{r.group}: a run without a seed tag is left out of the paired comparisons")
            continue
        out.setdefault(r.group, {})[seed] = r
        counts[(r.group, seed)] = counts.get((r.group, seed), 0) + 1
    for (g, s), c in counts.items():
        if c > 1:
            notes.append(f"{g}, seed {s}: {c} runs; the paired comparisons use the last one")
    return out


def _cut(r: Curve, end: float) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(r.labels), np.asarray(r.accuracy, dtype=float)
    keep = x <= end
    return x[keep], y[keep]


def _labels_to(x: np.ndarray, y: np.ndarray, target: float) -> float:
    return labels_to_target([{"n_labelled": a, "acc": b} for a, b in zip(x.tolist(), y.tolist(), strict=True)],
                            target, "acc")


def _target_name(t: float) -> str:
    return f"labels_saved_{t * 100:g}"


def _check_targets(targets: Sequence[float]) -> tuple[float, ...]:
    out = []
    for t in targets:
        try:
            v = float(t)
        except (TypeError, ValueError):
            v = float("nan")
        if not 0.0 < v <= 1.0:
            raise ValueError(f"target {t!r}: expected accuracies in (0, 1]")
        out.append(v)
    return tuple(out)


def paired_values(a: dict[str, Curve], b: dict[str, Curve], targets: Sequence[float] = ()) -> dict:
    """Per-seed paired differences of strategy A's runs against B's.

    Args:
        a, b: ``{seed: run}`` of the two strategies; only seeds in both are used, in seed order.
        targets: target accuracies in (0, 1] of the labels-saved metrics.

    Returns:
        ``{"seeds": [n] str, "aubc": [n] float, "final_acc": [n] float, "cut": int, "unusable": int,
        "labels_saved_<k>": (diffs, counts)}``: ``aubc`` / ``final_acc`` are A - B (accuracy
        units, each pair cut to its common labels), ``cut`` counts pairs whose runs ended at
        different budgets, ``unusable`` common seeds left out (no label count up to the smaller
        last budget in one run, or a non-finite accuracy there); per target ``diffs`` ``[m] float`` are B's labels minus A's over the
        m seeds where both reached it (labels) and ``counts`` is a dict ``both, a_only, b_only,
        neither``.
    """
    out: dict = {"seeds": [], "aubc": [], "final_acc": [], "cut": 0, "unusable": 0}
    per_target = {t: ([], {"both": 0, "a_only": 0, "b_only": 0, "neither": 0}) for t in targets}
    for s in sorted(a.keys() & b.keys(), key=_seed_key):
        ra, rb = a[s], b[s]
        end = min(ra.labels[-1], rb.labels[-1])
        (xa, ya), (xb, yb) = _cut(ra, end), _cut(rb, end)
        if not (len(ya) and len(yb) and np.isfinite(ya).all() and np.isfinite(yb).all()):
            out["unusable"] += 1
            continue
        out["seeds"].append(s)
        out["cut"] += int(ra.labels[-1] != rb.labels[-1])
        out["aubc"].append(aubc(xa, ya) - aubc(xb, yb))
        out["final_acc"].append(float(ya[-1] - yb[-1]))
        for t in targets:
            la, lb = _labels_to(xa, ya, t), _labels_to(xb, yb, t)
            diffs, counts = per_target[t]
            ra_ok, rb_ok = np.isfinite(la), np.isfinite(lb)
            key = "both" if ra_ok and rb_ok else "a_only" if ra_ok else "b_only" if rb_ok else "neither"
            counts[key] += 1
            if key == "both":
                diffs.append(lb - la)
    out["aubc"], out["final_acc"] = np.asarray(out["aubc"], float), np.asarray(out["final_acc"], float)
    for t, (diffs, counts) in per_target.items():
        out[_target_name(t)] = (np.asarray(diffs, float), counts)
    return out


def _target_note(a: str, b: str, t: float, counts: dict) -> str:
    n = sum(counts.values())
    if counts["both"] == n:
        return ""
    parts = [f"compared the {counts['both']} of {n} paired seeds where both reached {t * 100:g}%"]
    if counts["a_only"]:
        parts.append(f"only {a} reached it in {counts['a_only']}")
    if counts["b_only"]:
        parts.append(f"only {b} reached it in {counts['b_only']}")
    if counts["neither"]:
        parts.append(f"neither in {counts['neither']}")
    return ", ".join(parts)


def comparison_pairs(groups: Sequence[str], baseline: str = "random") -> list[tuple[str, str]]:
    """The ordered pairs (A, B) compared: every strategy against ``baseline`` (A = the strategy),
    then every other pair once, A before B in the order of ``groups``."""
    groups = list(dict.fromkeys(groups))
    pairs = [(g, baseline) for g in groups if g != baseline and baseline in groups]
    others = [g for g in groups if g != baseline]
    pairs += [(others[i], others[j]) for i in range(len(others)) for j in range(i + 1, len(others))]
    return pairs


def paired_table(runs: Sequence[Curve], baseline: str = "random", targets: Sequence[float] = (0.90, 0.95),
                 confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 random_state: int = RANDOM_STATE, require_t_test: bool = True, power: float = POWER,
                 alpha: float = ALPHA, notes: list[str] | None = None) -> pd.DataFrame:
    """All paired comparisons of the strategies in ``runs`` (see the module doc for the rules).

    Args:
        runs: curves (``group, seed, labels, accuracy``), one per (strategy, seed).
        baseline: strategy every other one is compared against first (need not be present).
        targets: accuracies in (0, 1] for the ``labels_saved_<k>`` metrics (``k`` = percent).
        confidence, n_resamples, random_state, require_t_test, power, alpha: see :func:`compare`.
        notes: list that receives notes about left-out and duplicated runs.

    Returns:
        One row per (pair, metric), metrics ``aubc``, ``final_acc`` and ``labels_saved_<k>`` per
        target, columns :data:`COLUMNS`: ``a, b, metric, n_seeds`` (seeds compared),
        ``mean_diff, ci_low, ci_high`` (A - B in accuracy units; labels saved by A in labels),
        ``verdict``, ``seeds_needed`` (nullable int), ``p_value``, ``ci_method``, ``note``.
        Empty (with these columns) when there are fewer than 2 strategies.

    Raises:
        ValueError: a target is outside (0, 1], or see :func:`bootstrap_ci`.
    """
    targets = _check_targets(targets)
    notes = notes if notes is not None else []
    by = _by_group_seed(runs, notes)
    rows = []
    kw = {"confidence": confidence, "n_resamples": n_resamples, "random_state": random_state,
          "require_t_test": require_t_test, "power": power, "alpha": alpha}
    for a, b in comparison_pairs(list(by), baseline):
        v = paired_values(by[a], by[b], targets)
        unpaired = len(by[a].keys() ^ by[b].keys())
        common = []
        if unpaired:
            common.append(f"{unpaired} seed(s) run by only one of the two left out")
        if v["cut"]:
            common.append(f"{v['cut']} pair(s) cut to the smaller last budget")
        if v["unusable"]:
            common.append(f"{v['unusable']} paired seed(s) without a common budget or with non-finite "
                          "accuracies left out")
        metrics = [("aubc", v["aubc"], ""), ("final_acc", v["final_acc"], "")]
        metrics += [(_target_name(t), v[_target_name(t)][0], _target_note(a, b, t, v[_target_name(t)][1]))
                    for t in targets]
        for name, diffs, extra in metrics:
            res = compare(diffs, **kw)
            note = "; ".join(p for p in [res.pop("note"), extra, *common] if p)
            rows.append({"a": a, "b": b, "metric": name, **res, "note": note})
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["seeds_needed"] = table["seeds_needed"].astype("Int64")
    table["n_seeds"] = table["n_seeds"].astype(int)
    return table


# --------------------------------------------------------------------------- difference curves
def _points(r: Curve) -> list[tuple[int, float]]:
    return list(zip(np.asarray(r.labels).tolist(), np.asarray(r.accuracy, float).tolist(), strict=True))


def paired_difference_curves(runs: Sequence[Curve], baseline: str = "random", confidence: float = CONFIDENCE,
                             n_resamples: int = N_RESAMPLES,
                             random_state: int = RANDOM_STATE) -> pd.DataFrame:
    """Mean paired difference of accuracy from ``baseline`` at each number of labels.

    At each label count x, the differences are A's accuracy minus the baseline's over the seeds
    where both runs were evaluated at x (non-finite values left out); the band is their bootstrap interval (:func:`bootstrap_ci`).

    Returns:
        Columns :data:`CURVE_COLUMNS`: ``group, labels, n_seeds, mean_diff, ci_low, ci_high``
        (accuracy units; the interval is NaN with fewer than 2 seeds), one row per (strategy,
        label count), strategies in order of appearance; empty without baseline runs.
    """
    by = _by_group_seed(runs, [])
    rows = []
    if baseline in by:
        base = {s: dict(_points(r)) for s, r in by[baseline].items()}
        for g, seeds in by.items():
            if g == baseline:
                continue
            at: dict[int, list[float]] = {}
            for s, r in seeds.items():
                if s not in base:
                    continue
                for x, y in _points(r):
                    if x in base[s] and np.isfinite(y - base[s][x]):
                        at.setdefault(int(x), []).append(y - base[s][x])
            for x in sorted(at):
                d = np.asarray(at[x])
                lo, hi = (bootstrap_ci(d, confidence, n_resamples, random_state)[:2] if len(d) >= 2
                          else (float("nan"), float("nan")))
                rows.append({"group": g, "labels": x, "n_seeds": len(d), "mean_diff": float(d.mean()),
                             "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def plot_paired_differences(curves: pd.DataFrame, baseline: str = "random",
                            title: str = "paired difference from the baseline", confidence: float = CONFIDENCE):
    """Figure of the mean paired accuracy difference from ``baseline`` against labels.

    Args:
        curves: output of :func:`paired_difference_curves`.

    Returns:
        A matplotlib Figure (caller saves and closes it): line ``i`` of ``fig.axes[0]`` is the
        ``i``-th strategy's mean difference (the last line is the dashed zero line), with its
        shaded interval where defined (pointwise: one interval per label count, not a band that
        holds for the whole curve at once).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for g in dict.fromkeys(curves.group):
        c = curves[curves.group == g]
        (line,) = ax.plot(c["labels"], c["mean_diff"], marker="o", markersize=3,
                          label=f"{g} - {baseline} (n={int(c.n_seeds.max())})")
        ok = np.isfinite(c["ci_low"].to_numpy())
        if ok.any():
            ax.fill_between(c["labels"][ok], c["ci_low"][ok], c["ci_high"][ok], color=line.get_color(), alpha=0.2,
                            linewidth=0)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlabel("number of labels")
    ax.set_ylabel(f"test accuracy - {baseline} (same seed)")
    ax.set_title(f"{title}\nmean over seeds, {confidence * 100:g}% bootstrap band")
    ax.grid(alpha=0.3)
    if len(curves):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_paired_plot(curves: pd.DataFrame, path, baseline: str = "random",
                     title: str = "paired difference from the baseline"):
    """Write :func:`plot_paired_differences` of ``curves`` as a PNG to ``path``; returns the path."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_paired_differences(curves, baseline, title)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- display
def _fmt(v: float, metric: str) -> str:
    if not np.isfinite(v):
        return "-"
    return f"{v:+.1f}" if metric.startswith("labels_saved") else f"{v:+.4f}"


def display_paired(table: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The comparison table as strings for Markdown and the terminal.

    Columns: ``A, B, metric, seeds, A - B [CI]`` (accuracy to 4 decimals, labels to 1),
    ``verdict, seeds needed`` (the number, ``"no effect observed"`` or ``"-"``), ``note``.
    """
    rows = []
    for _, r in table.iterrows():
        interval = f"{_fmt(r.mean_diff, r.metric)} [{_fmt(r.ci_low, r.metric)}, {_fmt(r.ci_high, r.metric)}]"
        if pd.isna(r.seeds_needed):
            needed = "no effect observed" if "no effect observed" in r.note else "-"
        else:
            needed = str(int(r.seeds_needed))
        rows.append({"A": r.a, "B": r.b, "metric": r.metric, "seeds": str(int(r.n_seeds)),
                     f"A - B [{confidence * 100:g}% CI]": interval, "verdict": r.verdict,
                     "seeds needed": needed, "note": r.note})
    return pd.DataFrame(rows, columns=["A", "B", "metric", "seeds", f"A - B [{confidence * 100:g}% CI]",
                                       "verdict", "seeds needed", "note"])
