"""A person labels the query batch in the terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console

from alframe.oracles.answers import SKIP, AnswerStore
from alframe.oracles.base import LabelRequest, LabelResult, Oracle, parse_label
from alframe.oracles.render import save_png, terminal_preview

HELP = ("Enter = accept the suggestion, a class number or name = that class, "
        "s = skip (back to the pool), u = undo the previous answer, q = save and quit, ? = help")


class TerminalOracle(Oracle):
    """Asks a person for each queried sample's class in the terminal.

    For each sample it shows a preview (unicode half blocks) and the path of a saved PNG, the
    model's prediction and confidence as the suggested label, and the class list. Answers:
    Enter accepts the suggestion; a class number or name; ``s`` skips (the sample returns to
    the pool); ``u`` undoes the previous answer of this batch; ``q`` saves and quits (the run
    stops, ``loop.resume=true`` continues); ``?`` shows help. Invalid input is re-asked.
    End of input (Ctrl-D, a closed pipe) and Ctrl-C count as ``q``.

    Every answer is written at once to ``<run_dir>/answers/round_<r>.json`` (see
    :class:`~alframe.oracles.answers.AnswerStore`), so a killed process loses nothing.

    Args:
        preview: draw the image in the terminal.
        preview_width: columns of the preview (None: image width clamped to [24, 48]).
        input_stream: where answers are read, line by line (default ``sys.stdin``).
        output: where prompts go (default the standard output), e.g. a ``StringIO`` in tests.
    """

    name = "terminal"
    interactive = True

    def __init__(self, preview: bool = True, preview_width: int | None = None,
                 input_stream: TextIO | None = None, output: TextIO | None = None):
        self.preview, self.preview_width = bool(preview), preview_width
        self.input_stream = input_stream
        self.console = Console(file=output, highlight=False) if output is not None else Console(highlight=False)

    # ------------------------------------------------------------------ io
    def _read(self, prompt: str) -> str | None:
        """One line of input without the newline; None at end of input."""
        self.console.print(prompt, end="")
        stream = self.input_stream if self.input_stream is not None else sys.stdin
        try:
            line = stream.readline()
        except KeyboardInterrupt:  # Ctrl-C: save and quit like q
            line = ""
        if line == "":
            self.console.print()
            return None
        if self.input_stream is not None and not self.console.is_terminal:
            self.console.print(line.rstrip("\n"))  # echo scripted answers into the transcript
        return line.rstrip("\r\n")

    def _show(self, request: LabelRequest, i: int, store: AnswerStore,
              suggestion: int | None, conf: float | None) -> None:
        names = self.data.class_names
        c = self.console
        c.rule(f"round {request.round}: sample {store.n_answered + 1} of {len(store.idx)}  (index {i})")
        png = save_png(self.data.train, i, self.run_dir / "queries" / f"round_{request.round}" / "images"
                       / f"{i}.png")
        if self.preview:
            c.print(terminal_preview(self.data.train, i, self.preview_width))
        c.print(f"image: {png}", soft_wrap=True)
        if len(names) <= 40:
            c.print("classes: " + "  ".join(f"[bold]{k}[/bold]={n}" for k, n in enumerate(names)))
        if suggestion is not None:
            c.print(f"suggested: [bold cyan]{names[suggestion]}[/bold cyan] (class {suggestion}, "
                    f"model confidence {conf:.0%}) - press Enter to accept")
        else:
            c.print("no suggestion yet (round 0 has no model)")

    # ------------------------------------------------------------------ labelling
    def label(self, request: LabelRequest) -> LabelResult:
        names = self.data.class_names
        store = AnswerStore(self.run_dir, request.round, request.idx)
        pos = {int(i): k for k, i in enumerate(request.idx)}
        if store.n_answered:
            self.console.print(f"[green]{store.n_answered} answers of this batch were saved earlier; "
                               "continuing.[/green]")
        while (i := store.next_unanswered()) is not None:
            k = pos[i]
            suggestion = int(request.predicted[k]) if request.predicted is not None else None
            conf = float(request.confidence[k]) if request.confidence is not None else None
            self._show(request, i, store, suggestion, conf)
            t0 = time.monotonic()
            while True:
                text = self._read("label> ")
                if text is None or text.strip().lower() == "q":
                    self.console.print(f"[yellow]Saved {store.n_answered} answers; stopping. "
                                       "Run again with loop.resume=true to continue.[/yellow]")
                    return store.result(pending=True)
                text = text.strip()
                if text in ("?", "h", "help"):
                    self.console.print(HELP)
                    continue
                if text.lower() == "u":
                    undone = store.undo()
                    self.console.print("nothing to undo in this batch" if undone is None
                                       else f"undid the answer for index {undone}")
                    break
                if text.lower() == "s":
                    store.set(i, SKIP, time.monotonic() - t0)
                    self.console.print(f"skipped index {i}: it returns to the pool")
                    break
                if text == "":
                    if suggestion is None:
                        self.console.print("[red]there is no suggestion to accept: type a class number "
                                           "or name[/red]")
                        continue
                    y = suggestion
                else:
                    try:
                        y = parse_label(text, names)
                    except ValueError as e:
                        self.console.print(f"[red]{e}[/red]  ({HELP})")
                        continue
                store.set(i, y, time.monotonic() - t0)
                self.console.print(f"index {i} -> [bold]{names[y]}[/bold]")
                break
        return store.result(pending=False)
