"""Terminal output with rich: a line per round while the run works, a summary at the end."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from rich.console import Console

console = Console(highlight=False)
_interactive_depth = 0

COLUMNS = [("round", "round", "{:d}", 5), ("labels", "n_labelled", "{:d}", 6),
           ("test acc", "test_accuracy", "{:.4f}", 8), ("val acc", "val_accuracy", "{:.4f}", 8),
           ("test loss", "test_loss", "{:.4f}", 9), ("train s", "train_seconds", "{:.2f}", 7)]


def _fmt(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(int(v) if fmt == "{:d}" else v)


class RoundTable:
    """Prints one aligned row per evaluated round as it happens, and the full table at the end.

    Args:
        title: heading printed before the first row.
    """

    def __init__(self, title: str):
        self.title, self.rows, self._header = title, [], False

    def add(self, row: dict, replayed: bool = False) -> None:
        """Print a row (``round, n_labelled, test_accuracy, ...``); ``replayed`` marks resumed rows."""
        if not self._header:
            console.print(f"[bold]{self.title}[/bold]")
            console.print("  ".join(f"{name:>{w}}" for name, _, _, w in COLUMNS), style="bold")
            self._header = True
        self.rows.append(row)
        line = "  ".join(f"{_fmt(row, key, fmt):>{w}}" for _, key, fmt, w in COLUMNS)
        console.print(line + ("  (resumed)" if replayed else ""), style="dim" if replayed else None)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with ``message`` while work runs (off while a person is labelling)."""
    if _interactive_depth or not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


@contextlib.contextmanager
def paused(interactive: bool) -> Iterator[None]:
    """Suspend spinners while an interactive oracle owns the terminal."""
    global _interactive_depth
    _interactive_depth += int(interactive)
    try:
        yield
    finally:
        _interactive_depth -= int(interactive)


def summary(result, pending: bool = False) -> None:
    """Final message: the result, where the outputs are and how to open them (the rows were
    printed as the rounds ran)."""
    if pending:
        console.print(f"[yellow]Waiting for labels.[/yellow] State saved in {result.run_dir}. "
                      "Run the same command again with loop.resume=true (or "
                      f"loop.resume={result.run_dir}) to continue.", soft_wrap=True)
    else:
        console.print(f"[bold green]Done.[/bold green] final test accuracy {result.final_accuracy:.4f}, "
                      f"AUBC {result.aubc:.4f}")
    # soft_wrap: paths and URIs stay on one line so they can be copied
    console.print(f"Run folder:  {result.run_dir}", soft_wrap=True)
    console.print(f"MLflow run:  {result.run_id} in experiment '{result.experiment_name}' ({result.tracking_uri})",
                  soft_wrap=True)
    if result.tracking_uri.startswith("sqlite:///"):
        console.print("Open it:     make ui   (or: mlflow ui --backend-store-uri "
                      f"{result.tracking_uri}), then http://127.0.0.1:5000 and chart test_accuracy", soft_wrap=True)
