"""Hand-off to another labelling tool: query batches as files, labels imported on resume.

Each round the oracle writes ``<run_dir>/queries/round_<r>/``:

- ``images/<index>.png``: the queried samples;
- ``labels.csv``: ``index,file,suggested_label,confidence,label,run`` with the ``label`` column
  empty, for a person, a spreadsheet or a vendor to fill (cells that a spreadsheet would run as
  a formula are written with a leading ``'``, see :func:`spreadsheet_safe`);
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
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
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
CSV_COLUMNS = ["index", "file", "suggested_label", "confidence", "label", "run"]
REQUIRED_COLUMNS = ("index", "file", "label", "run")
README_NAME = "README.txt"
RUN_ID_NAME = "run_id.txt"  # in <run_dir>/queries/
RUN_ID_LETTERS = "abcdefghjkmnpqrstuvwxyz"  # letters only: a spreadsheet keeps the id as text
SKIP_WORDS = (SKIP, "-")
EMPTY = object()  # a row without an answer (pending)
BAD = object()  # a row whose class is unknown (already reported)
#: first characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


def spreadsheet_safe(value: object) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text: a leading ``'`` is added when it
    starts with ``= + - @``, a tab or a carriage return (OWASP's rule against CSV injection),
    or with a ``'`` that :func:`from_spreadsheet` would take away. None is ``""``."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_START) or (text.startswith("'") and text[1:2] in (*FORMULA_START, "'")):
        return "'" + text
    return text


def from_spreadsheet(text: str) -> str:
    """The value of a cell :func:`spreadsheet_safe` wrote (its leading ``'`` removed); other
    text as it is."""
    if text.startswith("'") and text[1:2] in (*FORMULA_START, "'"):
        return text[1:]
    return text


def image_file(index: int) -> str:
    """The image of pool sample ``index``, relative to its round folder: ``images/<index>.png``."""
    return f"images/{int(index)}.png"


def _as_index(value: object) -> int | None:
    """A pool index given as an int or as decimal digits, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
        return int(value.strip())
    return None


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "...'"




@dataclass
class _Table:
    """A decoded ``labels.csv``: its header and its non-blank rows ``(line, {column: cell})``."""

    header: list[str]
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


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
            table = self._read_table(csv_path) if csv_path.is_file() else None
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
    def _decode(path: Path, raw: bytes) -> str:
        """The text of a labels.csv; LabelImportError naming the encoding found when not UTF-8."""
        if raw[:4] == b"PK\x03\x04":
            raise LabelImportError(f"{path} is a spreadsheet workbook (.xlsx), not CSV text: in the spreadsheet "
                                   "use Save As > 'CSV UTF-8 (Comma delimited)'")
        head = raw[:400]
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) >= 8 and head.count(0) * 3 >= len(head)):
            raise LabelImportError(f"{path} is UTF-16 text (e.g. Excel's 'Unicode Text'), not UTF-8: save it as "
                                   "'CSV UTF-8 (Comma delimited)'")
        if b"\x00" in raw:
            raise LabelImportError(f"{path} holds a NUL byte (offset {raw.index(0)}): not a CSV text file; save it "
                                   "as 'CSV UTF-8 (Comma delimited)'")
        bom = 3 if raw[:3] == b"\xef\xbb\xbf" else 0
        try:
            return raw[bom:].decode("utf-8")
        except UnicodeDecodeError as e:
            try:
                raw.decode("cp1252")
                guess = "it looks like Windows-1252 (Excel's plain 'CSV')"
            except UnicodeDecodeError:
                guess = "it looks like Latin-1 or another 8-bit encoding"
            raise LabelImportError(f"{path} is not UTF-8 (byte 0x{raw[bom + e.start]:02x} at offset {bom + e.start}; "
                                   f"{guess}): save it as 'CSV UTF-8'") from None

    def _read_table(self, path: Path) -> _Table:
        """``labels.csv`` decoded and split into rows.

        Raises:
            LabelImportError: unreadable, not UTF-8, not comma-separated, unparsable, or with
                two columns of one name.
        """
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise LabelImportError(f"{path}: cannot be read ({e.strerror or e})") from None
        text = self._decode(path, raw)
        first, _, rest = text.partition("\n")
        skipped = 0
        if first.strip().lower().startswith("sep="):  # Excel's separator hint line
            sep = first.strip()[4:5]
            if sep != ",":
                raise LabelImportError(f"{path} uses {_SEPARATORS.get(sep, repr(sep))} as separator (its first line "
                                       f"is {first.strip()!r}): save it comma-separated ('CSV UTF-8 (Comma delimited)')")
            text, skipped = rest, 1
        reader = csv.reader(io.StringIO(text))
        rows: list[tuple[int, list[str]]] = []
        try:
            for cells in reader:
                rows.append((reader.line_num + skipped, cells))
        except csv.Error as e:
            raise LabelImportError(f"{path}: line {reader.line_num + skipped} is not readable CSV ({e})") from None
        while rows and not any(c.strip() for c in rows[0][1]):
            rows.pop(0)
        if not rows:
            raise LabelImportError(f"{path} is empty: it needs the header {','.join(CSV_COLUMNS)} and one row "
                                   "per queried sample (delete it and resume to have it written again)")
        header_line, header = rows[0][0], [c.strip() for c in rows[0][1]]
        if "index" not in header:
            self._check_separator(path, text, header_line - skipped)
        counts = Counter(c for c in header if c)
        dup = [c for c, n in counts.items() if n > 1]
        if dup:
            where = "; ".join(f"{c!r} in columns " + ", ".join(str(k + 1) for k, h in enumerate(header) if h == c)
                              for c in dup)
            raise LabelImportError(f"{path}: duplicate column(s) {where}: keep one column of each name "
                                   "(nothing was imported)")
        table = _Table(header)
        for line, cells in rows[1:]:
            if not any(c.strip() for c in cells):
                continue  # a blank line
            extra = [c for c in cells[len(header):] if c.strip()]
            if extra:
                raise LabelImportError(f"{path}: line {line} has {len(cells)} values but the header has "
                                       f"{len(header)} columns (extra {_show(extra)}): a value with a comma must be "
                                       "quoted; nothing was imported")
            table.rows.append((line, {h: c for h, c in zip(header, cells, strict=False) if h}))
        return table

    @staticmethod
    def _check_separator(path: Path, text: str, header_line: int) -> None:
        """LabelImportError when the file is separated by something other than commas."""
        sample = text[:16384]
        found = None
        try:
            found = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            pass
        header = text.splitlines()[header_line - 1] if text else ""
        candidates = [found] if found and found != "," else []
        candidates += [s for s in _SEPARATORS if s not in candidates]
        for sep in candidates:
            if "index" in [c.strip().strip('"') for c in header.split(sep)]:
                raise LabelImportError(f"{path} uses {_SEPARATORS[sep]} as separator, not commas: save it "
                                       "comma-separated (in Excel: 'CSV UTF-8 (Comma delimited)')")

    @staticmethod
    def _has_answers(table: _Table) -> bool:
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
        (``images/<index>.png``); cells may be in the escaped form :func:`spreadsheet_safe`
        writes. ``label``: a class name or number, ``skip`` or ``-`` (a skip: the sample returns
        to the pool), or empty (not answered yet: pending). Every queried index needs its row;
        rows of samples labelled in earlier sessions with the same label are ignored.

        Returns:
            The :class:`LabelResult` (``pending`` when some samples are not answered yet, or
            when every answer is a skip); with ``with_notes``, ``(result, notes)`` where
            ``notes`` are lines saying what was skipped, ignored or is still pending.

        Raises:
            LabelImportError: listing every problem with its line number; nothing is recorded.
        """
        result, notes, headline = self._import_csv(path, self._read_table(path), request)
        notes = ([headline] if headline else []) + notes
        return (result, notes) if with_notes else result

    def _import_csv(self, path: Path, table: _Table, request: LabelRequest):
        missing_cols = [c for c in REQUIRED_COLUMNS if c not in table.header]
        if missing_cols:
            hint = (" (the 'run' column ties the file to this run: fill the labels.csv this run wrote)"
                    if missing_cols == ["run"] else "")
            raise LabelImportError(f"{path}: missing column(s) {missing_cols}; the header must contain "
                                   f"{', '.join(repr(c) for c in REQUIRED_COLUMNS)} (found {table.header}){hint}")

        def cell(row: dict, name: str) -> str:
            return from_spreadsheet((row.get(name) or "").strip())

        entries = [_Row(f"line {n}", cell(row, "index"), (row.get("label") or "").strip(), int(request.round),
                        run=cell(row, "run"), file=cell(row, "file"), csv=True)
                   for n, row in table.rows]
        return self._validate(path, entries, request)

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
        entries = [_Row(r.where, r.index, r.answer, r.round, run=r.run, file=r.file, image=r.image,
                        problem=r.problem, cancelled=r.cancelled) for r in rows]
        relabelled = sum(1 for r in rows if r.annotations > 1)
        result, notes, headline = self._validate(path, entries, request, fmt=fmt)
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

    def _row_round(self, row: _Row, i: int) -> tuple[int | None, str | None]:
        """``(round, problem)`` of a Label Studio row: its image must be this index's image of a
        round folder, and ``data.round`` (when present) that round."""
        r_img = label_studio.image_round(row.image, image_file(i))
        if r_img is None:
            return None, (f"has image {_show(row.image)}, not the image of index {i} in this run's queries "
                          f"(.../queries/round_<r>/{image_file(i)})")
        if row.round is None:
            return r_img, None
        if not isinstance(row.round, int) or isinstance(row.round, bool):
            return None, f"has round {_show(row.round)}, not a round number"
        if row.round != r_img:
            return None, f"has round {row.round}, but its image is of round {r_img}"
        return r_img, None

    def _answer(self, row: _Row, names: list[str]) -> tuple[object, str | None]:
        """``(answer, unknown class text)``: a class number, SKIP, EMPTY, or BAD."""
        if row.cancelled:
            return SKIP, None
        value = row.label
        if value is None:
            return EMPTY, None
        text = value.strip() if isinstance(value, str) else value
        if text == "":
            return EMPTY, None
        plain = from_spreadsheet(text) if isinstance(text, str) else text
        if row.csv and str(plain).lower() in SKIP_WORDS:
            return SKIP, None
        for candidate in (plain, text) if plain != text else (text,):
            try:
                return parse_label(candidate, names), None
            except ValueError:
                pass
        return BAD, str(text) if isinstance(text, str) else _show(text)

    def _validate(self, path: Path, entries: list[_Row], request: LabelRequest,
                  fmt: str | None = None) -> tuple[LabelResult, list[str], str | None]:
        """Check every row against this run's hand-off; ``(result, notes, headline)``.

        Raises:
            LabelImportError: listing every bad row; nothing is recorded.
        """
        names = self.data.class_names
        run = self.run_id
        this = int(request.round)
        wanted = [int(i) for i in request.idx]
        wanted_set = set(wanted)
        known = request.labelled
        batches: dict[int, set[int] | None] = {this: (self._batch_of(this) or set()) | wanted_set}

        def batch(r: int) -> set[int] | None:
            if r not in batches:
                batches[r] = self._batch_of(r)
            return batches[r]

        def old_label(i: int) -> int:
            return int(known[i]) if known is not None and 0 <= i < len(known) else -1

        errors: list[str] = []
        unknown_class = False
        current: dict[int, list[tuple[_Row, object]]] = {}
        seen: set[int] = set()  # indices with a row, good or bad
        same = kept = skipped_before = 0
        for row in entries:
            i = _as_index(row.index)
            if i is None:
                errors.append(f"{row.where}: " + (row.problem if row.problem and row.index is None
                                                  else f"index {_show(row.index)} is not an integer"))
                continue
            if not 0 <= i < self.data.n_train:
                errors.append(f"{row.where}: index {i} is not a pool index (0..{self.data.n_train - 1})")
                continue
            seen.add(i)
            problems = [row.problem] if row.problem else []
            if row.run in (None, ""):
                problems.append(f"has no run id: it was not made from this run's hand-off (run {run!r})")
            elif row.run != run:
                problems.append(f"has run {_show(row.run)}, not this run's {run!r}: it comes from another run "
                                "folder or Label Studio project")
            if row.file != image_file(i):
                problems.append(f"has file {_show(row.file)}, not {image_file(i)!r} (the image of index {i})")
            r = this
            if not row.csv:
                r, problem = self._row_round(row, i)
                if problem:
                    problems.append(problem)
                elif r > this:
                    problems.append(f"has image {_show(row.image)} of round {r}, after this round {this}")
            answer, unknown = self._answer(row, names)
            if unknown is not None:
                problems.append(f"unknown class {unknown!r}")
                unknown_class = True
            if problems:
                errors.append(f"{row.where} (index {i}): " + "; ".join(problems))
                continue
            if r == this and i in wanted_set:
                current.setdefault(i, []).append((row, answer))
                continue
            # a row of a sample not asked for now: it must agree with what is recorded
            handed = batch(r)
            old = old_label(i)
            if handed is not None and i not in handed:
                errors.append(f"{row.where}: index {i} was not queried in round {r} (extra row)")
            elif old >= 0:  # labelled earlier: never changed, never unlabelled
                if answer == old:
                    same += 1
                elif answer in (SKIP, EMPTY):
                    kept += 1
                else:
                    errors.append(f"{row.where}: index {i} is already labelled {names[old]!r}, this row says "
                                  f"{names[int(answer)]!r}; a recorded label is never changed (make the "
                                  "row agree or remove it)")
            elif r < this and handed is not None:  # queried in round r, not labelled: skipped there
                if answer in (SKIP, EMPTY):
                    skipped_before += 1
                else:
                    errors.append(f"{row.where}: index {i} was skipped in round {r} and is back in the pool; "
                                  f"it cannot take the label {names[int(answer)]!r} in round {this} "
                                  "(remove that annotation, or export only this round's tasks)")
            else:
                errors.append(f"{row.where}: index {i} was not queried in round {r} (extra row)")
        answers: dict[int, object] = {}
        for i, rows in current.items():
            first, answer = rows[0]
            for row, _ in rows[1:]:
                errors.append(f"{row.where}: duplicate row for index {i} (already on {first.where})")
            if len(rows) == 1:
                answers[i] = answer
        missing = [i for i in wanted if i not in seen]  # Label Studio: not exported yet, pending
        if missing and fmt is None:
            errors.append(f"missing rows for indices {missing} (every queried sample needs its row; "
                          "rows are never removed)")
        if errors:
            allowed = ""
            if unknown_class:
                allowed = "\nallowed classes: " + ", ".join(f"{k}={n}" for k, n in enumerate(names[:50]))
            raise LabelImportError(f"cannot import {path}: {len(errors)} problem(s), nothing was imported:\n  "
                                   + "\n  ".join(errors) + allowed)
        idx = [i for i in wanted if answers.get(i) not in (SKIP, EMPTY, None)]
        skips = [i for i in wanted if answers.get(i) is SKIP]
        pending = [i for i in wanted if i not in idx and i not in skips]
        before = [i for i in batches[this] if i not in wanted_set and old_label(i) >= 0]  # earlier sessions
        notes, headline = [], None
        all_skipped = bool(skips) and not idx and not pending and not before
        if all_skipped:
            headline = (f"Nothing imported from {path}: all {len(skips)} samples of round {this} are skipped, and a "
                        "round needs at least one label; the round stays pending: label at least one sample, "
                        "then run again with loop.resume=true")
        elif pending:
            n_all = len(batches[this])
            notes.append(f"{len(before) + len(idx)} of {n_all} labelled"
                         + (f", {len(skips)} skipped" if skips else "")
                         + f"; {len(pending)} still pending: indices {pending[:20]}"
                         + (" ..." if len(pending) > 20 else ""))
            if fmt == label_studio.JSON_MIN:
                notes.append("JSON-MIN leaves out the tasks skipped in Label Studio: skipped ones stay pending "
                             "there; export JSON to have the skips counted")
            notes.append("label them (or skip them), save the file again and run again with loop.resume=true")
        elif skips:
            notes.append(f"{len(skips)} skipped, back to the pool: indices {skips}")
        if same:
            notes.append(f"{same} row(s) of samples labelled earlier ignored (same label)")
        if kept:
            notes.append(f"{kept} row(s) without a label for samples labelled earlier ignored "
                         "(a recorded label is kept)")
        if skipped_before:
            notes.append(f"{skipped_before} row(s) of samples skipped in earlier rounds ignored (still skipped)")
        result = LabelResult(idx=np.asarray(idx, dtype=np.int64),
                             labels=np.asarray([answers[i] for i in idx], dtype=np.int64),
                             pending=bool(pending) or all_skipped, info={"skipped": float(len(skips))})
        return result, notes, headline


@dataclass
class _Row:
    """One row of an imported file: where it is, its raw index and answer, and the identity
    fields it carries (run id, image file; for Label Studio its round and image URL)."""

    where: str
    index: object
    label: object  # CSV: the cell text; Label Studio: class text, SKIP, or None (no annotation)
    round: object
    run: object = None
    file: object = None
    image: object = None
    problem: str | None = None  # a malformed Label Studio annotation, refused
    cancelled: bool = False  # Label Studio's Skip button
    csv: bool = False


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
