"""``alframe-report``: budget curves, AUBC and labels-to-target tables across the runs of a sweep."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alframe.errors import ReportError
from alframe.reporting.report import make_report
from alframe.reporting.tables import DEFAULT_TARGETS
from alframe.tracking.store import default_tracking_uri


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
