"""Hand-off to another labelling tool: query batches as files, labels imported on resume.

Each round the oracle writes ``<run_dir>/queries/round_<r>/``:

- ``images/<index>.png``: the queried samples;
- ``labels.csv``: ``index,file,suggested_label,confidence,label`` with the ``label`` column
  empty, for a person, a spreadsheet or a vendor to fill;
- ``label_studio_tasks.json`` and ``label_studio_config.xml``: a Label Studio project
  (image + single-choice classes, the model's suggestion as a pre-annotation);
- ``README.txt``: what to fill in.

The run then stops (pending). Running the same command with ``loop.resume=true`` imports
``export.json`` (a Label Studio JSON or JSON-MIN export saved into that folder) when present,
otherwise the filled ``labels.csv``. The whole file is validated before anything is recorded.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from alframe import progress
from alframe.config import ConfigError
from alframe.oracles.answers import SKIP, atomic_write_text
from alframe.oracles.base import LabelRequest, LabelResult, Oracle, parse_label
from alframe.oracles.render import save_png

CSV_NAME = "labels.csv"
TASKS_NAME = "label_studio_tasks.json"
CONFIG_NAME = "label_studio_config.xml"
EXPORT_NAMES = ("export.json", "label_studio_export.json")
CSV_COLUMNS = ["index", "file", "suggested_label", "confidence", "label"]
SKIP_WORDS = (SKIP, "-")


class LabelImportError(ConfigError):
    """A filled labels file cannot be imported; the message lists every bad row. Nothing of
    the file was recorded."""


class FilesOracle(Oracle):
    """Writes each query batch as files for an external tool and imports the labels on resume.

    Args:
        image_format: ``png`` (lossless; the only format written).

    Raises:
        ValueError: an unsupported ``image_format``.
        LabelImportError: at import, a file with unknown classes, missing, extra or duplicate
            rows, empty labels or unreadable content (all problems listed, rows named).
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
            result = self.import_label_studio(export, request)
            progress.console.print(f"Imported {len(result.idx)} labels from {export}", soft_wrap=True)
            return result
        if csv_path.is_file() and self._csv_has_labels(csv_path):
            result = self.import_csv(csv_path, request)
            progress.console.print(f"Imported {len(result.idx)} labels from {csv_path}", soft_wrap=True)
            return result
        if not csv_path.is_file():
            self.write_batch(request)
        self._instructions(request)
        return LabelResult(idx=np.empty(0, dtype=np.int64), labels=np.empty(0, dtype=np.int64), pending=True)

    def _instructions(self, request: LabelRequest) -> None:
        d = self.round_dir(request.round)
        names = self.data.class_names
        shown = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + ", ..."
        progress.console.print(
            f"[yellow]Labels needed for round {request.round}: {len(request.idx)} samples in {d}[/yellow]\n"
            f"  Fill the 'label' column of {d / CSV_NAME} with a class name or number "
            f"({shown}; 'skip' returns a sample to the pool),\n"
            f"  or import {d / TASKS_NAME} into Label Studio (labelling config {d / CONFIG_NAME}) and save "
            f"its JSON export as {d / EXPORT_NAMES[0]}.\n"
            "  Then run the same command again with loop.resume=true.", soft_wrap=True)

    # ------------------------------------------------------------------ writing a batch
    def write_batch(self, request: LabelRequest) -> Path:
        """Write images, ``labels.csv``, Label Studio tasks and config for ``request``; returns
        the round folder. An existing ``labels.csv`` is never overwritten."""
        d = self.round_dir(request.round)
        names = self.data.class_names
        rows, tasks = [], []
        for k, i in enumerate(int(j) for j in request.idx):
            img = save_png(self.data.train, i, d / "images" / f"{i}.png")
            rel = img.relative_to(d).as_posix()
            sugg = None if request.predicted is None else names[int(request.predicted[k])]
            conf = None if request.confidence is None else float(request.confidence[k])
            rows.append([i, rel, sugg or "", "" if conf is None else f"{conf:.4f}", ""])
            task = {"data": {"image": f"/data/local-files/?d={img.resolve().as_posix().lstrip('/')}",
                             "index": i, "file": rel, "suggested_label": sugg}}
            if sugg is not None:
                task["predictions"] = [{"model_version": f"alframe round {request.round - 1}", "score": conf,
                                        "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                    "value": {"choices": [sugg]}}]}]
            tasks.append(task)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([list(CSV_COLUMNS), *rows])
        csv_path = d / CSV_NAME
        if not csv_path.exists():
            atomic_write_text(csv_path, buf.getvalue())
        atomic_write_text(d / TASKS_NAME, json.dumps(tasks, indent=1))
        choices = "\n".join(f'    <Choice value="{_xml(n)}"/>' for n in names)
        atomic_write_text(d / CONFIG_NAME, "<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
                          f"  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInLine=\"true\">\n"
                          f"{choices}\n  </Choices>\n</View>\n")
        atomic_write_text(d / "README.txt", (
            f"alframe query batch, round {request.round}: {len(rows)} samples.\n\n"
            f"Option 1: fill the 'label' column of {CSV_NAME} (class name or number; 'skip' returns the sample\n"
            "to the pool). Keep one row per index; do not add or remove rows.\n"
            f"Option 2: Label Studio. Create a project with the labelling config in {CONFIG_NAME}, serve\n"
            "local files with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and\n"
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/ , import "
            f"{TASKS_NAME}, label, then export as JSON (or JSON-MIN)\nand save the file here as "
            f"{EXPORT_NAMES[0]}.\n\nThen run the same alframe command again with loop.resume=true.\n"
            f"Classes: {', '.join(f'{k}={n}' for k, n in enumerate(names))}\n"))
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

    def import_csv(self, path: Path, request: LabelRequest) -> LabelResult:
        """Labels from a filled ``labels.csv`` (columns ``index`` and ``label`` required).

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
                entries = [(f"line {reader.line_num}", row.get("index"), row.get("label"))
                           for row in reader]
        except UnicodeDecodeError as e:
            raise LabelImportError(f"{path}: not a UTF-8 text CSV file ({e})") from None
        return self._validate(path, entries, request)

    def import_label_studio(self, path: Path, request: LabelRequest) -> LabelResult:
        """Labels from a Label Studio export: the JSON format (tasks with ``annotations``) or
        JSON-MIN (flat records with ``index`` and ``label``).

        The latest non-cancelled annotation of a task is used; a task without one counts as
        an empty label.

        Raises:
            LabelImportError: unreadable JSON, or any problem :meth:`import_csv` reports
                (tasks are named by their position and Label Studio id).
        """
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LabelImportError(f"{path}: not a readable JSON file ({e})") from None
        if not isinstance(tasks, list):
            raise LabelImportError(f"{path}: a Label Studio export is a JSON list of tasks, got "
                                   f"{type(tasks).__name__}")
        entries = []
        for n, task in enumerate(tasks, start=1):
            where = f"task {n}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
            if not isinstance(task, dict):
                entries.append((where, None, None))
                continue
            data = task.get("data") if isinstance(task.get("data"), dict) else task
            index, label = data.get("index"), None
            if "annotations" in task:
                done = [a for a in task.get("annotations") or []
                        if isinstance(a, dict) and not a.get("was_cancelled")]
                if done:
                    latest = max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
                    for res in latest.get("result") or []:
                        choices = (res.get("value") or {}).get("choices") if isinstance(res, dict) else None
                        if choices:
                            label = choices[0]
                            break
            else:  # JSON-MIN: the choice sits under the control's name
                label = task.get("label")
                if isinstance(label, dict):
                    label = (label.get("choices") or [None])[0]
                elif isinstance(label, list):
                    label = label[0] if label else None
            entries.append((where, index, label))
        return self._validate(path, entries, request)

    def _validate(self, path: Path, entries: list[tuple[str, object, object]],
                  request: LabelRequest) -> LabelResult:
        names = self.data.class_names
        wanted = [int(i) for i in request.idx]
        wanted_set = set(wanted)
        errors: list[str] = []
        seen: dict[int, str] = {}
        answers: dict[int, int | str] = {}
        unknown_class = False
        for where, raw_index, raw_label in entries:
            try:
                i = int(str(raw_index).strip())
            except (TypeError, ValueError):
                errors.append(f"{where}: index {raw_index!r} is not an integer")
                continue
            if i in seen:
                errors.append(f"{where}: duplicate row for index {i} (already on {seen[i]})")
                continue
            seen[i] = where
            if i not in wanted_set:
                errors.append(f"{where}: index {i} was not queried in round {request.round} (extra row)")
                continue
            text = "" if raw_label is None else str(raw_label).strip()
            if text == "":
                errors.append(f"{where} (index {i}): the label is empty; write a class or 'skip'")
            elif text.lower() in SKIP_WORDS:
                answers[i] = SKIP
            else:
                try:
                    answers[i] = parse_label(text, names)
                except ValueError:
                    errors.append(f"{where} (index {i}): unknown class {text!r}")
                    unknown_class = True
        missing = [i for i in wanted if i not in seen]
        if missing:
            errors.append(f"missing rows for indices {missing} (every queried sample needs a row)")
        if errors:
            allowed = ""
            if unknown_class:
                allowed = "\nallowed classes: " + ", ".join(f"{k}={n}" for k, n in enumerate(names[:50]))
            raise LabelImportError(f"cannot import {path}: {len(errors)} problem(s), nothing was imported:\n  "
                                   + "\n  ".join(errors) + allowed)
        idx = [i for i in wanted if answers[i] != SKIP]
        skipped = sum(1 for i in wanted if answers[i] == SKIP)
        return LabelResult(idx=np.asarray(idx, dtype=np.int64),
                           labels=np.asarray([answers[i] for i in idx], dtype=np.int64),
                           info={"skipped": float(skipped)})


def _xml(text: str) -> str:
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;"))
