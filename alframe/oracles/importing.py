"""Reading what a person's tools give back to the files oracle, treated as untrusted: a
``labels.csv`` as a spreadsheet saves it (encoding, separator, columns, escaped cells) and the
row-by-row check of every imported row (CSV or Label Studio) against the round's hand-off.

A row is accepted only with this run's id, a queried index and exactly that index's image; an
answer is a class, an explicit skip, or nothing yet (pending). Any bad row refuses the whole file.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alframe.errors import LabelImportError
from alframe.oracles import label_studio
from alframe.oracles.answers import SKIP
from alframe.oracles.base import LabelRequest, LabelResult, parse_label
from alframe.spreadsheet import from_spreadsheet

SKIP_WORDS = (SKIP, "-")
EMPTY = object()  # a row without an answer (pending)
BAD = object()  # a row whose class is unknown (already reported)
_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}




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


class Table:
    """A decoded ``labels.csv``: its header and its non-blank rows ``(line, {column: cell})``."""

    header: list[str]
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


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


def read_table(path: Path, columns: list[str]) -> Table:
    """``labels.csv`` decoded and split into rows (``columns``: the header alframe writes, named
    in messages).

    Raises:
        LabelImportError: unreadable, not UTF-8, not comma-separated, unparsable, or with
            two columns of one name.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LabelImportError(f"{path}: cannot be read ({e.strerror or e})") from None
    text = _decode(path, raw)
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
        raise LabelImportError(f"{path} is empty: it needs the header {','.join(columns)} and one row "
                               "per queried sample (delete it and resume to have it written again)")
    header_line, header = rows[0][0], [c.strip() for c in rows[0][1]]
    if "index" not in header:
        _check_separator(path, text, header_line - skipped)
    counts = Counter(c for c in header if c)
    dup = [c for c, n in counts.items() if n > 1]
    if dup:
        where = "; ".join(f"{c!r} in columns " + ", ".join(str(k + 1) for k, h in enumerate(header) if h == c)
                          for c in dup)
        raise LabelImportError(f"{path}: duplicate column(s) {where}: keep one column of each name "
                               "(nothing was imported)")
    table = Table(header)
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


@dataclass


class Row:
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


def _row_round(row: Row, i: int) -> tuple[int | None, str | None]:
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


def _answer(row: Row, names: list[str]) -> tuple[object, str | None]:
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


def check_rows(path: Path, entries: list[Row], request: LabelRequest, names: list[str], n_train: int, run: str,
               batch_of: Callable[[int], set[int] | None],
               fmt: str | None = None) -> tuple[LabelResult, list[str], str | None]:
    """Check every imported row against the round's hand-off and turn the answers into labels.

    Args:
        path: the file (named in messages).
        entries: its rows.
        request: the round's request (``labelled``: the labels recorded so far).
        names: ``[C]`` class names.
        n_train: pool size (valid indices ``0..n_train-1``).
        run: this run's id; every row must carry it.
        batch_of: round -> the indices handed off in that round (None: unknown).
        fmt: ``label_studio.JSON`` / ``JSON_MIN``, or None for labels.csv (every queried
            index needs its row there; a Label Studio task left out is pending).

    Returns:
        ``(result, notes, headline)``: ``result.pending`` when some samples have no answer yet
        or all are skipped (a round needs a label); ``notes`` say what was skipped, ignored or
        is pending; ``headline`` replaces the "Imported ..." line, or None.

    Raises:
        LabelImportError: listing every bad row; nothing is recorded.
    """
    this = int(request.round)
    wanted = [int(i) for i in request.idx]
    wanted_set = set(wanted)
    known = request.labelled
    batches: dict[int, set[int] | None] = {this: (batch_of(this) or set()) | wanted_set}

    def batch(r: int) -> set[int] | None:
        if r not in batches:
            batches[r] = batch_of(r)
        return batches[r]

    def old_label(i: int) -> int:
        return int(known[i]) if known is not None and 0 <= i < len(known) else -1

    errors: list[str] = []
    unknown_class = False
    current: dict[int, list[tuple[Row, object]]] = {}
    seen: set[int] = set()  # indices with a row, good or bad
    same = kept = skipped_before = 0
    for row in entries:
        i = _as_index(row.index)
        if i is None:
            errors.append(f"{row.where}: " + (row.problem if row.problem and row.index is None
                                              else f"index {_show(row.index)} is not an integer"))
            continue
        if not 0 <= i < n_train:
            errors.append(f"{row.where}: index {i} is not a pool index (0..{n_train - 1})")
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
            r, problem = _row_round(row, i)
            if problem:
                problems.append(problem)
            elif r > this:
                problems.append(f"has image {_show(row.image)} of round {r}, after this round {this}")
        answer, unknown = _answer(row, names)
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
