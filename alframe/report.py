"""Budget-curve reports over the MLflow runs of a sweep: ``alframe-report``.

Reads every run of an MLflow experiment (optionally one sweep, or runs with given tags), takes
the metric history of ``test_accuracy`` (``step`` = number of labels, as the loop logs it),
groups runs by strategy (one run per seed) and writes, to a folder and as artifacts of a
summary run in its own MLflow experiment ``<experiment>-reports`` (so report runs never appear
among the budget curves of the experiment's chart view):

- ``budget_curves.png``: mean test accuracy against labels per strategy, band of +-1 standard
  deviation across seeds;
- ``summary.csv`` / ``summary.md``: per strategy the number of seeds, final accuracy, AUBC
  (Zhan et al. 2021, normalised to [0, 1]), labels needed to reach target accuracies (per seed:
  mean, median and quartiles; on the mean curve) and label savings relative to ``random``;
- ``pairwise.csv`` / in ``summary.md``: pairwise comparison matrix (Lüth et al. 2023): the
  share of (seed, budget) pairs at which the row strategy beats the column strategy;
- ``curves.csv`` (the plotted data) and ``runs.csv`` (the runs used);
- ``machine_labels.csv`` / in ``summary.md`` (simulations): per strategy and confidence threshold
  t, how many pool samples the last model labels with confidence >= t and how accurately
  (:mod:`alframe.machine_labels`), so a team can pick ``alframe-export --accept-above t`` from evidence.

Conventions. Seeds of different strategies are paired by their ``seed`` tag (same seed = same
initial labelled set in alframe). Standard deviations are sample standard deviations
(``ddof=1``); with one seed they are undefined (NaN, no band). Runs of unequal length
contribute to the mean curve up to their last round; ``n_seeds`` of each point says how many
runs it averages. AUBC and final accuracy are taken per run over its own curve.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from alframe import machine_labels
from alframe.metrics import aubc, labels_to_target
from alframe.tracking import default_tracking_uri, sqlite_path

#: tag marking the summary runs written by this module (never read back as data)
REPORT_TAG = "alframe.report"
#: suffix of the MLflow experiment that holds the report runs of an experiment
REPORT_EXPERIMENT_SUFFIX = "-reports"
DEFAULT_TARGETS = (0.90, 0.95)


class ReportError(ValueError):
    """Nothing to report (unknown store or experiment, no matching runs); the message says why."""


@dataclass
class RunCurve:
    """The budget curve of one MLflow run.

    Attributes:
        run_id: MLflow run id.
        group: value of the grouping tag (the strategy name by default).
        seed: the run's ``seed`` tag (``"?"`` if missing).
        labels: ``[R] int`` numbers of labels, increasing.
        accuracy: ``[R] float`` the metric at those label counts.
        tags: all non-system tags of the run.
        status: MLflow run status.
        final_metrics: the latest value of every metric of the run (MLflow's ``run.data.metrics``).
    """

    run_id: str
    group: str
    seed: str
    labels: np.ndarray
    accuracy: np.ndarray
    tags: dict = field(default_factory=dict)
    status: str = "FINISHED"
    final_metrics: dict = field(default_factory=dict)


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
    """

    runs: list[RunCurve]
    curves: pd.DataFrame
    summary: pd.DataFrame
    pairwise: pd.DataFrame | None
    targets: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    machine_labels: pd.DataFrame | None = None


# --------------------------------------------------------------------------- reading MLflow
def _client(tracking_uri: str):
    from mlflow import MlflowClient

    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ReportError(f"no MLflow store at {db} (tracking URI {tracking_uri}): run an experiment first, "
                          "or pass --tracking-uri of an existing store")
    return MlflowClient(tracking_uri=tracking_uri)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def latest_sweep_id(client, experiment_id: str) -> str:
    """The ``sweep_id`` tag of the most recently started run of the experiment that has one.

    Raises:
        ReportError: no run of the experiment carries a sweep id.
    """
    runs = client.search_runs([experiment_id], filter_string="tags.sweep_id != ''",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ReportError("--sweep-id latest: no run of this experiment has a sweep_id tag "
                          "(runs started with `alframe -m ...` have one)")
    return runs[0].data.tags["sweep_id"]


def load_runs(tracking_uri: str, experiment: str, sweep_id: str | None = None,
              tags: Mapping[str, str] | None = None, metric: str = "test_accuracy",
              group_by: str = "strategy", notes: list[str] | None = None,
              finished_only: bool = False) -> list[RunCurve]:
    """Budget curves of the matching runs of ``experiment``.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name.
        sweep_id: keep only runs with this ``sweep_id`` tag (``"latest"``: the newest sweep).
        tags: keep only runs whose tags equal these values.
        metric: per-round metric to read (logged at ``step`` = number of labels).
        group_by: tag that names a curve's group (``strategy``).
        notes: list that receives human-readable notes about skipped runs.
        finished_only: leave out runs that are still running (or waiting for labels).

    Returns:
        One :class:`RunCurve` per run with at least one value of ``metric``; failed/killed runs
        and alframe's own report runs are left out.

    Raises:
        ReportError: the store or experiment does not exist, or no run matches.
    """
    notes = notes if notes is not None else []
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"no MLflow experiment named {experiment!r} in {tracking_uri}; "
                          f"experiments there: {names or 'none'}")
    if sweep_id == "latest":
        sweep_id = latest_sweep_id(client, exp.experiment_id)
        notes.append(f"sweep id: {sweep_id} (latest)")
    filters = []
    if sweep_id:
        filters.append(f"tags.sweep_id = {_quote(sweep_id)}")
    for k, v in (tags or {}).items():
        filters.append(f"tags.`{k}` = {_quote(v)}")
    filter_string = " and ".join(filters)
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token, order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            break
    curves: list[RunCurve] = []
    for run in runs:
        t = run.data.tags
        if t.get(REPORT_TAG) == "true":
            continue
        if run.info.status in ("FAILED", "KILLED") or (finished_only and run.info.status != "FINISHED"):
            notes.append(f"skipped run {run.info.run_id} ({t.get(group_by, '?')}, seed {t.get('seed', '?')}): "
                         f"status {run.info.status}")
            continue
        history = client.get_metric_history(run.info.run_id, metric)
        if not history:
            notes.append(f"skipped run {run.info.run_id}: no {metric!r} values")
            continue
        by_step: dict[int, tuple[int, float]] = {}
        for m in history:  # a resumed run may re-log a step: keep the latest value
            if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                by_step[int(m.step)] = (m.timestamp, float(m.value))
        steps = np.array(sorted(by_step), dtype=np.int64)
        acc = np.array([by_step[s][1] for s in steps], dtype=float)
        group = t.get(group_by) or run.data.params.get(f"{group_by}.name") or "?"
        curves.append(RunCurve(run_id=run.info.run_id, group=group, seed=t.get("seed", "?"), labels=steps,
                               accuracy=acc, tags={k: v for k, v in t.items() if not k.startswith("mlflow.")},
                               status=run.info.status, final_metrics=dict(run.data.metrics)))
    if not curves:
        what = f"experiment {experiment!r}" + (f" with {filter_string}" if filter_string else "")
        raise ReportError(f"no runs with {metric!r} values in {what} ({tracking_uri})")
    return curves


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


def _machine_display(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": df.group, "confidence >= t": df.threshold.map(lambda t: f"{t:g}"),
                         "seeds": df.n_seeds, "machine labels": df["count"].map(lambda v: f"{v:.0f}"),
                         "share of pool": df.coverage.map(lambda v: "-" if np.isnan(v) else f"{v:.3f}"),
                         "accuracy": df.accuracy.map(lambda v: "-" if np.isnan(v) else f"{v:.4f}")})


def build_report(runs: Sequence[RunCurve], targets: Sequence[float] = DEFAULT_TARGETS,
                 baseline: str = "random", notes: list[str] | None = None) -> Report:
    """Compute curves, summary table and pairwise matrix for ``runs`` (see the module doc)."""
    notes = list(notes or [])
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
    return Report(runs=list(runs), curves=curves, summary=summary, pairwise=pairwise_matrix(runs),
                  targets=tuple(targets), notes=notes, machine_labels=machine_label_table(runs))


# --------------------------------------------------------------------------- output
def plot_budget_curves(curves: pd.DataFrame, title: str = "budget curves", ylabel: str = "test accuracy"):
    """Figure of the mean budget curve per group with a +-1 std band (where std is defined).

    Args:
        curves: output of :func:`mean_curves`.

    Returns:
        A matplotlib Figure (caller saves and closes it); line ``i`` of ``fig.axes[0]`` is the
        ``i``-th group's mean curve, and its band is ``fig.axes[0].collections[i]`` when drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for group in dict.fromkeys(curves.group):
        c = curves[curves.group == group]
        n = int(c.n_seeds.max())
        (line,) = ax.plot(c["labels"], c["mean"], marker="o", markersize=3, label=f"{group} (n={n})")
        std = c["std"].to_numpy()
        if np.isfinite(std).any():
            std = np.nan_to_num(std, nan=0.0)
            ax.fill_between(c["labels"], c["mean"] - std, c["mean"] + std, color=line.get_color(), alpha=0.2,
                            linewidth=0)
    ax.set_xlabel("number of labels")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _labels(v: float) -> str:
    if np.isnan(v):
        return "-"
    return "not reached" if np.isinf(v) else f"{v:g}"


def _target_cells(r: pd.Series, k: str, baseline: str) -> tuple[str, str, str]:
    """(per-seed labels, mean-curve labels, savings) as text for target key ``k`` of row ``r``."""
    n, reached = int(r.n_seeds), int(r[f"reached_{k}"])
    median, q25, q75 = r[f"labels_{k}_median"], r[f"labels_{k}_q25"], r[f"labels_{k}_q75"]
    if reached == 0:
        per_seed = "not reached" + (f" (0/{n})" if n > 1 else "")
    elif n == 1:
        per_seed = _labels(median)
    elif np.isinf(median):
        per_seed = f"not reached ({reached}/{n} reached)"
    else:
        per_seed = f"{_labels(median)} [{_labels(q25)}, {_labels(q75)}]"
        per_seed = (f"mean {r[f'labels_{k}_mean']:.4g}, median " + per_seed) if reached == n \
            else per_seed + f" ({reached}/{n} reached)"
    mc = r[f"labels_{k}_meancurve"]
    mean_curve = "not reached" if np.isnan(mc) else f"{mc:g}"
    s, p = r[f"savings_{k}"], r[f"savings_{k}_pct"]
    if r.group == baseline:
        savings = "baseline"
    elif not np.isnan(s):
        savings = f"{s:+g} ({p:+.0f}%)"
    elif not np.isnan(r[f"savings_{k}_min"]):
        # the baseline needs more than its largest budget: savings exceed (that budget - ours)
        bound = float(r[f"savings_{k}_min"])
        until = f"{baseline} not reached by {bound + mc:g} labels"
        savings = f"> {bound:g} ({until})" if bound > 0 else f"unknown ({until})"
    else:
        savings = "-"
    return per_seed, mean_curve, savings


def display_table(report: Report, baseline: str = "random") -> pd.DataFrame:
    """The summary as strings, one row per group and one column set per target (Markdown)."""
    rows = []
    for _, r in report.summary.iterrows():
        row = {"strategy": r.group, "seeds": str(int(r.n_seeds)),
               "labels": f"{r.labels_max}" if r.labels_min == r.labels_max else f"{r.labels_min}-{r.labels_max}",
               "final acc": _pm(r.final_acc_mean, r.final_acc_std), "AUBC": _pm(r.aubc_mean, r.aubc_std)}
        for t in report.targets:
            k = target_key(t)
            cells = _target_cells(r, k, baseline)
            row[f"labels to {k}% (seeds)"], row[f"labels to {k}% (mean curve)"], row[f"savings at {k}%"] = cells
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub Markdown table (no ``tabulate`` dependency)."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for i, row in df.iterrows():
        cells = ([str(i)] if index else []) + [str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: Report, out: Path, title: str, baseline: str = "random") -> list[Path]:
    """Write the plot, CSV and Markdown files of ``report`` into ``out``; returns their paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    fig = plot_budget_curves(report.curves, title=title)
    fig.savefig(out / "budget_curves.png")
    plt.close(fig)
    files.append(out / "budget_curves.png")
    report.curves.rename(columns={"group": "strategy"}).to_csv(out / "curves.csv", index=False)
    report.summary.rename(columns={"group": "strategy"}).to_csv(out / "summary.csv", index=False)
    files += [out / "curves.csv", out / "summary.csv"]
    pd.DataFrame([{"run_id": r.run_id, "strategy": r.group, "seed": r.seed, "status": r.status,
                   "n_points": len(r.labels), "final_labels": int(r.labels[-1]),
                   "final_accuracy": float(r.accuracy[-1]), "aubc": aubc(r.labels, r.accuracy),
                   "sweep_id": r.tags.get("sweep_id", "")} for r in report.runs]).to_csv(out / "runs.csv", index=False)
    files.append(out / "runs.csv")
    md = [f"# {title}", "", f"{len(report.runs)} runs. AUBC: area under the budget curve normalised to [0, 1] "
          "(Zhan et al. 2021). Labels to target per seed: median [25%, 75% quartiles, as observed label counts]; "
          "mean curve: first "
          f"budget at which the mean curve reaches the target; savings: labels saved relative to `{baseline}` "
          "on the mean curves.", "", _markdown(display_table(report, baseline)), ""]
    if report.pairwise is not None:
        report.pairwise.to_csv(out / "pairwise.csv")
        files.append(out / "pairwise.csv")
        md += ["## Pairwise comparison", "", "Share of (seed, budget) pairs at which the row strategy has a "
               "higher test accuracy than the column strategy (ties count 1/2; Lüth et al. 2023).", "",
               _markdown(report.pairwise.map(lambda v: "-" if np.isnan(v) else f"{v:.2f}"), index=True), ""]
    if report.machine_labels is not None:
        report.machine_labels.rename(columns={"group": "strategy"}).to_csv(out / "machine_labels.csv", index=False)
        files.append(out / "machine_labels.csv")
        md += ["## Machine labels", "", "The last model's labels for the rest of the pool, kept where its confidence "
               ">= t: how many, what share of the pool and how many are right (stored labels; mean over seeds). "
               "`alframe-export --accept-above t` keeps exactly these.", "",
               _markdown(_machine_display(report.machine_labels)), ""]
    if report.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    md += ["![budget curves](budget_curves.png)", ""]
    (out / "summary.md").write_text("\n".join(md))
    files.append(out / "summary.md")
    return files


def log_report(tracking_uri: str, experiment: str, files: Sequence[Path], report: Report,
               sweep_id: str | None, tags: Mapping[str, str] | None) -> tuple[str, str]:
    """Log ``files`` as artifacts (and per-strategy summary metrics) of a new summary run in the
    experiment ``<experiment>-reports``.

    The run is tagged ``alframe.report=true`` and, as ``report_experiment`` /
    ``report_sweep_id`` / ``report_filter``, with what it summarises.

    Returns:
        ``(run id, link to the run's artifacts in the MLflow UI)``.
    """
    from alframe.mlflow_ui import run_url, ui_base_url
    from alframe.tracking import Tracker

    run_tags = {REPORT_TAG: "true", "report_experiment": experiment, "report_sweep_id": sweep_id or "",
                "report_filter": ",".join(f"{k}={v}" for k, v in (tags or {}).items())}
    tracker = Tracker(tracking_uri, experiment + REPORT_EXPERIMENT_SUFFIX, run_name=f"report-{sweep_id or 'all'}",
                      tags=run_tags)
    metrics = {}
    for _, r in report.summary.iterrows():
        metrics[f"report/{r.group}/aubc_mean"] = r.aubc_mean
        metrics[f"report/{r.group}/final_acc_mean"] = r.final_acc_mean
    tracker.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    for f in files:
        tracker.log_artifact(f, "report")
    tracker.finish("FINISHED")
    return tracker.run_id, run_url(ui_base_url(tracking_uri), tracker.experiment_id, tracker.run_id, "artifacts")


def curves_links(tracking_uri: str, experiment: str, sweep_id: str | None) -> tuple[str, str]:
    """MLflow UI links to the budget curves of ``experiment`` (or one sweep): one line per run,
    and grouped by strategy (see :mod:`alframe.mlflow_ui`)."""
    from alframe.mlflow_ui import budget_curves_link

    client = _client(tracking_uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    return (budget_curves_link(client, tracking_uri, exp_id, sweep_id),
            budget_curves_link(client, tracking_uri, exp_id, sweep_id, group_by="strategy"))


def print_report(report: Report, title: str, baseline: str = "random") -> None:
    """Print the summary table (and pairwise matrix) to the terminal with rich."""
    from rich.table import Table

    from alframe.progress import console

    table = Table(title=title)
    for c in ("strategy", "seeds", "labels", "final acc", "AUBC"):
        table.add_column(c, justify="left" if c == "strategy" else "right")
    disp = display_table(report, baseline)
    for _, row in disp.iterrows():
        table.add_row(row["strategy"], row["seeds"], row["labels"], row["final acc"], row["AUBC"])
    console.print(table, soft_wrap=False)  # tables lay out to the terminal width
    targets = Table(title=f"labels to reach a test accuracy (savings vs {baseline}, on the mean curves)")
    for c in ("strategy", "target", "per seed: median [q25, q75]", "mean curve", "savings"):
        targets.add_column(c, justify="left" if c == "strategy" else "right")
    for _, r in report.summary.iterrows():
        for t in report.targets:
            k = target_key(t)
            targets.add_row(r.group, f"{k}%", *_target_cells(r, k, baseline))
    console.print(targets, soft_wrap=False)
    if report.pairwise is not None:
        pw = Table(title="pairwise: share of (seed, budget) pairs where row beats column")
        pw.add_column("")
        for c in report.pairwise.columns:
            pw.add_column(c, justify="right")
        for name, row in report.pairwise.iterrows():
            pw.add_row(name, *["-" if np.isnan(v) else f"{v:.2f}" for v in row.tolist()])
        console.print(pw, soft_wrap=False)
    if report.machine_labels is not None:
        ml = Table(title="machine labels of the last model on the rest of the pool (mean over seeds)")
        disp = _machine_display(report.machine_labels)
        for c in disp.columns:
            ml.add_column(c, justify="left" if c == "strategy" else "right")
        for _, row in disp.iterrows():
            ml.add_row(*[str(v) for v in row.tolist()])
        console.print(ml)
    for n in report.notes:
        console.print(f"[yellow]note:[/yellow] {n}")


def make_report(tracking_uri: str, experiment: str, sweep_id: str | None = None,
                tags: Mapping[str, str] | None = None, out: str | Path | None = None,
                targets: Sequence[float] = DEFAULT_TARGETS, baseline: str = "random",
                metric: str = "test_accuracy", log_to_mlflow: bool = True, show: bool = True,
                finished_only: bool = False) -> tuple[Report, Path]:
    """Read the runs, compute the report, write it to ``out`` and log it to MLflow.

    Args:
        out: output folder (default ``outputs/reports/<experiment>[-<sweep id>]-<time>``).

    Returns:
        ``(report, out folder)``.

    Raises:
        ReportError: see :func:`load_runs`.
    """
    notes: list[str] = []
    runs = load_runs(tracking_uri, experiment, sweep_id, tags, metric=metric, notes=notes,
                     finished_only=finished_only)
    if sweep_id == "latest":
        sweep_id = runs[0].tags.get("sweep_id")
    report = build_report(runs, targets, baseline, notes)
    title = f"{experiment}" + (f" / sweep {sweep_id}" if sweep_id else "") + \
        ("".join(f" / {k}={v}" for k, v in (tags or {}).items()))
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("outputs") / "reports" / (f"{experiment}-{sweep_id}-{stamp}" if sweep_id else f"{experiment}-{stamp}")
    out = Path(out)
    files = write_report(report, out, title, baseline)
    links: list[tuple[str, str]] = []
    if log_to_mlflow:
        run_id, run_link = log_report(tracking_uri, experiment, files, report, sweep_id, tags)
        per_run, grouped = curves_links(tracking_uri, experiment, sweep_id)
        links = [("Budget curves, one line per run:", per_run),
                 ("Grouped by strategy (mean, min-max band):", grouped),
                 (f"Report run {run_id} (experiment '{experiment}{REPORT_EXPERIMENT_SUFFIX}'):", run_link)]
    if show:
        print_report(report, title, baseline)
        from alframe.progress import console

        console.print(f"Report written to {out}", soft_wrap=True)
        for what, url in links:
            console.print(f"{what} {url}", soft_wrap=True)
    return report, out


def _parse_tag(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--tag {text!r}: expected KEY=VALUE, e.g. --tag dataset=mnist")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _parse_target(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--targets {text!r}: expected accuracies in (0, 1]") from None
    if t > 1.0 and t <= 100.0:  # allow percent
        t /= 100.0
    if not 0.0 < t <= 1.0:
        raise argparse.ArgumentTypeError(f"--targets {text!r}: expected accuracies in (0, 1] (or percent)")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    """``alframe-report`` entry point; exit code 2 with a one-line message when there is nothing
    to report."""
    p = argparse.ArgumentParser(prog="alframe-report", description="Budget-curve report over the MLflow runs "
                                "of an alframe experiment or sweep.")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///outputs/mlflow.db under the current folder)")
    p.add_argument("--experiment", default="alframe", help="MLflow experiment name (default: alframe)")
    p.add_argument("--sweep-id", default=None, help="only runs of this sweep (tag sweep_id); 'latest' = newest")
    p.add_argument("--tag", action="append", type=_parse_tag, default=[], metavar="KEY=VALUE",
                   help="only runs with this tag value (repeatable), e.g. --tag dataset=mnist")
    p.add_argument("--out", default=None, help="output folder (default: outputs/reports/<experiment>-...)")
    p.add_argument("--targets", nargs="+", type=_parse_target, default=list(DEFAULT_TARGETS),
                   help="target accuracies for the labels-to-target columns (default: 0.90 0.95)")
    p.add_argument("--baseline", default="random", help="strategy the label savings are relative to")
    p.add_argument("--metric", default="test_accuracy", help="per-round metric (default: test_accuracy)")
    p.add_argument("--finished-only", action="store_true",
                   help="leave out runs still running or waiting for labels (partial curves)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report as an MLflow run")
    args = p.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri("outputs")
    try:
        make_report(uri, args.experiment, args.sweep_id, dict(args.tag), args.out, tuple(args.targets),
                    args.baseline, args.metric, log_to_mlflow=not args.no_mlflow,
                    finished_only=args.finished_only)
    except ReportError as e:
        print(f"alframe-report: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
