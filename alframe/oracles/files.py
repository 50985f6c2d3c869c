"""Hand-off to another labelling tool: query batches as files, labels imported on resume.

Each round the oracle writes ``<run_dir>/queries/round_<r>/``:

- ``images/<index>.png``: the queried samples;
- ``labels.csv``: ``index,file,suggested_label,confidence,label,run`` with the ``label`` column
  empty, for a person, a spreadsheet or a vendor to fill (cells that a spreadsheet would run as
  a formula are written with a leading ``'``, see
  :func:`~alframe.oracles.importing.spreadsheet_safe`);
- ``label_studio_tasks.json`` and ``label_studio_config.xml``: a Label Studio project
  (image + single-choice classes, the model's suggestion as a pre-annotation);
- ``README.txt``: what to fill in, and the exact Label Studio steps (:func:`round_readme`).

Every row and task carries the run's id (``<run_dir>/queries/run_id.txt``), its index and its
image file (``images/<index>.png``); an import accepts only rows that match all three, so labels
of another run, project or round folder are refused.

The run then stops (pending). Running the same command with ``loop.resume=true`` imports
``export.json`` (a Label Studio JSON or JSON-MIN export saved into that folder) when present,
otherwise the filled ``labels.csv``. The whole file is validated before anything is recorded:
one bad row and nothing is imported. Only an explicit skip (``skip`` or ``-`` in labels.csv,
Label Studio's Skip button) is a skip; a sample without an answer stays pending (what is
answered is imported, the rest is asked for again). A round is never completed without a label.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from pathlib import Path

import numpy as np

from alframe import progress
from alframe.errors import LabelImportError
from alframe.oracles import label_studio
from alframe.oracles.answers import atomic_write_text
from alframe.oracles.base import LabelRequest, LabelResult, Oracle
from alframe.oracles.importing import Row, Table, check_rows, image_file, read_table
from alframe.oracles.render import save_png
from alframe.spreadsheet import from_spreadsheet, spreadsheet_safe

CSV_NAME = "labels.csv"
TASKS_NAME = "label_studio_tasks.json"
CONFIG_NAME = "label_studio_config.xml"
EXPORT_NAMES = ("export.json", "label_studio_export.json")
CSV_COLUMNS = ["index", "file", "suggested_label", "confidence", "label", "run"]
REQUIRED_COLUMNS = ("index", "file", "label", "run")
README_NAME = "README.txt"
RUN_ID_NAME = "run_id.txt"  # in <run_dir>/queries/
RUN_ID_LETTERS = "abcdefghjkmnpqrstuvwxyz"  # letters only: a spreadsheet keeps the id as text


class FilesOracle(Oracle):
    """Writes each query batch as files for an external tool and imports the labels on resume.

    Args:
        image_format: ``png`` (lossless; the only format written).

    Raises:
        ValueError: an unsupported ``image_format``.
        LabelImportError: at import, a file that is not UTF-8 or not comma-separated, has
            duplicate or missing columns, rows of another run, index or image, unknown
            classes, extra or duplicate rows, malformed annotations, or rows of earlier rounds
            that contradict the recorded labels (all problems listed, rows named; see
            :meth:`import_label_studio`). Nothing of such a file is recorded.
    """

    name = "files"

    def __init__(self, image_format: str = "png"):
        if image_format != "png":
            raise ValueError(f"oracle.image_format={image_format!r}: only 'png' is supported")
        self.image_format = image_format

    def round_dir(self, round: int) -> Path:
        """``<run_dir>/queries/round_<round>``."""
        return self.run_dir / "queries" / f"round_{int(round)}"

    @property
    def run_id(self) -> str:
        """This run's id (12 letters), written into every hand-off; made on first use and kept
        in ``<run_dir>/queries/run_id.txt``."""
        path = self.run_dir / "queries" / RUN_ID_NAME
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            text = ""
        if not text:
            text = "".join(secrets.choice(RUN_ID_LETTERS) for _ in range(12))
            atomic_write_text(path, text + "\n")
        return text

    # ------------------------------------------------------------------ labelling
    def label(self, request: LabelRequest) -> LabelResult:
        d = self.round_dir(request.round)
        export = next((d / n for n in EXPORT_NAMES if (d / n).is_file()), None)
        csv_path = d / CSV_NAME
        if export is not None:
            result, notes, headline = self._import_label_studio(export, request)
        else:
            table = read_table(csv_path, CSV_COLUMNS) if csv_path.is_file() else None
            if table is None or not self._has_answers(table):
                if table is None or "run" not in table.header:  # no hand-off yet, or one without run ids
                    self.write_batch(request, overwrite_csv=table is not None)
                self._instructions(request)
                return LabelResult(idx=np.empty(0, dtype=np.int64), labels=np.empty(0, dtype=np.int64),
                                   pending=True)
            export = csv_path
            result, notes, headline = self._import_csv(csv_path, table, request)
        if headline is None:
            headline = (f"Imported {len(result.idx)} labels from {export}" if len(result.idx)
                        else f"Nothing imported from {export}")
        progress.console.print(headline + "".join(f"\n  {n}" for n in notes), soft_wrap=True)
        return result

    def _instructions(self, request: LabelRequest) -> None:
        d = self.round_dir(request.round)
        names = self.data.class_names
        shown = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + ", ..."
        progress.console.print(
            f"[yellow]Labels needed for round {request.round}: {len(request.idx)} samples in {d}[/yellow]\n"
            f"  Fill the 'label' column of {d / CSV_NAME} with a class name or number "
            f"({shown}; 'skip' returns a sample to the pool),\n"
            f"  or label them in Label Studio and save its JSON export as {d / EXPORT_NAMES[0]}:\n"
            f"  the exact steps (images only show with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and a\n"
            f"  Local Files storage) are in {d / README_NAME} and in alframe's README, section 'Label Studio'.\n"
            "  Then run the same command again with loop.resume=true.", soft_wrap=True)

    # ------------------------------------------------------------------ writing a batch
    def write_batch(self, request: LabelRequest, overwrite_csv: bool = False) -> Path:
        """Write images, ``labels.csv``, Label Studio tasks and config and ``README.txt`` for
        ``request``; returns the round folder. An existing ``labels.csv`` is overwritten only
        with ``overwrite_csv`` (a person may be filling it)."""
        d = self.round_dir(request.round)
        names = self.data.class_names
        run = self.run_id
        rows, tasks = [], []
        for k, i in enumerate(int(j) for j in request.idx):
            img = save_png(self.data.train, i, d / image_file(i))
            rel = img.relative_to(d).as_posix()
            sugg = None if request.predicted is None else names[int(request.predicted[k])]
            conf = None if request.confidence is None else float(request.confidence[k])
            rows.append([i, rel, sugg or "", "" if conf is None else f"{conf:.4f}", "", run])
            tasks.append(label_studio.task(i, img, rel, request.round, sugg, conf, run=run))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [list(CSV_COLUMNS), *([spreadsheet_safe(c) for c in row] for row in rows)])
        csv_path = d / CSV_NAME
        if overwrite_csv or not csv_path.exists():
            atomic_write_text(csv_path, buf.getvalue())
        atomic_write_text(d / TASKS_NAME, json.dumps(tasks, indent=1))
        atomic_write_text(d / CONFIG_NAME, label_studio.labelling_config(names))
        atomic_write_text(d / README_NAME, round_readme(d, request.round, len(rows), names, run))
        return d

    # ------------------------------------------------------------------ reading labels.csv
    @staticmethod
    def _has_answers(table: Table) -> bool:
        """True when some row has a label, or the file lost its 'label' column or all its rows (an
        error to report)."""
        if "label" not in table.header or not table.rows:
            return True
        return any((row.get("label") or "").strip() for _, row in table.rows)

    # ------------------------------------------------------------------ importing
    def import_csv(self, path: Path, request: LabelRequest, with_notes: bool = False):
        """Labels from a filled ``labels.csv`` (UTF-8, comma-separated; columns ``index``,
        ``file``, ``label`` and ``run`` required, each once).

        Every row must carry this run's id, a queried index and exactly that index's image
        (``images/<index>.png``); cells may be in the escaped form that
        :func:`~alframe.oracles.importing.spreadsheet_safe` writes. ``label``: a class name or
        number, ``skip`` or ``-`` (a skip: the sample returns to the pool), or empty (not
        answered yet: pending). Every queried index needs its row;
        rows of samples labelled in earlier sessions with the same label are ignored.

        Returns:
            The :class:`LabelResult` (``pending`` when some samples are not answered yet, or
            when every answer is a skip); with ``with_notes``, ``(result, notes)`` where
            ``notes`` are lines saying what was skipped, ignored or is still pending.

        Raises:
            LabelImportError: listing every problem with its line number; nothing is recorded.
        """
        result, notes, headline = self._import_csv(path, read_table(path, CSV_COLUMNS), request)
        notes = ([headline] if headline else []) + notes
        return (result, notes) if with_notes else result

    def _import_csv(self, path: Path, table: Table, request: LabelRequest):
        missing_cols = [c for c in REQUIRED_COLUMNS if c not in table.header]
        if missing_cols:
            hint = (" (the 'run' column ties the file to this run: fill the labels.csv this run wrote)"
                    if missing_cols == ["run"] else "")
            raise LabelImportError(f"{path}: missing column(s) {missing_cols}; the header must contain "
                                   f"{', '.join(repr(c) for c in REQUIRED_COLUMNS)} (found {table.header}){hint}")

        def cell(row: dict, name: str) -> str:
            return from_spreadsheet((row.get(name) or "").strip())

        entries = [Row(f"line {n}", cell(row, "index"), (row.get("label") or "").strip(), int(request.round),
                        run=cell(row, "run"), file=cell(row, "file"), csv=True)
                   for n, row in table.rows]
        return check_rows(path, entries, request, self.data.class_names, self.data.n_train, self.run_id,
                          self._batch_of)

    def import_label_studio(self, path: Path, request: LabelRequest, with_notes: bool = False):
        """Labels from a Label Studio export: JSON (tasks with ``annotations``) or JSON-MIN
        (one flat record per annotation with the task's data and ``label``).

        - Every task must carry this run's id (``data.run``), a queried index and exactly its
          image (``data.file`` = ``images/<index>.png``, ``data.image`` ending with
          ``queries/round_<r>/images/<index>.png``, ``data.round`` = ``r`` when present).
        - A task's answer is its latest annotation by ``updated_at`` (a re-label or an edit
          wins over the older answer); in JSON-MIN the records of one task ``id`` are merged
          the same way. One choice per annotation.
        - A latest annotation that is cancelled (Label Studio's Skip button) is a skip: the
          sample returns to the pool. A task without annotation, or left out of the export,
          is pending: what is answered is imported and the rest asked for again. (JSON-MIN
          leaves skipped tasks out: there they stay pending; export JSON to have skips seen.)
        - A reused project: rows of samples already labelled with the same label are ignored,
          as are still-skipped rows of samples skipped in an earlier round; when a sample was
          queried again, its task of this round is the one read.

        Returns:
            As :meth:`import_csv`.

        Raises:
            LabelImportError: unreadable JSON; rows of another run, index, image or round;
                unknown classes; annotations without a choice or with several; duplicate
                tasks for one index in this round; rows of samples never queried; a label that
                differs from the one already recorded (naming the index and both labels); a
                label for a sample that was skipped earlier and is back in the pool. All
                problems are listed; nothing is recorded.
        """
        result, notes, headline = self._import_label_studio(path, request)
        notes = ([headline] if headline else []) + notes
        return (result, notes) if with_notes else result

    def _import_label_studio(self, path: Path, request: LabelRequest):
        try:
            fmt, rows = label_studio.read_export(path)
        except ValueError as e:
            raise LabelImportError(str(e)) from None
        entries = [Row(r.where, r.index, r.answer, r.round, run=r.run, file=r.file, image=r.image,
                        problem=r.problem, cancelled=r.cancelled) for r in rows]
        relabelled = sum(1 for r in rows if r.annotations > 1)
        result, notes, headline = check_rows(path, entries, request, self.data.class_names, self.data.n_train,
                                              self.run_id, self._batch_of, fmt=fmt)
        notes.insert(0, f"Label Studio {fmt} export: {len(rows)} task(s)"
                     + (f", {relabelled} with several annotations (the latest by updated_at was used)"
                        if relabelled else ""))
        return result, notes, headline

    def _batch_of(self, round: int) -> set[int] | None:
        """The indices this oracle handed off in ``round`` (its tasks file, else its labels.csv),
        or None when that round folder holds neither."""
        d = self.round_dir(round)
        try:
            tasks = json.loads((d / TASKS_NAME).read_text(encoding="utf-8"))
            return {int(t["data"]["index"]) for t in tasks}
        except (OSError, ValueError, TypeError, KeyError):
            pass
        try:
            text = (d / CSV_NAME).read_bytes().decode("utf-8-sig", errors="replace")
            out = set()
            for row in csv.DictReader(io.StringIO(text)):
                try:
                    out.add(int(from_spreadsheet(str(row.get("index")).strip())))
                except ValueError:
                    pass
            return out
        except (OSError, csv.Error):
            return None


def round_readme(d: Path, round: int, n: int, class_names: list[str], run: str = "") -> str:
    """Text of a round folder's ``README.txt``: how to fill ``labels.csv`` and the exact Label
    Studio steps (the same as alframe's README, section "Label Studio"), with this folder's paths.

    Args:
        d: the round folder (absolute paths are written so the commands can be pasted).
        round: the round number.
        n: number of queried samples.
        class_names: ``[C]`` class names.
        run: the run's id (written into every row and task).
    """
    d = Path(d).resolve()
    keys = label_studio.hotkeys(len(class_names))
    shown = ", ".join(f"{k}={c}" + (f" [key {h}]" if h else "") for k, (c, h) in enumerate(zip(class_names, keys, strict=True)))
    return f"""alframe query batch, round {round}: {n} samples.

Option 1: a spreadsheet. Fill the 'label' column of {CSV_NAME} (class name or number; 'skip'
returns the sample to the pool; a row left empty is asked for again). Keep one row per index and
the 'index', 'file' and 'run' columns as they are (they tie each label to its image and to this
run); do not add or remove rows. Save it as 'CSV UTF-8' (comma-separated). Cells that start
with ' were escaped so that a spreadsheet does not run them as formulas; either form is read back.

Option 2: Label Studio (steps checked with Label Studio 1.23.2).
 1. Start it so that it may serve files from this disk (without this the images do not show and
    Label Studio says "There was an issue loading URL from $image value"):
      LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/ label-studio start
 2. Create a project. Settings > Labeling Interface > Code: paste {CONFIG_NAME}.
    Each class has its own hotkey (classes 0-9: keys 0-9; with more classes: letters, then shift+letter);
    a task cannot be submitted without a choice (use Skip instead).
 3. Settings > Cloud Storage > Add Source Storage > Local files, "Absolute local path":
      {d.parent}
    (the run's queries folder: it holds the images of every round, so one storage serves all
    rounds). Save it; do not press Sync (the tasks come from the next step).
 4. Import {TASKS_NAME} (Import button of the project).
 5. Label. The model's guess is pre-selected from round 1 on. Skip (the Skip button) returns the
    sample to the pool. If you label a task again or edit an answer, the latest answer (by
    updated_at) counts.
 6. Export > JSON (or JSON-MIN), save the file as
      {d / EXPORT_NAMES[0]}
    A task not labelled yet stays pending: you may export before you are done, the labels given
    are imported and the rest is asked for again. JSON-MIN leaves skipped tasks out too, so
    there a skipped task stays pending: export JSON to have the skips counted.
 7. You may keep one project for all rounds: import each round's {TASKS_NAME} into it and export
    all tasks. Rows of samples already labelled with the same label are ignored; a different label
    stops the import, naming the index and both labels.

Then run the same alframe command again with loop.resume=true. A file with a problem (rows of
another run or image, unknown class, missing, extra or duplicate rows) is reported row by row
and nothing of it is imported. A round needs at least one label: if every sample is skipped,
the round stays pending. This run's id: {run}.

Classes: {shown}
"""
