"""Paired comparisons (alframe.reporting.paired) on constructed curves with known answers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alframe.reporting import paired as pc

LABELS = np.arange(20, 220, 20)  # 10 rounds, 20..200 labels


@dataclass
class Curve:
    group: str
    seed: str
    labels: np.ndarray
    accuracy: np.ndarray


def _base(seed: int) -> np.ndarray:
    """A rising budget curve (0.5 -> ~0.9) with a per-seed offset: the seed's initial set."""
    return 0.5 + 0.4 * (1 - np.exp(-(LABELS - 20) / 60)) + 0.02 * np.random.default_rng(100 + seed).normal()


def _shifted(shift: float, noise: float, seeds=range(10), gen_seed: int = 0, group_a="a", group_b="b"):
    """B = the seed's base curve; A = B + shift + N(0, noise) per point (independent per seed)."""
    g = np.random.default_rng(gen_seed)
    runs = []
    for s in seeds:
        b = _base(s)
        runs.append(Curve(group_b, str(s), LABELS, b))
        runs.append(Curve(group_a, str(s), LABELS, b + shift + noise * g.normal(size=len(LABELS))))
    return runs


def _row(table: pd.DataFrame, metric: str, a="a", b="b") -> pd.Series:
    rows = table[(table.a == a) & (table.b == b) & (table.metric == metric)]
    assert len(rows) == 1, (a, b, metric)
    return rows.iloc[0]


def test_known_shift_is_better_and_interval_contains_it():
    table = pc.paired_table(_shifted(0.05, 0.005), baseline="b", targets=())
    assert list(table.columns[:9]) == ["a", "b", "metric", "n_seeds", "mean_diff", "ci_low", "ci_high",
                                       "verdict", "seeds_needed"]
    for metric in ("aubc", "final_acc"):
        r = _row(table, metric)
        assert r.n_seeds == 10 and r.verdict == "better"
        assert r.ci_low < 0.05 < r.ci_high and r.ci_low > 0
        assert r.mean_diff == pytest.approx(0.05, abs=0.005)
        assert pd.isna(r.seeds_needed) and r.ci_method == "BCa"


def test_negative_shift_is_worse():
    r = _row(pc.paired_table(_shifted(-0.03, 0.005), baseline="b", targets=()), "final_acc")
    assert r.verdict == "worse" and r.ci_high < 0 and r.ci_low < -0.03 < r.ci_high


def test_no_shift_is_not_distinguishable_and_says_how_many_seeds():
    # A and B: the same distribution with independent noise (fixed generator)
    runs = []
    g = np.random.default_rng(7)
    for s in range(10):
        runs.append(Curve("b", str(s), LABELS, _base(s) + 0.02 * g.normal(size=len(LABELS))))
        runs.append(Curve("a", str(s), LABELS, _base(s) + 0.02 * g.normal(size=len(LABELS))))
    table = pc.paired_table(runs, baseline="b", targets=())
    for metric in ("aubc", "final_acc"):
        r = _row(table, metric)
        assert r.verdict == "not distinguishable with 10 seeds"
        assert r.ci_low < 0 < r.ci_high
        diffs = np.array([runs[2 * s + 1].accuracy[-1] - runs[2 * s].accuracy[-1] for s in range(10)])
        if metric == "final_acc":
            assert r.mean_diff == pytest.approx(diffs.mean())
            d = diffs.mean() / diffs.std(ddof=1)
            assert r.seeds_needed == pc.seeds_needed(d) and r.seeds_needed > 10
            assert f"d = {d:.2g}" in r.note


def test_unpaired_seeds_use_only_the_common_ones():
    a = [Curve("a", str(s), LABELS, _base(s) + 0.01 * s) for s in range(0, 5)]
    b = [Curve("b", str(s), LABELS, _base(s)) for s in range(2, 7)]
    r = _row(pc.paired_table(a + b, baseline="b", targets=()), "final_acc")
    assert r.n_seeds == 3
    assert r.mean_diff == pytest.approx(np.mean([0.02, 0.03, 0.04]))
    assert "4 seed(s) run by only one of the two left out" in r.note
    v = pc.paired_values({c.seed: c for c in a}, {c.seed: c for c in b})
    assert v["seeds"] == ["2", "3", "4"]


def test_seeds_needed_matches_the_standard_power_table():
    def power(d, n, alpha=0.05):  # two-sided paired t-test, straight from scipy's noncentral t
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        return stats.nct.sf(crit, n - 1, d * np.sqrt(n)) + stats.nct.cdf(-crit, n - 1, d * np.sqrt(n))

    assert pc.seeds_needed(0.5) == 34  # G*Power / Cohen: d = 0.5, power 0.8, alpha 0.05 two-sided
    assert power(0.5, 33) < 0.8 <= power(0.5, 34)
    assert pc.seeds_needed(-0.5) == 34
    assert pc.seeds_needed(0.2) == 199 and pc.seeds_needed(1.0) == 10 and pc.seeds_needed(5.0) == 3
    for d in (0.05, 0.3, 0.8, 1.7):
        n = pc.seeds_needed(d)
        assert power(d, n) >= 0.8 and (n == 2 or power(d, n - 1) < 0.8)
    assert pc.seeds_needed(0.5, power=0.9) == 44
    with pytest.raises(ValueError, match="effect_size 0"):
        pc.seeds_needed(0.0)
    with pytest.raises(ValueError, match="power 1.5"):
        pc.seeds_needed(0.5, power=1.5)


def test_same_inputs_give_the_same_interval():
    diffs = np.random.default_rng(3).normal(0.01, 0.02, size=8)
    assert pc.bootstrap_ci(diffs) == pc.bootstrap_ci(diffs.copy())
    runs = _shifted(0.01, 0.02, gen_seed=5)
    pd.testing.assert_frame_equal(pc.paired_table(runs, baseline="b"), pc.paired_table(runs, baseline="b"))
    # an interval does not depend on which other comparisons are made
    extra = runs + [Curve("c", str(s), LABELS, _base(s)) for s in range(10)]
    t1 = pc.paired_table(runs, baseline="b", targets=())
    t2 = pc.paired_table(extra, baseline="b", targets=())
    pd.testing.assert_frame_equal(t1, t2[(t2.a == "a") & (t2.b == "b")].reset_index(drop=True))


def test_equal_differences_fall_back_to_percentile():
    low, high, method = pc.bootstrap_ci([0.02] * 6)
    assert method == "percentile" and low == pytest.approx(0.02) and high == pytest.approx(0.02)
    r = pc.compare([0.0] * 6)
    assert r["verdict"] == "not distinguishable with 6 seeds" and r["ci_method"] == "percentile"
    assert r["seeds_needed"] is None and "no effect observed" in r["note"]


def test_equal_nonzero_differences_use_the_sign_test():
    # labels saved are multiples of the batch: 2 seeds that both save 10 labels prove little
    two = pc.compare([10.0, 10.0])
    assert (two["ci_low"], two["ci_high"]) == (10.0, 10.0) and two["p_value"] == pytest.approx(0.5)
    assert two["verdict"] == "not distinguishable with 2 seeds" and two["seeds_needed"] == 6
    assert "sign test" in two["note"]
    assert pc.compare([-20.0] * 5)["verdict"] == "not distinguishable with 5 seeds"  # p = 0.0625
    six = pc.compare([-20.0] * 6)
    assert six["verdict"] == "worse" and six["p_value"] == pytest.approx(2 * 0.5**6)


def test_no_effect_observed_and_one_seed():
    r = pc.compare([0.1, -0.1, 0.2, -0.2])
    assert r["mean_diff"] == 0 and r["seeds_needed"] is None and r["note"] == "no effect observed"
    one = pc.compare([0.3])
    assert one["verdict"] == "not distinguishable with 1 seed" and np.isnan(one["ci_low"])
    assert pc.compare([])["verdict"] == "no paired seeds"


def test_t_test_overrules_a_bootstrap_interval_from_few_seeds():
    diffs = [0.01, 0.02, 0.3]  # all positive: every resampled mean is positive, but t-test p ~ 0.37
    r = pc.compare(diffs)
    assert r["ci_low"] > 0 and r["p_value"] == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)
    assert r["verdict"] == "not distinguishable with 3 seeds" and "paired t-test does not" in r["note"]
    assert r["seeds_needed"] > 3
    assert pc.compare(diffs, require_t_test=False)["verdict"] == "better"


def _step(seed: str, group: str, reach_at: float | None, labels=LABELS) -> Curve:
    """0.5 until ``reach_at`` labels, then 0.95 (never when None)."""
    acc = np.where(labels >= (reach_at if reach_at is not None else np.inf), 0.95, 0.5)
    return Curve(group, seed, labels, acc.astype(float))


def test_labels_saved_counts_seeds_that_never_reach_the_target():
    # baseline reaches 90% at: 120, 140, 100, 160, 180, 200, never, never; A: 80, 80, 100, 100, 120, 140, 60, never
    base = [120, 140, 100, 160, 180, 200, None, None]
    ours = [80, 80, 100, 100, 120, 140, 60, None]
    runs = [_step(str(s), "random", x) for s, x in enumerate(base)]
    runs += [_step(str(s), "margin", x) for s, x in enumerate(ours)]
    table = pc.paired_table(runs, targets=(0.9,))
    r = _row(table, "labels_saved_90", "margin", "random")
    saved = np.array([40, 60, 0, 60, 60, 60], dtype=float)
    assert r.n_seeds == 6 and r.mean_diff == pytest.approx(saved.mean())
    assert r.ci_low <= saved.mean() <= r.ci_high
    assert r.verdict == "better"
    assert "compared the 6 of 8 paired seeds where both reached 90%" in r.note
    assert "only margin reached it in 1" in r.note and "neither in 1" in r.note
    assert r.p_value == pytest.approx(stats.ttest_1samp(saved, 0).pvalue)


def test_pairs_are_every_strategy_against_the_baseline_then_every_other_pair():
    assert pc.comparison_pairs(["random", "a", "b", "c"]) == [("a", "random"), ("b", "random"), ("c", "random"),
                                                              ("a", "b"), ("a", "c"), ("b", "c")]
    assert pc.comparison_pairs(["a", "b"]) == [("a", "b")]  # no baseline present
    runs = _shifted(0.05, 0.005, group_b="random") + [Curve("c", str(s), LABELS, _base(s)) for s in range(10)]
    table = pc.paired_table(runs, targets=(0.9, 0.95))
    assert len(table) == 3 * 4  # (a, random), (c, random), (a, c) x aubc, final_acc, two targets
    assert set(table.metric) == {"aubc", "final_acc", "labels_saved_90", "labels_saved_95"}
    assert _row(table, "final_acc", "a", "c").verdict == "better"
    assert pc.paired_table([c for c in runs if c.group == "a"]).empty


def test_runs_of_different_length_are_cut_to_the_common_budget():
    a = [Curve("a", str(s), LABELS[:5], _base(s)[:5] + 0.01) for s in range(4)]  # ends at 100 labels
    b = [Curve("b", str(s), LABELS, _base(s)) for s in range(4)]  # ends at 200 labels
    r = _row(pc.paired_table(a + b, baseline="b", targets=()), "final_acc")
    assert r.mean_diff == pytest.approx(0.01)  # at 100 labels, not A's 100 against B's 200
    assert "4 pair(s) cut to the smaller last budget" in r.note


def test_duplicate_and_seedless_runs():
    runs = _shifted(0.05, 0.005, seeds=range(4), group_b="random")
    runs.append(Curve("a", "0", LABELS, _base(0) - 0.5))  # a later rerun of seed 0: this one is used
    runs.append(Curve("a", "?", LABELS, _base(0)))
    notes = []
    r = _row(pc.paired_table(runs, targets=(), notes=notes), "final_acc", "a", "random")
    assert r.n_seeds == 4 and r.mean_diff < 0
    assert any("a, seed 0: 2 runs" in n for n in notes) and any("without a seed tag" in n for n in notes)


def test_difference_curves_and_plot_file(tmp_path):
    runs = _shifted(0.05, 0.0, seeds=range(5), group_b="random")
    runs += [Curve("c", str(s), LABELS[:3], _base(s)[:3] - 0.1) for s in range(5)]
    curves = pc.paired_difference_curves(runs)
    a = curves[curves.group == "a"]
    np.testing.assert_allclose(a["labels"], LABELS)
    np.testing.assert_allclose(a["mean_diff"], 0.05)
    assert (a.n_seeds == 5).all()
    c = curves[curves.group == "c"]
    np.testing.assert_allclose(c["mean_diff"], -0.1)
    assert list(c["labels"]) == list(LABELS[:3])
    path = pc.save_paired_plot(curves, tmp_path / "sub" / "paired_differences.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = pc.plot_paired_differences(curves)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xydata()[:, 1], 0.05)
    assert ax.lines[0].get_label().startswith("a - random (n=5)")
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert pc.paired_difference_curves(runs, baseline="missing").empty


def test_display_table_says_no_effect_and_seeds_needed():
    table = pd.DataFrame([
        {"a": "x", "b": "y", "metric": "aubc", "n_seeds": 4, "mean_diff": 0.0, "ci_low": -0.1, "ci_high": 0.1,
         "verdict": "not distinguishable with 4 seeds", "seeds_needed": pd.NA, "p_value": 1.0,
         "ci_method": "BCa", "note": "no effect observed"},
        {"a": "x", "b": "y", "metric": "labels_saved_90", "n_seeds": 4, "mean_diff": 12.5, "ci_low": -3.0,
         "ci_high": 30.0, "verdict": "not distinguishable with 4 seeds", "seeds_needed": 17, "p_value": 0.2,
         "ci_method": "BCa", "note": ""}], columns=pc.COLUMNS)
    disp = pc.display_paired(table)
    assert disp["seeds needed"].tolist() == ["no effect observed", "17"]
    assert disp["A - B [95% CI]"].tolist() == ["+0.0000 [-0.1000, +0.1000]", "+12.5 [-3.0, +30.0]"]


@pytest.mark.parametrize("call, message", [
    (lambda: pc.bootstrap_ci([[0.1, 0.2]]), "expected a 1-D array"),
    (lambda: pc.bootstrap_ci([0.1]), "at least 2 seeds"),
    (lambda: pc.bootstrap_ci([0.1, float("nan")]), "only finite differences"),
    (lambda: pc.bootstrap_ci([0.1, 0.2], confidence=95), "confidence 95: expected a level in"),
    (lambda: pc.bootstrap_ci([0.1, 0.2], n_resamples=0), "n_resamples 0"),
    (lambda: pc.paired_t_power(0.5, 1), "n 1: a paired t-test needs at least 2"),
    (lambda: pc.seeds_needed(0.5, alpha=0), "alpha 0: expected"),
    (lambda: pc.paired_table([], targets=(1.5,)), r"target 1.5: expected accuracies in \(0, 1\]"),
])
def test_bad_input_raises_one_line_value_error(call, message):
    with pytest.raises(ValueError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


def test_pairs_without_common_budget_or_with_nan_are_left_out():
    runs = _shifted(0.05, 0.005, seeds=range(5), group_b="random")  # [random 0, a 0, random 1, a 1, ...]
    runs[0].accuracy = runs[0].accuracy.copy()
    runs[0].accuracy[3] = np.nan  # random, seed 0: a NaN accuracy
    runs[2] = Curve("random", "1", LABELS[:2], runs[2].accuracy[:2])  # random, seed 1: ends at 40 labels
    runs[3] = Curve("a", "1", LABELS[5:], runs[3].accuracy[5:])  # a, seed 1: starts at 120 labels
    r = _row(pc.paired_table(runs, targets=(0.9,)), "aubc", "a", "random")
    assert r.n_seeds == 3 and r.mean_diff == pytest.approx(0.05, abs=0.005)
    assert "2 paired seed(s) without a common budget or with non-finite accuracies left out" in r.note
    curves = pc.paired_difference_curves(runs).set_index("labels")
    assert curves.loc[80, "n_seeds"] == 3 and curves.loc[100, "n_seeds"] == 4  # NaN at 80 for seed 0



def test_report_writes_and_prints_the_paired_table(tmp_path, capsys):
    from alframe import reporting as rp  # the wiring into alframe-report

    def run(group, seed, acc):
        return rp.RunCurve(run_id=f"{group}{seed}", group=group, seed=str(seed), labels=LABELS, accuracy=acc)

    g = np.random.default_rng(11)
    runs = []
    for s in range(10):
        base = _base(s)
        runs += [run("random", s, base), run("entropy", s, base + 0.04 + 0.004 * g.normal(size=len(LABELS))),
                 run("margin", s, base + 0.02 * g.normal(size=len(LABELS)))]
    rep = rp.build_report(runs, targets=(0.85,))
    files = rp.write_report(rep, tmp_path, "paired test")
    for f in ("paired.csv", "paired_differences.png", "paired_curves.csv", "budget_curves.png", "summary.md"):
        assert tmp_path / f in files and (tmp_path / f).is_file(), f
    table = pd.read_csv(tmp_path / "paired.csv")
    assert list(table.columns[:9]) == ["a", "b", "metric", "n_seeds", "mean_diff", "ci_low", "ci_high", "verdict",
                                       "seeds_needed"]
    assert _row(table, "aubc", "entropy", "random").verdict == "better"
    assert _row(table, "final_acc", "entropy", "margin").verdict == "better"
    assert _row(table, "final_acc", "margin", "random").verdict == "not distinguishable with 10 seeds"
    assert set(table.metric) == {"aubc", "final_acc", "labels_saved_85"}
    curves = pd.read_csv(tmp_path / "paired_curves.csv")
    assert set(curves.strategy) == {"entropy", "margin"}
    md = (tmp_path / "summary.md").read_text()
    assert "## Paired comparisons" in md and "| entropy | random | aubc | 10 |" in md
    assert "![paired difference from random](paired_differences.png)" in md
    rp.print_report(rep, "paired test")
    printed = capsys.readouterr().out
    assert "paired over seeds" in printed and "better" in printed
