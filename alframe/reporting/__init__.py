"""Reports across the runs of a sweep: budget curves, AUBC, labels-to-target, pairwise matrices."""

from alframe.reporting.report import display_table, make_report, print_report, write_report
from alframe.reporting.runs import REPORT_EXPERIMENT_SUFFIX, REPORT_TAG, RunCurve, load_runs
from alframe.reporting.tables import (
    DEFAULT_TARGETS,
    Report,
    build_report,
    machine_label_table,
    mean_curves,
    pairwise_matrix,
    quantile_inf,
    quantile_observed,
    summarise,
)

__all__ = ["DEFAULT_TARGETS", "REPORT_EXPERIMENT_SUFFIX", "REPORT_TAG", "Report", "RunCurve", "build_report",
           "display_table", "load_runs", "machine_label_table", "make_report", "mean_curves", "pairwise_matrix",
           "print_report", "quantile_inf", "quantile_observed", "summarise", "write_report"]
