"""MLflow UI links and run bookkeeping: the stored chart view, the printed link, unique run names,
the ``alframe.status`` tag, the job prefix of parallel sweeps and ``python -m alframe.tracking.ui``.
The browser check of the link is tests/test_mlflow_ui_browser.py."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from alframe import progress
from alframe.cli import ui as ui_cli
from alframe.tracking import ui
from alframe.tracking.run import STATUS_TAG, Tracker


def test_ui_base_url_for_local_stores_and_servers():
    assert ui.ui_base_url("sqlite:////home/me/alframe/outputs/mlflow.db") == "http://127.0.0.1:5000"
    assert ui.ui_base_url("file:///tmp/mlruns") == "http://127.0.0.1:5000"
    assert ui.ui_base_url("http://tracking.lab:5000/") == "http://tracking.lab:5000"  # a server serves its UI
    assert ui.ui_base_url("sqlite:///x.db", ui_url="http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_chart_view_url_and_filters():
    assert ui.chart_view_url("http://h:5000", "7", "alframe-curves") == \
        "http://h:5000/#/experiments/7/runs?compareRunsMode=CHART&viewStateShareKey=alframe-curves"
    assert ui.runs_filter() == "attributes.status != 'FAILED' and attributes.status != 'KILLED'"
    assert ui.runs_filter("2026-11-29_12-00-00-1").endswith(" and tags.sweep_id = '2026-11-29_12-00-00-1'")
    plain = ui.chart_view_url("http://h:5000", "7", search_filter="tags.seed = '0'")
    assert plain.endswith("runs?compareRunsMode=CHART&searchFilter=tags.seed%20%3D%20%270%27")
    with pytest.raises(ValueError, match="not both"):  # the UI would ignore the view
        ui.chart_view_url("http://h:5000", "7", "k", "tags.seed = '0'")
    assert ui.view_key("s1", "strategy") == "alframe-curves-sweep-s1-by-strategy"
    with pytest.raises(ValueError, match="sweep id 'a b'"):
        ui.view_key("a b")


def test_chart_view_state_puts_the_budget_curve_first():
    state = ui.chart_view_state(ui.runs_filter("s1"), group_by="strategy")
    first = state["compareRunSections"][0]
    (card,) = state["compareRunCharts"]
    assert card["metricSectionId"] == first["uuid"] and first["name"] == "Budget curve"
    assert (card["type"], card["metricKey"], card["xAxisKey"]) == ("LINE", "test_accuracy", "step")
    assert state["isAccordionReordered"] is True  # MLflow appends its generated sections after ours
    assert state["runsHiddenMode"] == "SHOW_ALL"  # not MLflow's default "first 10 runs"
    assert state["groupBy"] == {"aggregateFunction": "average",
                                "groupByKeys": [{"mode": "tag", "groupByData": "strategy"}]}
    assert "tags.`alframe.status`" in state["selectedColumns"]
    assert ui.chart_view_state("")["groupBy"] is None


def test_tracker_names_status_tags_and_stored_view(tmp_path, store):
    uri = f"sqlite:///{store}"
    a = Tracker(uri, "exp", run_name="entropy-small_cnn-digits-seed0", tags={"strategy": "entropy"})
    b = Tracker(uri, "exp", run_name="entropy-small_cnn-digits-seed0", tags={"strategy": "entropy"})
    client = MlflowClient(uri)
    na, nb = (client.get_run(t.run_id).info.run_name for t in (a, b))
    assert na != nb and na.startswith("entropy-small_cnn-digits-seed0-") and len(na) == len(nb) == 37
    assert client.get_run(a.run_id).data.tags[STATUS_TAG] == "running"
    a.finish("FAILED")
    b.wait_for_labels()
    ra, rb = client.get_run(a.run_id), client.get_run(b.run_id)
    assert (ra.info.status, ra.data.tags[STATUS_TAG]) == ("FAILED", "failed")
    assert (rb.info.status, rb.data.tags[STATUS_TAG]) == ("RUNNING", "waiting_for_labels")
    resumed = Tracker(uri, "exp", run_id=b.run_id)
    assert client.get_run(resumed.run_id).data.tags[STATUS_TAG] == "running"

    link = b.budget_curves_url("s9")
    assert link == (f"http://127.0.0.1:5000/#/experiments/{b.experiment_id}/runs?compareRunsMode=CHART"
                    "&viewStateShareKey=alframe-curves-sweep-s9")
    stored = json.loads(client.get_experiment(b.experiment_id).tags["mlflow.sharedViewState.alframe-curves-sweep-s9"])
    assert stored == ui.chart_view_state(ui.runs_filter("s9"))
    # the stored filter is a valid MLflow filter: it keeps the waiting run of the sweep, drops the failed one
    client.set_tag(a.run_id, "sweep_id", "s9")
    client.set_tag(b.run_id, "sweep_id", "s9")
    assert [r.info.run_id for r in client.search_runs([b.experiment_id], stored["searchFilter"])] == [b.run_id]


def test_run_ends_with_the_link_to_its_curves(run, tmp_path, capsys):
    res = run("trainer.max_epochs=1", "loop.rounds=1", "mlflow.experiment_name=linked")
    out = capsys.readouterr().out
    client = MlflowClient(res.tracking_uri)
    exp = client.get_experiment_by_name("linked")
    line = next(ln for ln in out.splitlines() if ln.startswith("MLflow UI:"))
    assert line.split()[-1] == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                                "?compareRunsMode=CHART&viewStateShareKey=alframe-curves")
    stored = json.loads(exp.tags["mlflow.sharedViewState.alframe-curves"])
    assert stored["compareRunCharts"][0]["metricKey"] == "test_accuracy"
    r = client.get_run(res.run_id)
    assert r.info.run_name.startswith("entropy-small_cnn-digits-seed0-")
    assert r.data.tags[STATUS_TAG] == "finished" and "alframe.smoke" not in r.data.tags


def test_job_prefix_on_every_line():
    with progress.console.capture() as cap:
        try:
            progress.set_job_prefix("[job 3 margin seed1] ")
            table = progress.RoundTable("alframe: margin on digits")
            table.add({"round": 0, "n_labelled": 20, "test_accuracy": 0.5})
            progress.console.print("two\nlines [bold]marked[/bold]")
        finally:
            progress.set_job_prefix("")
        progress.console.print("after")
    lines = cap.get().splitlines()
    assert all(ln.startswith("[job 3 margin seed1] ") for ln in lines[:-1]) and len(lines) == 6
    assert lines[2].split()[4:6] == ["0", "20"] and lines[4] == "[job 3 margin seed1] lines marked"
    assert lines[-1] == "after"


def test_long_lines_are_not_wrapped_mid_sentence():
    text = "Resuming outputs/runs/2026-11-29/12-00-00-000001 at round 3 (50 labels, MLflow run " + "a" * 32 + ")"
    with progress.console.capture() as cap:
        progress.console.print(text)
    assert cap.get() == text + "\n"


def test_module_prints_links_and_rejects_unknown_experiment(tmp_path, store, capsys):
    uri = f"sqlite:///{store}"
    t = Tracker(uri, "shown", run_name="random-x", tags={"sweep_id": "s7"})
    assert ui_cli.main(["--tracking-uri", uri, "--experiment", "shown", "--sweep-id", "latest"]) == 0
    out = capsys.readouterr().out
    assert f"#/experiments/{t.experiment_id}/runs?compareRunsMode=CHART&viewStateShareKey=alframe-curves-sweep-s7" \
        in out and "alframe-curves-sweep-s7-by-strategy" in out
    assert ui_cli.main(["--tracking-uri", uri, "--experiment", "nope"]) == 2
    assert capsys.readouterr().err.startswith("alframe: error: no MLflow experiment named 'nope'")
