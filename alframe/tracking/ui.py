"""Links that open budget curves in the MLflow UI with no clicks: ``python -m alframe.tracking.ui``.

The MLflow UI (3.x) keeps the runs page's view in its URL: ``compareRunsMode=CHART`` opens the
chart view, ``searchFilter`` filters the runs, and ``viewStateShareKey=<key>`` loads a saved view
(chart cards and sections, grouping, which runs are shown, table columns) from the experiment
tag ``mlflow.sharedViewState.<key>`` - the same mechanism as the UI's own "Share" button. The
chart search box and grouping are UI state, not URL parameters, so alframe writes such a view
tag and prints a link to it:

- a first chart section "Budget curve" holding ``test_accuracy`` against ``step`` (= number of
  labels, as the loop logs it), so nothing comes before it; every other metric follows in the
  sections MLflow generates;
- all matching runs drawn (not MLflow's default "first 10"), FAILED/KILLED runs filtered out;
- the table shows the ``alframe.status`` tag (running, waiting_for_labels, finished, failed,
  killed), strategy and seed;
- optionally grouped by a tag (``strategy``): MLflow then draws the mean line with a min-max
  band over the runs of each group (the seeds).

The experiment page URL with the ``/runs`` tab also skips the experiment-kind inference that
opens experiments without runs on the GenAI overview.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from urllib.parse import quote

#: experiment tag prefix of the MLflow UI's shared views (mlflow/server/js constants)
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: default address of ``mlflow ui`` / ``make ui``
DEFAULT_UI = "http://127.0.0.1:5000"
#: runs left out of the budget-curve views (their curves are partial)
HIDDEN_STATUSES = ("FAILED", "KILLED")
#: the MLflow UI's name of the section of unprefixed metrics
MODEL_METRICS_SECTION = "Model metrics"
_KEY_OK = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def ui_base_url(tracking_uri: str, ui_url: str | None = None) -> str:
    """Address of the MLflow UI that shows ``tracking_uri``.

    A tracking server (``http(s)://...``) serves its own UI; local stores (``sqlite:///``,
    ``file:``, paths) are shown by ``mlflow ui`` at ``ui_url`` (default ``http://127.0.0.1:5000``,
    what ``make ui`` starts).

    Returns:
        The base URL without a trailing slash.
    """
    if ui_url:
        return ui_url.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI


def runs_filter(sweep_id: str | None = None) -> str:
    """MLflow search filter of the runs a budget-curve view shows: not FAILED/KILLED, and of
    sweep ``sweep_id`` when given (tag ``sweep_id``)."""
    parts = [f"attributes.status != '{s}'" for s in HIDDEN_STATUSES]
    if sweep_id:
        parts.append("tags.sweep_id = '" + sweep_id.replace("'", "\\'") + "'")
    return " and ".join(parts)


def view_key(sweep_id: str | None = None, group_by: str | None = None) -> str:
    """Share key of alframe's view: ``alframe-curves[-sweep-<id>][-by-<tag>]`` (URL-safe).

    Raises:
        ValueError: the sweep id or tag has characters other than letters, digits, ``_.-``.
    """
    key = "alframe-curves" + (f"-sweep-{sweep_id}" if sweep_id else "") + (f"-by-{group_by}" if group_by else "")
    if not _KEY_OK.match(key):
        raise ValueError(f"cannot build an MLflow view key from sweep id {sweep_id!r} / group {group_by!r}: "
                         "allowed are letters, digits, '_', '.', '-'")
    return key


def chart_view_state(search_filter: str, metric: str = "test_accuracy", group_by: str | None = None,
                     extra_columns: Sequence[str] = ("alframe.status", "strategy", "seed")) -> dict:
    """The MLflow UI state of alframe's budget-curve view (the JSON of a shared view).

    Field names follow the MLflow UI's ``ExperimentPageUIState`` and serialized
    ``RunsChartsLineCardConfig`` (MLflow 2.x/3.x). The UI replaces its whole state with this
    object, so every field is given.

    Args:
        search_filter: MLflow search filter of the runs (see :func:`runs_filter`).
        metric: the per-round metric drawn against ``step`` (number of labels).
        group_by: a run tag to group runs by (mean line, min-max band), or None for one line
            per run.
        extra_columns: run tags shown as table columns.
    """
    section = "alframe-budget-curve-section"
    card = {
        "uuid": "alframe-budget-curve", "type": "LINE", "isGenerated": False, "deleted": False,
        "metricSectionId": section, "displayName": f"{metric} vs number of labels",
        "runsCountToCompare": 1000, "metricKey": metric, "selectedMetricKeys": [metric],
        "xAxisKey": "step", "selectedXAxisMetricKey": "", "xAxisScaleType": "linear", "scaleType": "linear",
        "yAxisKey": "metric", "yAxisExpressions": [], "lineSmoothness": 0, "ignoreOutliers": False,
        "useGlobalXaxisKey": False, "useGlobalLineSmoothing": False, "displayPoints": True,
        "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None},
    }
    columns = ["attributes.`Source`", "attributes.`Models`", "attributes.`Dataset`"]
    columns += [f"tags.`{t}`" for t in extra_columns]
    return {
        "searchFilter": search_filter,
        "selectedColumns": columns, "columnOrder": [], "columnWidths": {},
        "runsExpanded": {}, "runsPinned": [], "runsHidden": [], "runsVisibilityMap": {},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [card],
        # the first section holds only the budget curve; MLflow appends the other metrics'
        # sections after it because the accordion counts as reordered
        "compareRunSections": [
            # one card per row: the curve gets the chart area's full width
            {"uuid": section, "name": "Budget curve", "display": True, "isReordered": True, "columns": 1,
             "cardHeight": 320},
            {"uuid": "alframe-model-metrics-section", "name": MODEL_METRICS_SECTION, "display": True,
             "isReordered": False},
        ],
        "isAccordionReordered": True,
        "viewMaximized": False, "runListHidden": False,
        "groupBy": ({"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group_by}]}
                    if group_by else None),
        "groupsExpanded": {}, "useGroupedValuesInCharts": True, "autoRefreshEnabled": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
        "chartsSearchFilter": "",
    }


def publish_chart_view(client, experiment_id: str, sweep_id: str | None = None, group_by: str | None = None,
                       metric: str = "test_accuracy") -> str:
    """Store alframe's budget-curve view as a shared view of the experiment; returns its key.

    Writes the experiment tag ``mlflow.sharedViewState.<key>`` (idempotent: parallel sweep jobs
    write the same value).

    Args:
        client: an ``mlflow.MlflowClient`` on the store.
        experiment_id: MLflow experiment id.
        sweep_id: show only this sweep's runs (None: all runs of the experiment).
        group_by: run tag to group by (None: one line per run).
    """
    key = view_key(sweep_id, group_by)
    state = chart_view_state(runs_filter(sweep_id), metric=metric, group_by=group_by)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + key, json.dumps(state, separators=(",", ":")))
    return key


def chart_view_url(base_url: str, experiment_id: str, key: str | None = None, search_filter: str | None = None) -> str:
    """Link to an experiment's runs page in chart mode, opening the shared view ``key`` or, without
    a key, filtering the runs with ``search_filter``.

    The MLflow UI ignores a shared view when the URL also carries search parameters
    (``searchFilter``, ``orderByKey``, ...), so the view brings its own filter instead.

    Example: ``http://127.0.0.1:5000/#/experiments/1/runs?compareRunsMode=CHART&viewStateShareKey=alframe-curves``

    Raises:
        ValueError: both ``key`` and ``search_filter`` are given.
    """
    if key and search_filter:
        raise ValueError("chart_view_url: give a shared view key or a search filter, not both (the MLflow UI "
                         "ignores the view when the URL has a searchFilter)")
    query = ["compareRunsMode=CHART"]
    if key:
        query.append(f"viewStateShareKey={quote(key, safe='')}")
    if search_filter:
        query.append(f"searchFilter={quote(search_filter, safe='')}")
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?" + "&".join(query)


def run_url(base_url: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """Link to one run's page (``tab``: ``""`` overview, ``"artifacts"``, ...)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" + (f"/{tab}" if tab else "")


def budget_curves_link(client, tracking_uri: str, experiment_id: str, sweep_id: str | None = None,
                       group_by: str | None = None, ui_url: str | None = None) -> str:
    """Publish the view (:func:`publish_chart_view`) and return the link that opens it."""
    key = publish_chart_view(client, experiment_id, sweep_id=sweep_id, group_by=group_by)
    return chart_view_url(ui_base_url(tracking_uri, ui_url), experiment_id, key)




