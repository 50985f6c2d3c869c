"""alframe-report on fabricated MLflow runs with known budget curves (values computed by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from alframe import reporting as rp
from alframe.cli import report as report_cli
from alframe.tracking.plots import plot_budget_curves

# labels 20..50; random and entropy with seeds 0 and 1, bald with seed 0 only and shorter.
CURVES = {
    ("random", "0"): ([20, 30, 40, 50], [0.5, 0.6, 0.8, 0.9]),
    ("random", "1"): ([20, 30, 40, 50], [0.5, 0.7, 0.9, 0.95]),
    ("entropy", "0"): ([20, 30, 40, 50], [0.5, 0.8, 0.92, 0.96]),
    ("entropy", "1"): ([20, 30, 40, 50], [0.5, 0.9, 0.9, 0.97]),
    ("bald", "0"): ([20, 30], [0.5, 0.95]),
}


def _log_run(client, exp_id, strategy, seed, labels, acc, sweep="s1", status="FINISHED", extra_tags=None):
    tags = {"strategy": strategy, "seed": seed, "dataset": "digits", "model": "small_cnn", "sweep_id": sweep}
    tags.update(extra_tags or {})
    run = client.create_run(exp_id, tags=tags)
    client.log_batch(run.info.run_id, metrics=[Metric("test_accuracy", a, 1000 + i, x)
                                               for i, (x, a) in enumerate(zip(labels, acc, strict=True))])
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("exp")
    for (strategy, seed), (labels, acc) in CURVES.items():
        _log_run(client, exp, strategy, seed, labels, acc)
    # not part of the report: another sweep, a failed run, an earlier report run
    _log_run(client, exp, "random", "0", [20, 30], [0.1, 0.1], sweep="s0")
    _log_run(client, exp, "entropy", "2", [20, 30], [0.0, 0.0], status="FAILED")
    _log_run(client, exp, "random", "5", [20], [0.0], extra_tags={rp.REPORT_TAG: "true"})
    _log_run(client, exp, "random", "7", [20], [0.3], sweep="s2", status="RUNNING")
    client.create_experiment("empty")
    return uri


def test_load_runs_filters(store):
    notes = []
    runs = rp.load_runs(store, "exp", sweep_id="s1", notes=notes)
    assert sorted((r.group, r.seed) for r in runs) == sorted(CURVES)
    for r in runs:
        labels, acc = CURVES[(r.group, r.seed)]
        np.testing.assert_array_equal(r.labels, labels)
        np.testing.assert_array_equal(r.accuracy, acc)
    assert any("FAILED" in n for n in notes)
    runs = rp.load_runs(store, "exp", tags={"strategy": "random"})  # all sweeps, no report run
    assert sorted(r.seed for r in runs) == ["0", "0", "1", "7"]
    runs = rp.load_runs(store, "exp", tags={"strategy": "random"}, finished_only=True)
    assert sorted(r.seed for r in runs) == ["0", "0", "1"]


def test_curves_summary_and_savings_by_hand(store):
    runs = rp.load_runs(store, "exp", sweep_id="s1")
    rep = rp.build_report(runs, targets=(0.9, 0.95))
    c = rep.curves.set_index(["group", "labels"])
    s2 = np.sqrt(2)
    expected = {  # (mean, std, n) computed by hand; std with ddof=1 = |a - b| / sqrt(2)
        ("random", 20): (0.5, 0.0, 2), ("random", 30): (0.65, 0.1 / s2, 2), ("random", 40): (0.85, 0.1 / s2, 2),
        ("random", 50): (0.925, 0.05 / s2, 2), ("entropy", 30): (0.85, 0.1 / s2, 2),
        ("entropy", 40): (0.91, 0.02 / s2, 2), ("entropy", 50): (0.965, 0.01 / s2, 2),
        ("bald", 30): (0.95, np.nan, 1),
    }
    for key, (mean, std, n) in expected.items():
        assert c.loc[key, "mean"] == pytest.approx(mean)
        assert c.loc[key, "n_seeds"] == n
        if np.isnan(std):
            assert np.isnan(c.loc[key, "std"])
        else:
            assert c.loc[key, "std"] == pytest.approx(std)
    assert len(rep.curves) == 4 + 4 + 2

    t = rep.summary.set_index("group")
    assert t.loc["random", "n_seeds"] == 2 and t.loc["bald", "n_seeds"] == 1
    assert (t.loc["bald", "labels_min"], t.loc["random", "labels_max"]) == (30, 50)
    # AUBC: trapezoids of width 10 over the range 20..50 (30), by hand
    a_r0 = (10 * (0.5 + 0.6) / 2 + 10 * (0.6 + 0.8) / 2 + 10 * (0.8 + 0.9) / 2) / 30  # 0.7
    a_r1 = (10 * (0.5 + 0.7) / 2 + 10 * (0.7 + 0.9) / 2 + 10 * (0.9 + 0.95) / 2) / 30  # 0.775
    a_e0 = (6.5 + 8.6 + 9.4) / 30
    a_e1 = (7.0 + 9.0 + 9.35) / 30
    assert a_r0 == pytest.approx(0.7) and a_r1 == pytest.approx(0.775)
    assert t.loc["random", "aubc_mean"] == pytest.approx((a_r0 + a_r1) / 2)
    assert t.loc["random", "aubc_std"] == pytest.approx(abs(a_r1 - a_r0) / s2)
    assert t.loc["entropy", "aubc_mean"] == pytest.approx((a_e0 + a_e1) / 2)
    assert t.loc["bald", "aubc_mean"] == pytest.approx((0.5 + 0.95) / 2)
    assert np.isnan(t.loc["bald", "aubc_std"])
    assert t.loc["random", "final_acc_mean"] == pytest.approx(0.925)
    assert t.loc["entropy", "final_acc_std"] == pytest.approx(0.01 / s2)

    # labels to 90%: random seeds 50, 40; entropy 40, 30; bald 30
    assert t.loc["random", "reached_90"] == 2
    assert t.loc["random", "labels_90_mean"] == 45
    assert (t.loc["random", "labels_90_q25"], t.loc["random", "labels_90_median"],
            t.loc["random", "labels_90_q75"]) == (40, 45, 50)  # quartiles: observed budgets
    assert t.loc["entropy", "labels_90_mean"] == 35
    # mean curves: random 0.5, .65, .85, .925 -> 50; entropy .5, .85, .91 -> 40; bald -> 30
    assert t.loc["random", "labels_90_meancurve"] == 50
    assert t.loc["entropy", "labels_90_meancurve"] == 40
    assert t.loc["bald", "labels_90_meancurve"] == 30
    assert t.loc["entropy", "savings_90"] == 10 and t.loc["entropy", "savings_90_pct"] == pytest.approx(20.0)
    assert t.loc["bald", "savings_90"] == 20 and t.loc["bald", "savings_90_pct"] == pytest.approx(40.0)
    assert t.loc["random", "savings_90"] == 0

    # 95%: random seed 0 never (inf), seed 1 at 50; the mean curve never -> savings only bounded
    assert t.loc["random", "reached_95"] == 1
    assert np.isnan(t.loc["random", "labels_95_mean"])
    assert np.isinf(t.loc["random", "labels_95_median"])
    assert np.isnan(t.loc["random", "labels_95_meancurve"])
    assert t.loc["entropy", "labels_95_mean"] == 50 and t.loc["entropy", "labels_95_meancurve"] == 50
    assert np.isnan(t.loc["entropy", "savings_95"])
    assert t.loc["entropy", "savings_95_min"] == 0 and t.loc["bald", "savings_95_min"] == 20

    disp = rp.display_table(rep).set_index("strategy")
    assert disp.loc["random", "labels to 95% (seeds)"] == "not reached (1/2 reached)"
    assert disp.loc["random", "labels to 95% (mean curve)"] == "not reached"
    assert disp.loc["entropy", "savings at 90%"] == "+10 (+20%)"
    assert disp.loc["bald", "savings at 95%"] == "> 20 (random not reached by 50 labels)"
    # entropy reaches 95% at 50 labels, random's largest budget: the savings are unknown, not "> +0"
    assert disp.loc["entropy", "savings at 95%"] == "unknown (random not reached by 50 labels)"
    assert disp.loc["random", "labels to 90% (seeds)"] == "mean 45, median 45 [40, 50]"
    assert disp.loc["bald", "final acc"] == "0.9500"
    assert any("bald 30)" in n and "different numbers of labels" in n for n in rep.notes)


def test_pairwise_matrix_by_hand(store):
    runs = rp.load_runs(store, "exp", sweep_id="s1")
    m = rp.pairwise_matrix(runs)
    # initial point (20 labels) left out; entropy vs random over (seed, labels) in {0,1} x {30,40,50}:
    # entropy wins 5 and ties once (seed 1, 40 labels: 0.9 = 0.9) -> 5.5 / 6
    assert m.loc["entropy", "random"] == pytest.approx(5.5 / 6)
    assert m.loc["random", "entropy"] == pytest.approx(0.5 / 6)
    assert m.loc["bald", "random"] == 1.0 and m.loc["bald", "entropy"] == 1.0  # only (seed 0, 30)
    assert m.loc["entropy", "bald"] == 0.0
    assert np.isnan(m.loc["random", "random"])
    # a single seed per strategy: no matrix
    assert rp.pairwise_matrix([r for r in runs if r.seed == "0"]) is None


def test_plot_data_is_the_mean_and_band(store):
    runs = rp.load_runs(store, "exp", sweep_id="s1")
    curves = rp.mean_curves(runs)
    fig = plot_budget_curves(curves)
    ax = fig.axes[0]
    lines = {ln.get_label().split(" ")[0]: ln.get_xydata() for ln in ax.lines}
    np.testing.assert_allclose(lines["random"], [[20, 0.5], [30, 0.65], [40, 0.85], [50, 0.925]])
    np.testing.assert_allclose(lines["bald"], [[20, 0.5], [30, 0.95]])
    # band of random: from mean - std to mean + std at every label count
    band = ax.collections[0].get_paths()[0].vertices
    std = np.array([0.0, 0.1, 0.1, 0.05]) / np.sqrt(2)
    mean = np.array([0.5, 0.65, 0.85, 0.925])
    for x, m, s in zip([20, 30, 40, 50], mean, std, strict=True):
        ys = band[np.isclose(band[:, 0], x), 1]
        assert ys.min() == pytest.approx(m - s) and ys.max() == pytest.approx(m + s)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_cli_writes_files_and_logs_summary_run(store, tmp_path, capsys):
    out = tmp_path / "rep"
    code = report_cli.main(["--tracking-uri", store, "--experiment", "exp", "--sweep-id", "s1", "--out", str(out),
                    "--targets", "0.9", "95"])
    assert code == 0
    for f in ("budget_curves.png", "summary.csv", "summary.md", "curves.csv", "pairwise.csv", "runs.csv"):
        assert (out / f).is_file(), f
    csv = pd.read_csv(out / "summary.csv").set_index("strategy")
    assert csv.loc["entropy", "savings_90"] == 10
    assert len(pd.read_csv(out / "runs.csv")) == 5
    md = (out / "summary.md").read_text()
    assert "| entropy | 2 | 50 |" in md and "Pairwise comparison" in md
    printed = capsys.readouterr().out
    assert "entropy" in printed and "AUBC" in printed
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("exp")
    # the summary run lives in its own experiment: the experiment's chart view shows only curves
    assert not client.search_runs([exp.experiment_id], filter_string="tags.report_sweep_id = 's1'")
    rexp = client.get_experiment_by_name("exp-reports")
    reports = client.search_runs([rexp.experiment_id], filter_string=f"tags.`{rp.REPORT_TAG}` = 'true'")
    new = [r for r in reports if r.data.tags.get("report_sweep_id") == "s1"]
    assert len(new) == 1 and new[0].data.tags["report_experiment"] == "exp"
    # the output links the report run and the sweep's budget curves (a stored view of the experiment)
    assert f"#/experiments/{rexp.experiment_id}/runs/{new[0].info.run_id}/artifacts" in printed
    assert (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?compareRunsMode=CHART"
            "&viewStateShareKey=alframe-curves-sweep-s1") in printed
    assert "viewStateShareKey=alframe-curves-sweep-s1-by-strategy" in printed
    tags = client.get_experiment(exp.experiment_id).tags
    assert "tags.sweep_id = 's1'" in tags["mlflow.sharedViewState.alframe-curves-sweep-s1"]
    names = {a.path for a in client.list_artifacts(new[0].info.run_id, "report")}
    assert "report/budget_curves.png" in names and "report/summary.md" in names
    assert new[0].data.metrics["report/entropy/aubc_mean"] == pytest.approx((24.5 / 30 + 25.35 / 30) / 2)
    # the summary run is not read back as data by the next report
    assert len(rp.load_runs(store, "exp", sweep_id="s1")) == 5


def test_quartiles_are_observed_label_counts():
    assert (rp.quantile_observed([70, 60], 0.25), rp.quantile_observed([70, 60], 0.75)) == (60, 70)
    assert (rp.quantile_observed([30, 10, 20], 0.25), rp.quantile_observed([30, 10, 20], 0.75)) == (10, 30)
    five = [50, 10, 40, 20, 30]
    assert [rp.quantile_observed(five, q) for q in (0, 0.25, 0.5, 0.75, 1)] == [10, 20, 30, 40, 50]
    assert rp.quantile_observed([40, float("inf")], 0.75) == float("inf")
    assert np.isnan(rp.quantile_observed([], 0.5))


def test_single_seed_and_missing_baseline(store):
    runs = rp.load_runs(store, "exp", sweep_id="s1", tags={"seed": "0"})
    rep = rp.build_report(runs, targets=(0.9,), baseline="least_confidence")
    assert rep.pairwise is None
    assert np.isnan(rep.summary["savings_90"]).all()
    assert any("no 'least_confidence' runs" in n for n in rep.notes)
    assert rep.curves["std"].isna().all()


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "no MLflow experiment named 'nope'"),
    (["--experiment", "empty"], "no runs with 'test_accuracy' values in experiment 'empty'"),
    (["--experiment", "exp", "--sweep-id", "zzz"], "tags.sweep_id = 'zzz'"),
])
def test_clear_errors(store, tmp_path, capsys, args, message):
    assert report_cli.main(["--tracking-uri", store, "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "nope" in args:
        assert "'exp'" in err  # lists the experiments that exist


def test_missing_store_is_not_created(tmp_path, capsys):
    db = tmp_path / "none" / "mlflow.db"
    assert report_cli.main(["--tracking-uri", f"sqlite:///{db}", "--experiment", "x"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not db.exists()


def test_machine_label_table_means_final_values_per_strategy_and_threshold():
    from alframe.reporting.runs import RunCurve
    from alframe.reporting.tables import machine_label_table

    def curve(group, seed, metrics):
        return RunCurve(run_id=f"{group}{seed}", group=group, seed=str(seed), labels=np.array([10]),
                        accuracy=np.array([0.5]), final_metrics=metrics)

    runs = [curve("margin", 0, {"machine_labels/t0.9/count": 10.0, "machine_labels/t0.9/coverage": 0.1,
                                "machine_labels/t0.9/accuracy": 0.8, "test_accuracy": 0.5}),
            curve("margin", 1, {"machine_labels/t0.9/count": 30.0, "machine_labels/t0.9/coverage": 0.3,
                                "machine_labels/t0.9/accuracy": 1.0, "machine_labels/t0.99/count": 0.0,
                                "machine_labels/t0.99/coverage": 0.0}),
            curve("random", 0, {"test_accuracy": 0.4})]
    table = machine_label_table(runs)
    assert table[["group", "threshold", "n_seeds"]].values.tolist() == [["margin", 0.9, 2], ["margin", 0.99, 1]]
    row = table.iloc[0]
    assert (row["count"], row["coverage"], row["accuracy"]) == pytest.approx((20.0, 0.2, 0.9))
    assert np.isnan(table.iloc[1]["accuracy"])  # no machine label kept: accuracy undefined
    assert machine_label_table(runs[2:]) is None


def test_a_seed_run_twice_counts_once_with_its_last_run():
    """A rerun (or a test run) of a seed must not weigh twice: the summary, the curves and the
    pairwise matrix use the last run of each (strategy, seed), and a note says so."""
    def run(group, seed, acc, i):
        return rp.RunCurve(run_id=f"{group}{seed}-{i}", group=group, seed=str(seed), labels=np.array([10, 20]),
                           accuracy=np.array(acc, dtype=float))
    runs = [run("random", 0, [0.5, 0.6], 0), run("random", 1, [0.4, 0.7], 0),
            run("random", 0, [0.1, 0.2], 1),  # an earlier, interrupted attempt of seed 0...
            run("random", 0, [0.3, 0.5], 2)]  # ...and the run that counts (the last)
    report = rp.build_report(runs, targets=[0.6])
    row = report.summary.set_index("group").loc["random"]
    assert row.n_seeds == 2
    assert row.final_acc_mean == pytest.approx((0.5 + 0.7) / 2)
    assert report.curves.n_seeds.tolist() == [2, 2]
    assert report.curves["mean"].tolist() == pytest.approx([(0.3 + 0.4) / 2, (0.5 + 0.7) / 2])
    assert "random, seed 0: 3 runs; the report uses the last one" in report.notes


def test_summary_shows_the_paired_difference_at_each_budget(tmp_path):
    """A known shift of +0.1 at every budget over 3 seeds: the by-budget table of summary.md
    shows +0.100 at each of the budgets."""
    def run(group, seed, shift):
        acc = np.array([0.5, 0.6, 0.7]) + 0.01 * seed + shift
        return rp.RunCurve(run_id=f"{group}{seed}", group=group, seed=str(seed), labels=np.array([10, 20, 30]),
                           accuracy=acc)
    runs = [run("random", s, 0.0) for s in range(3)] + [run("margin", s, 0.1) for s in range(3)]
    rp.write_report(rp.build_report(runs, targets=[0.6]), tmp_path, "shift")
    text = (tmp_path / "summary.md").read_text()
    assert "## Paired difference from random by budget" in text
    row = next(line for line in text.splitlines() if line.startswith("| margin | +0.100"))
    assert row.count("+0.100 [+0.100, +0.100]") == 3


def test_printed_into_a_pipe_the_tables_keep_their_rows_whole(capsys):
    """Not a terminal (a log, a pipe): the tables are laid out wide, so a paired row with its
    verdict is one line, not words stacked in 80 columns."""
    def run(group, seed, shift):
        return rp.RunCurve(run_id=f"{group}{seed}", group=group, seed=str(seed), labels=np.array([10, 20, 30]),
                           accuracy=np.array([0.5, 0.6, 0.7]) + shift)
    runs = [run("random", s, 0.0) for s in range(3)] + [run("margin", s, 0.01 * (s - 1)) for s in range(3)]
    rp.print_report(rp.build_report(runs, targets=[0.6]), "pipe")
    lines = capsys.readouterr().out.splitlines()
    assert any("margin" in line and "random" in line and "not distinguishable with 3 seeds" in line for line in lines)
