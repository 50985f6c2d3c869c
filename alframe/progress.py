"""Terminal output with rich: a line per round while the run works, a summary at the end.

In a parallel sweep several jobs write to one terminal; :func:`set_job_prefix` (called by the
CLI for each multirun job) puts the job's label in front of every line this module prints, so
the round rows of different jobs can be told apart.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape


class PrefixedConsole(Console):
    """A rich Console that starts every printed line of plain-string output with a prefix.

    Lines are never wrapped by rich (``soft_wrap``): sentences, paths and links stay whole and the
    terminal wraps them, so banners do not break mid-sentence and links can be copied.
    """

    prefix: str = ""

    def print(self, *objects, **kwargs) -> None:  # noqa: D401 - same contract as Console.print
        """Console.print, with :attr:`prefix` before each line when all objects are strings."""
        if self.prefix and objects and all(isinstance(o, str) for o in objects):
            text = kwargs.pop("sep", " ").join(objects)
            objects = ("\n".join(escape(self.prefix) + line for line in text.split("\n")),)
        super().print(*objects, **kwargs)


console = PrefixedConsole(highlight=False, soft_wrap=True)
_interactive_depth = 0


def set_job_prefix(prefix: str) -> None:
    """Start every line printed from now on with ``prefix`` (``""`` turns it off), e.g.
    ``"[job 1 entropy seed0] "`` for one job of a parallel sweep."""
    console.prefix = prefix

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


def summary(result, pending: bool = False, link: str | None = None) -> None:
    """Final message: the result, where the outputs are and how to open them (the rows were
    printed as the rounds ran).

    Args:
        result: the run's ``RunResult``.
        pending: the run stopped to wait for labels.
        link: MLflow UI link to the budget curves of the experiment or sweep (None: not available).
    """
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
    if link:
        console.print(f"MLflow UI:   {link}", soft_wrap=True)
    if result.tracking_uri.startswith("sqlite:///"):
        console.print(f"             (start it first: make ui, or mlflow ui --backend-store-uri {result.tracking_uri})",
                      soft_wrap=True)
