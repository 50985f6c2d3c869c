"""Hand-off to another labelling tool: query batches as files, labels imported on resume.

Each round the oracle writes ``<run_dir>/queries/round_<r>/``:

- ``images/<index>.png``: the queried samples;
- ``labels.csv``: ``index,file,suggested_label,confidence,label`` with the ``label`` column
  empty, for a person, a spreadsheet or a vendor to fill;
- ``label_studio_tasks.json`` and ``label_studio_config.xml``: a Label Studio project
  (image + single-choice classes, the model's suggestion as a pre-annotation);
- ``README.txt``: what to fill in, and the exact Label Studio steps (:func:`round_readme`).

The run then stops (pending). Running the same command with ``loop.resume=true`` imports
``export.json`` (a Label Studio JSON or JSON-MIN export saved into that folder) when present,
otherwise the filled ``labels.csv``. The whole file is validated before anything is recorded.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alframe import progress
from alframe.errors import LabelImportError
from alframe.oracles import label_studio
from alframe.oracles.answers import SKIP, atomic_write_text
from alframe.oracles.base import LabelRequest, LabelResult, Oracle, parse_label
from alframe.oracles.render import save_png

CSV_NAME = "labels.csv"
TASKS_NAME = "label_studio_tasks.json"
CONFIG_NAME = "label_studio_config.xml"
EXPORT_NAMES = ("export.json", "label_studio_export.json")
CSV_COLUMNS = ["index", "file", "suggested_label", "confidence", "label"]
README_NAME = "README.txt"
SKIP_WORDS = (SKIP, "-")
EMPTY = object()  # a row without an answer
BAD = object()  # a row whose class is unknown (already reported)




class FilesOracle(Oracle):
    """Writes each query batch as files for an external tool and imports the labels on resume.

    Args:
        image_format: ``png`` (lossless; the only format written).

    Raises:
        ValueError: an unsupported ``image_format``.
        LabelImportError: at import, a file with unknown classes, missing, extra or duplicate
            rows, empty labels, unreadable content, or rows of earlier rounds that contradict
            the recorded labels (all problems listed, rows named; see
            :meth:`import_label_studio`).
    """

    name = "files"

    def __init__(self, image_format: str = "png"):
        if image_format != "png":
            raise ValueError(f"oracle.image_format={image_format!r}: only 'png' is supported")
        self.image_format = image_format

    def round_dir(self, round: int) -> Path:
        """``<run_dir>/queries/round_<round>``."""
        return self.run_dir / "queries" / f"round_{int(round)}"

    # ------------------------------------------------------------------ labelling
    def label(self, request: LabelRequest) -> LabelResult:
        d = self.round_dir(request.round)
        export = next((d / n for n in EXPORT_NAMES if (d / n).is_file()), None)
        csv_path = d / CSV_NAME
        if export is not None:
            result, notes = self.import_label_studio(export, request, with_notes=True)
        elif csv_path.is_file() and self._csv_has_labels(csv_path):
            export = csv_path
            result, notes = self.import_csv(csv_path, request, with_notes=True)
        else:
            if not csv_path.is_file():
                self.write_batch(request)
            self._instructions(request)
            return LabelResult(idx=np.empty(0, dtype=np.int64), labels=np.empty(0, dtype=np.int64), pending=True)
        progress.console.print(f"Imported {len(result.idx)} labels from {export}"
                               + "".join(f"\n  {n}" for n in notes), soft_wrap=True)
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
    def write_batch(self, request: LabelRequest) -> Path:
        """Write images, ``labels.csv``, Label Studio tasks and config and ``README.txt`` for
        ``request``; returns the round folder. An existing ``labels.csv`` is never overwritten."""
        d = self.round_dir(request.round)
        names = self.data.class_names
        rows, tasks = [], []
        for k, i in enumerate(int(j) for j in request.idx):
            img = save_png(self.data.train, i, d / "images" / f"{i}.png")
            rel = img.relative_to(d).as_posix()
            sugg = None if request.predicted is None else names[int(request.predicted[k])]
            conf = None if request.confidence is None else float(request.confidence[k])
            rows.append([i, rel, sugg or "", "" if conf is None else f"{conf:.4f}", ""])
            tasks.append(label_studio.task(i, img, rel, request.round, sugg, conf))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([list(CSV_COLUMNS), *rows])
        csv_path = d / CSV_NAME
        if not csv_path.exists():
            atomic_write_text(csv_path, buf.getvalue())
        atomic_write_text(d / TASKS_NAME, json.dumps(tasks, indent=1))
        atomic_write_text(d / CONFIG_NAME, label_studio.labelling_config(names))
        atomic_write_text(d / README_NAME, round_readme(d, request.round, len(rows), names))
        return d

    # ------------------------------------------------------------------ importing
    @staticmethod
    def _csv_has_labels(path: Path) -> bool:
        """True when some row has a label, or the header lost its 'label' column (an error to report)."""
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "label" not in (reader.fieldnames or []):
                return True
            return any((row.get("label") or "").strip() for row in reader)

    def import_csv(self, path: Path, request: LabelRequest, with_notes: bool = False):
        """Labels from a filled ``labels.csv`` (columns ``index`` and ``label`` required).

        Rules as in :meth:`import_label_studio` (rows of samples labelled in earlier rounds
        with the same label are ignored), but every queried index needs its own row.

        Returns:
            The :class:`LabelResult`; with ``with_notes``, ``(result, notes)`` where ``notes``
            are lines saying what was skipped or ignored.

        Raises:
            LabelImportError: listing every problem with its line number; nothing is recorded.
        """
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                missing_cols = [c for c in ("index", "label") if c not in header]
                if missing_cols:
                    raise LabelImportError(f"{path}: missing column(s) {missing_cols}; the header must contain "
                                           f"'index' and 'label' (found {header})")
                rows = [(reader.line_num, row) for row in reader]
        except UnicodeDecodeError as e:
            raise LabelImportError(f"{path}: not a UTF-8 text CSV file ({e})") from None
        entries = [_Row(f"line {n}", row.get("index"), row.get("label"), None, (row.get("file") or "").strip())
                   for n, row in rows]
        result, notes = self._validate(path, entries, request)
        return (result, notes) if with_notes else result

    def import_label_studio(self, path: Path, request: LabelRequest, with_notes: bool = False):
        """Labels from a Label Studio export: JSON (tasks with ``annotations``) or JSON-MIN
        (one flat record per annotation with ``index`` and ``label``).

        - A task's answer is its latest annotation by ``updated_at`` (a re-label or an edit
          wins over the older answer); in JSON-MIN the records of one task ``id`` are merged
          the same way.
        - A latest annotation that is cancelled (Label Studio's Skip button) is a skip: the
          sample returns to the pool. JSON-MIN leaves skipped tasks out, so there a queried
          index without a record is a skip too (an unlabelled task as well: use the JSON
          format to have those reported).
        - A reused project: rows of samples already labelled with the same label are ignored,
          as are still-skipped rows of samples skipped in an earlier round; when a sample was
          queried again, its task of this round (``data.round``) is the one read.

        Returns:
            As :meth:`import_csv`.

        Raises:
            LabelImportError: unreadable JSON; unknown classes; tasks without an answer;
                duplicate tasks for one index in this round; missing tasks (JSON); rows of
                samples never queried; a label that differs from the one already recorded
                (naming the index and both labels); a label for a sample that was skipped
                earlier and is back in the pool. All problems are listed; nothing is recorded.
        """
        try:
            fmt, rows = label_studio.read_export(path)
        except ValueError as e:
            raise LabelImportError(str(e)) from None
        entries = [_Row(r.where, r.index, r.answer, r.round) for r in rows]
        relabelled = sum(1 for r in rows if r.annotations > 1)
        result, notes = self._validate(path, entries, request, missing_is_skip=fmt == label_studio.JSON_MIN)
        notes.insert(0, f"Label Studio {fmt} export: {len(rows)} task(s)"
                     + (f", {relabelled} with several annotations (the latest by updated_at was used)"
                        if relabelled else ""))
        return (result, notes) if with_notes else result

    def _queried_before(self, round: int) -> dict[int, int]:
        """Index -> the first earlier round (< ``round``) whose batch this oracle wrote it in."""
        out: dict[int, int] = {}
        for r in range(int(round)):
            path = self.round_dir(r) / CSV_NAME
            if not path.is_file():
                continue
            with path.open(newline="", encoding="utf-8-sig") as f:
                for row in csv.DictReader(f):
                    try:
                        out.setdefault(int(str(row.get("index")).strip()), r)
                    except ValueError:
                        pass
        return out

    def _validate(self, path: Path, entries: list[_Row], request: LabelRequest,
                  missing_is_skip: bool = False) -> tuple[LabelResult, list[str]]:
        names = self.data.class_names
        wanted = [int(i) for i in request.idx]
        wanted_set = set(wanted)
        known = request.labelled
        before = self._queried_before(request.round)
        errors: list[str] = []
        unknown_class = False
        # 1. Each row: integer index and a parsed answer (class number, SKIP, or EMPTY).
        by_index: dict[int, list[tuple[_Row, object]]] = {}
        for row in entries:
            try:
                i = int(str(row.index).strip())
            except (TypeError, ValueError):
                errors.append(f"{row.where}: index {row.index!r} is not an integer")
                continue
            text = "" if row.label is None else str(row.label).strip()
            if text == "":
                answer: object = EMPTY
            elif text.lower() in SKIP_WORDS:
                answer = SKIP
            else:
                try:
                    answer = parse_label(text, names)
                except ValueError:
                    errors.append(f"{row.where} (index {i}): unknown class {text!r}")
                    unknown_class = True
                    answer = BAD
            by_index.setdefault(i, []).append((row, answer))
        # 2. Per index: this round's answer, or a row of an earlier round to check and ignore.
        answers: dict[int, object] = {}
        same = kept = skipped_before = 0
        for i, rows in by_index.items():
            if i in wanted_set:
                # a row whose image is not its index's was shuffled (e.g. one column sorted alone)
                for row, _ in rows:
                    if row.file and Path(row.file).stem != str(i):
                        errors.append(f"{row.where} (index {i}): file {row.file!r} is not the image of this index "
                                      f"(images/{i}.png): the label would sit on another image")
                if len(rows) > 1:  # a reused project may hold an older task of a re-queried sample
                    this_round = [(r, a) for r, a in rows if r.round == request.round]
                    if len(this_round) == 1:
                        rows = this_round
                first, answer = rows[0]
                for row, _ in rows[1:]:
                    errors.append(f"{row.where}: duplicate row for index {i} (already on {first.where})")
                if answer is BAD:
                    pass  # reported above
                elif answer is EMPTY:
                    hint = "; write a class or 'skip'" if path.suffix != ".json" else \
                        "; the task has no annotation yet: label it or press Skip in Label Studio"
                    errors.append(f"{first.where} (index {i}): the label is empty{hint}")
                elif len(rows) == 1:
                    answers[i] = answer
                continue
            old = int(known[i]) if known is not None and 0 <= i < len(known) else -1
            for row, answer in rows:
                if answer is BAD:
                    continue  # reported above
                if old >= 0:  # labelled in an earlier round: never changed, never unlabelled
                    if answer == old:
                        same += 1
                    elif answer in (SKIP, EMPTY):
                        kept += 1
                    else:
                        errors.append(f"{row.where}: index {i} is already labelled {names[old]!r}, this row says "
                                      f"{names[int(answer)]!r}; a recorded label is never changed (make the "
                                      "row agree or remove it)")
                elif i in before:  # queried by this run before (its batch files), not labelled: skipped
                    r0 = before[i]
                    if answer in (SKIP, EMPTY):
                        skipped_before += 1
                    else:
                        errors.append(f"{row.where}: index {i} was skipped in round {r0} and is back in the pool; "
                                      f"it cannot take the label {names[int(answer)]!r} in round {request.round} "
                                      "(remove that annotation, or export only this round's tasks)")
                else:
                    errors.append(f"{row.where}: index {i} was not queried in round {request.round} (extra row)")
        missing = [i for i in wanted if i not in by_index]
        if missing and not missing_is_skip:
            errors.append(f"missing rows for indices {missing} (every queried sample needs a row"
                          + ("; label or skip their tasks in Label Studio, then export again)"
                             if path.suffix == ".json" else ")"))
        if errors:
            allowed = ""
            if unknown_class:
                allowed = "\nallowed classes: " + ", ".join(f"{k}={n}" for k, n in enumerate(names[:50]))
            raise LabelImportError(f"cannot import {path}: {len(errors)} problem(s), nothing was imported:\n  "
                                   + "\n  ".join(errors) + allowed)
        for i in missing:  # JSON-MIN: no record = skipped (or never labelled) in Label Studio
            answers[i] = SKIP
        idx = [i for i in wanted if answers[i] != SKIP]
        skips = [i for i in wanted if answers[i] == SKIP]
        notes = []
        if skips:
            notes.append(f"{len(skips)} skipped, back to the pool: indices {skips}"
                         + (f" ({len(missing)} without a record in the JSON-MIN export: skipped or not "
                            "labelled in Label Studio)" if missing else ""))
        if same:
            notes.append(f"{same} row(s) of samples labelled in earlier rounds ignored (same label)")
        if kept:
            notes.append(f"{kept} row(s) without a label for samples labelled in earlier rounds ignored "
                         "(a recorded label is kept)")
        if skipped_before:
            notes.append(f"{skipped_before} row(s) of samples skipped in earlier rounds ignored (still skipped)")
        return (LabelResult(idx=np.asarray(idx, dtype=np.int64),
                            labels=np.asarray([answers[i] for i in idx], dtype=np.int64),
                            info={"skipped": float(len(skips))}), notes)


@dataclass
class _Row:
    """One row of an imported file: where it is, its raw index and label, its task's round."""

    where: str
    index: object
    label: object
    round: int | None
    file: str = ""  # labels.csv: the image written for the index (images/<index>.png)


def round_readme(d: Path, round: int, n: int, class_names: list[str]) -> str:
    """Text of a round folder's ``README.txt``: how to fill ``labels.csv`` and the exact Label
    Studio steps (the same as alframe's README, section "Label Studio"), with this folder's paths.

    Args:
        d: the round folder (absolute paths are written so the commands can be pasted).
        round: the round number.
        n: number of queried samples.
        class_names: ``[C]`` class names.
    """
    d = Path(d).resolve()
    keys = label_studio.hotkeys(len(class_names))
    shown = ", ".join(f"{k}={c}" + (f" [key {h}]" if h else "") for k, (c, h) in enumerate(zip(class_names, keys, strict=True)))
    return f"""alframe query batch, round {round}: {n} samples.

Option 1: a spreadsheet. Fill the 'label' column of {CSV_NAME} (class name or number; 'skip'
returns the sample to the pool). Keep one row per index; do not add or remove rows.

Option 2: Label Studio (steps checked with Label Studio 1.23.2).
 1. Start it so that it may serve files from this disk (without this the images do not show and
    Label Studio says "There was an issue loading URL from $image value"):
      LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/ label-studio start
 2. Create a project. Settings > Labeling Interface > Code: paste {CONFIG_NAME}.
    Each class has its own hotkey (classes 0-9: keys 0-9; with more classes: letters, then shift+letter).
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
    JSON-MIN leaves skipped tasks out: a task without a record there counts as skipped, so an
    unfinished task is skipped too. JSON reports unfinished tasks instead.
 7. You may keep one project for all rounds: import each round's {TASKS_NAME} into it and export
    all tasks. Rows of samples already labelled with the same label are ignored; a different label
    stops the import, naming the index and both labels.

Then run the same alframe command again with loop.resume=true. A file with a problem (unknown
class, empty label, missing, extra or duplicate rows) is reported row by row and nothing of it is
imported.

Classes: {shown}
"""
