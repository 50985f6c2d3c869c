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
- ``paired.csv`` / in ``summary.md``: paired comparisons over seeds (every strategy against the
  baseline, every pair): mean difference in AUBC, final accuracy and labels to each target with a
  95% bootstrap interval, a verdict and the seeds needed (:mod:`alframe.reporting.paired`);
- ``paired_differences.png`` / ``paired_curves.csv``: mean paired accuracy difference from the
  baseline against labels, with a 95% bootstrap band;
- ``curves.csv`` (the plotted data) and ``runs.csv`` (the runs used);
- ``machine_labels.csv`` / in ``summary.md`` (simulations): per strategy and confidence threshold
  t, how many pool samples the last model labels with confidence >= t and how accurately
  (:mod:`alframe.loop.machine_labels`), so a team can pick ``alframe-export --accept-above t`` from evidence.

Conventions. Seeds of different strategies are paired by their ``seed`` tag (same seed = same
initial labelled set in alframe). Standard deviations are sample standard deviations
(``ddof=1``); with one seed they are undefined (NaN, no band). Runs of unequal length
contribute to the mean curve up to their last round; ``n_seeds`` of each point says how many
runs it averages. AUBC and final accuracy are taken per run over its own curve.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from alframe.metrics import aubc
from alframe.reporting import paired as paired_stats
from alframe.reporting.runs import REPORT_EXPERIMENT_SUFFIX, REPORT_TAG, load_runs
from alframe.reporting.tables import DEFAULT_TARGETS, Report, build_report, target_key
from alframe.tracking.plots import plot_budget_curves
from alframe.tracking.store import _client


def _machine_display(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": df.group, "confidence >= t": df.threshold.map(lambda t: f"{t:g}"),
                         "seeds": df.n_seeds, "machine labels": df["count"].map(lambda v: f"{v:.0f}"),
                         "share of pool": df.coverage.map(lambda v: "-" if np.isnan(v) else f"{v:.3f}"),
                         "accuracy": df.accuracy.map(lambda v: "-" if np.isnan(v) else f"{v:.4f}")})






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


def _curve_display(curves: pd.DataFrame, most: int = 10) -> pd.DataFrame:
    """Strategies x budgets (at most ``most``, evenly spread, first and last kept) of
    ``mean [low, high]`` paired differences."""
    labels = np.sort(curves.labels.unique())
    if len(labels) > most:
        labels = labels[np.unique(np.linspace(0, len(labels) - 1, most).round().astype(int))]
    cell = {(r.group, r.labels): f"{r.mean_diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            if np.isfinite(r.ci_low) else f"{r.mean_diff:+.3f}" for r in curves.itertuples()}
    groups = list(dict.fromkeys(curves.group))
    return pd.DataFrame([{"strategy": g, **{str(x): cell.get((g, x), "-") for x in labels}} for g in groups])


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
    if report.paired is not None:
        report.paired.to_csv(out / "paired.csv", index=False)
        files.append(out / "paired.csv")
        md += ["## Paired comparisons", "", "Same seed = same initial labelled set: A - B over the seeds both ran "
               "(labels saved: B's labels to the target minus A's, over the seeds where both reached it), "
               "with a 95% bootstrap interval. Verdict: better / worse when the interval excludes 0 and the paired "
               "t-test agrees (alpha 0.05); seeds needed: for power 0.8 at the observed effect.", "",
               _markdown(paired_stats.display_paired(report.paired)), ""]
    if report.paired_curves is not None:
        fig = paired_stats.plot_paired_differences(report.paired_curves, baseline,
                                                   f"{title}: paired difference from {baseline}")
        fig.savefig(out / "paired_differences.png")
        plt.close(fig)
        report.paired_curves.rename(columns={"group": "strategy"}).to_csv(out / "paired_curves.csv", index=False)
        files += [out / "paired_differences.png", out / "paired_curves.csv"]
        md += [f"## Paired difference from {baseline} by budget", "", f"Test accuracy A - {baseline} at each "
               "number of labels, mean over the seeds both reached it, with a 95% bootstrap interval "
               "(`paired_curves.csv` has every budget).", "", _markdown(_curve_display(report.paired_curves)), ""]
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
    if report.paired_curves is not None:
        md += [f"![paired difference from {baseline}](paired_differences.png)", ""]
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
    from alframe.tracking.run import Tracker
    from alframe.tracking.ui import run_url, ui_base_url

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
    and grouped by strategy (see :mod:`alframe.tracking.ui`)."""
    from alframe.tracking.ui import budget_curves_link

    client = _client(tracking_uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    return (budget_curves_link(client, tracking_uri, exp_id, sweep_id),
            budget_curves_link(client, tracking_uri, exp_id, sweep_id, group_by="strategy"))


def print_report(report: Report, title: str, baseline: str = "random") -> None:
    """Print the summary table (and pairwise matrix) to the terminal with rich."""

    from alframe.progress import console

    # tables lay out to the terminal's width; piped into a file or a log, to one wide enough for them
    # (rich's print(width=) only narrows, so the console is widened while the report prints)
    saved = console.width
    if not console.is_terminal:
        console.width = max(saved, 200)
    try:
        _print_tables(console, report, title, baseline)
    finally:
        console.width = saved


def _print_tables(console, report: Report, title: str, baseline: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for c in ("strategy", "seeds", "labels", "final acc", "AUBC"):
        table.add_column(c, justify="left" if c == "strategy" else "right")
    disp = display_table(report, baseline)
    for _, row in disp.iterrows():
        table.add_row(row["strategy"], row["seeds"], row["labels"], row["final acc"], row["AUBC"])
    console.print(table, soft_wrap=False)
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
    if report.paired is not None:
        pt = Table(title="paired over seeds: A - B with 95% bootstrap interval (labels saved: B's labels minus A's)")
        disp = paired_stats.display_paired(report.paired)
        for c in disp.columns:
            pt.add_column(c, justify="left" if c in ("A", "B", "metric", "verdict", "note") else "right")
        for _, row in disp.iterrows():
            pt.add_row(*[str(v) for v in row.tolist()])
        console.print(pt, soft_wrap=False)
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








