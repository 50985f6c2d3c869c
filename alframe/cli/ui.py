"""``python -m alframe.cli.ui`` (``make ui``): publish the budget-curve chart view and print its links."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alframe.tracking.ui import DEFAULT_UI, budget_curves_link


def main(argv: Sequence[str] | None = None) -> int:
    """Print the budget-curve links of an experiment (``make ui`` runs this before ``mlflow ui``).

    Exit code 2 with a one-line message when the store or experiment does not exist.
    """
    from alframe.errors import ReportError
    from alframe.progress import console
    from alframe.tracking.store import _client, default_tracking_uri, latest_sweep_id

    p = argparse.ArgumentParser(prog="python -m alframe.tracking.ui", description=main.__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=None, help="default: sqlite:///outputs/mlflow.db")
    p.add_argument("--experiment", default="alframe", help="MLflow experiment name (default: alframe)")
    p.add_argument("--sweep-id", default=None, help="only this sweep's runs ('latest' = newest sweep)")
    p.add_argument("--ui-url", default=None, help=f"address of the MLflow UI (default: {DEFAULT_UI} for local "
                   "stores, the server itself for http(s) tracking URIs)")
    args = p.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri("outputs")
    try:
        client = _client(uri)
        exp = client.get_experiment_by_name(args.experiment)
        if exp is None or exp.lifecycle_stage == "deleted":
            raise ReportError(f"no MLflow experiment named {args.experiment!r} in {uri}: run an experiment first")
        sweep = latest_sweep_id(client, exp.experiment_id) if args.sweep_id == "latest" else args.sweep_id
        link = budget_curves_link(client, uri, exp.experiment_id, sweep, ui_url=args.ui_url)
        grouped = budget_curves_link(client, uri, exp.experiment_id, sweep, group_by="strategy", ui_url=args.ui_url)
    except (ReportError, ValueError) as e:
        print(f"alframe: error: {e}", file=sys.stderr)
        return 2
    what = f"experiment '{args.experiment}'" + (f", sweep {sweep}" if sweep else "")
    console.print(f"Budget curves ({what}): {link}", soft_wrap=True)
    console.print(f"Grouped by strategy:   {grouped}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
