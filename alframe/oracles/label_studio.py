"""Label Studio side of the files oracle: the labelling config and tasks alframe writes, and
the reading of Label Studio's JSON and JSON-MIN exports.

Behaviour checked against a real Label Studio 1.23.2 server (``make label-studio-check``):

- Choices get Label Studio's default hotkeys 1, 2, ..., 9, 0 in order unless each
  ``<Choice>`` sets its own, so alframe always sets them (:func:`hotkeys`).
- ``required="true"`` (with ``requiredMessage``) on ``<Choices>`` stops an annotation without a
  choice from being submitted: the labelling page shows the message and sends nothing (checked in
  chromium by ``scripts/label_studio_browser_check.py``). Pressing the hotkey of the selected
  choice unselects it; another choice's hotkey replaces it (single choice).
- The Skip button stores a *cancelled* annotation (``was_cancelled: true``, empty result).
  JSON exports keep it; JSON-MIN leaves the task out (so there a skip looks like a task not
  labelled yet).
- Task ``data`` is exported as imported: JSON keeps it under ``data``, JSON-MIN flattens its
  keys into each record. alframe's tasks carry ``run`` (the run's id), ``index``, ``round`` and
  ``file``, which the import checks row by row.
- Re-labelling adds an annotation, editing one changes its ``updated_at``. JSON nests all
  annotations of a task; JSON-MIN writes one record per annotation (same task ``id``).
  The latest by ``updated_at`` is the answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: Keys for classes 10.. when there are more than 10 classes: the letters in the order Label
#: Studio itself assigns automatic hotkeys after the digits (``makeComb`` in its editor's
#: ``Hotkey`` module, 1.23.2: "1234567890qwetasdfgzxcvbyiopjklnm"); r, u and h are left out there.
LETTERS = "qwetasdfgzxcvbyiopjklnm"
JSON, JSON_MIN = "JSON", "JSON_MIN"
_IMAGE_PATH = re.compile(r"(?:^|[/=])queries/round_(\d+)/(images/[^/]+)$")


def hotkeys(n_classes: int) -> list[str | None]:
    """The hotkey of each class in alframe's Label Studio config.

    Up to 10 classes: the class number (class ``k`` -> key ``k``). More classes: classes 0-9
    keep the digits, classes 10-32 get the letters of :data:`LETTERS` in order, classes
    33-55 ``shift+`` those letters; classes from 56 on get no hotkey (click them).

    Args:
        n_classes: C >= 1.

    Returns:
        ``[C]`` key strings (``None`` = no hotkey).

    Raises:
        ValueError: ``n_classes`` < 1.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes={n_classes} is invalid: must be >= 1")
    keys: list[str | None] = [str(k) for k in range(min(n_classes, 10))]
    for k in range(10, n_classes):
        j = k - 10
        if j < len(LETTERS):
            keys.append(LETTERS[j])
        elif j < 2 * len(LETTERS):
            keys.append("shift+" + LETTERS[j - len(LETTERS)])
        else:
            keys.append(None)
    return keys


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def labelling_config(class_names: list[str]) -> str:
    """Label Studio labelling config: an image and one single-choice, required ``<Choices>``
    named ``label`` with one ``<Choice>`` per class, each with its hotkey (:func:`hotkeys`).

    Args:
        class_names: ``[C]`` class names, in class-number order.

    Raises:
        ValueError: no classes.
    """
    lines = []
    for name, key in zip(class_names, hotkeys(len(class_names)), strict=True):
        hk = f' hotkey="{key}"' if key else ""
        lines.append(f'    <Choice value="{_xml(name)}"{hk}/>')
    return ("<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            "  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInLine=\"true\" required=\"true\"\n"
            "           requiredMessage=\"Choose a class, or press Skip\">\n"
            + "\n".join(lines) + "\n  </Choices>\n</View>\n")


def task(index: int, image: Path, file: str, round: int, suggestion: str | None,
         confidence: float | None, run: str = "") -> dict:
    """One Label Studio task for pool sample ``index``.

    Args:
        index: absolute train-source index (kept in ``data.index``; the export is matched on it).
        image: the PNG on disk; the task points at it through Label Studio's local-files
            URL ``/data/local-files/?d=<absolute path without the leading />``.
        file: the image path relative to the round folder (``images/<index>.png``).
        round: the round that queried it (``data.round``; tells a reused project's rounds apart).
        suggestion: the model's predicted class name (a pre-annotation), or None.
        confidence: the model's probability of ``suggestion`` (the prediction's score), or None.
        run: the run's id (``data.run``): an export is imported only into the run it came from.
    """
    t: dict = {"data": {"image": f"/data/local-files/?d={Path(image).resolve().as_posix().lstrip('/')}",
                        "run": run, "index": int(index), "round": int(round), "file": file,
                        "suggested_label": suggestion}}
    if suggestion is not None:
        t["predictions"] = [{"model_version": f"alframe round {round - 1}", "score": confidence,
                             "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [suggestion]}}]}]
    return t


@dataclass
class ExportRow:
    """One task of an export, reduced to its answer and the identity fields it carries.

    Attributes:
        where: how to name it in messages (``task 3 (id 37)``).
        index: ``data.index`` as found (validated later).
        answer: the latest annotation's class text (int or str as found), None when it is
            cancelled, has a problem, or the task has no annotation (not labelled yet: pending).
        round: ``data.round`` as found (None when absent).
        annotations: how many annotation records the task had (>1: re-labelled).
        run: ``data.run`` as found (None when absent).
        file: ``data.file`` as found (None when absent).
        image: ``data.image`` as found (None when absent).
        problem: what is wrong with the latest annotation (a submitted annotation without a
            choice, several choices, a malformed record), or None; such a row is refused.
        cancelled: the latest annotation is cancelled (Label Studio's Skip button): a skip.
    """

    where: str
    index: object
    answer: object
    round: object
    annotations: int = 1
    run: object = None
    file: object = None
    image: object = None
    problem: str | None = None
    cancelled: bool = False


def _stamp(rec: dict) -> str:
    # ISO-8601 UTC stamps of one server sort as text; updated_at covers edits.
    return str(rec.get("updated_at") or rec.get("created_at") or "")


def image_round(image: object, file: str) -> int | None:
    """The round ``r`` when the task image URL ``image`` ends with
    ``queries/round_<r>/<file>`` (the image alframe wrote for that task), else None."""
    m = _IMAGE_PATH.search(image) if isinstance(image, str) else None
    return int(m.group(1)) if m and m.group(2) == file else None


def _one_choice(choices: list) -> tuple[object, str | None]:
    """``(answer, problem)`` of the choices of one annotation."""
    if len(choices) == 0:
        return None, "has a submitted annotation with no choice (not a skip): open the task in Label Studio, " \
                     "choose a class or press Skip, then export again"
    if len(choices) > 1:
        return None, f"has an annotation with {len(choices)} choices {choices!r}: one class per task; " \
                     "keep one choice in Label Studio, then export again"
    if not isinstance(choices[0], (str, int)) or isinstance(choices[0], bool):
        return None, f"has a choice {choices[0]!r} that is not a class name"
    return choices[0], None


def _json_answer(ann: dict) -> tuple[object, str | None, bool]:
    """``(answer, problem, cancelled)`` of one JSON annotation: cancelled (Skip button), or its
    one choice."""
    cancelled = ann.get("was_cancelled", False)
    if not isinstance(cancelled, bool):
        return None, f"has was_cancelled={cancelled!r}: must be true or false", False
    if cancelled:
        return None, None, True
    result = ann.get("result")
    if result is None:
        result = []
    if not isinstance(result, list):
        return None, f"has an annotation whose result is {type(result).__name__}, not a list", False
    choices: list = []
    for res in result:
        value = res.get("value") if isinstance(res, dict) else None
        got = value.get("choices") if isinstance(value, dict) else None
        if got is None:
            continue
        if not isinstance(got, list):
            return None, f"has choices {got!r} that are not a list", False
        choices += got
    return (*_one_choice(choices), False)


def _min_answer(rec: dict) -> tuple[object, str | None]:
    """``(answer, problem)`` of one JSON-MIN record: its ``label`` (text, list or
    ``{"choices": [...]}``); no ``label`` is no annotation, unless the record names one."""
    if "label" not in rec:
        if rec.get("annotation_id") is not None:
            return _one_choice([])
        return None, None
    value = rec["label"]
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        return _one_choice(value)
    if value is None or value == "":
        return _one_choice([])
    return _one_choice([value])


def read_export(path: Path) -> tuple[str, list[ExportRow]]:
    """Read a Label Studio JSON or JSON-MIN export.

    JSON: one row per task; the answer is its latest annotation by ``updated_at`` (a
    cancelled one = skip). JSON-MIN: records are grouped by task ``id`` and the latest record
    wins (records of one task carry the same ``id`` and ``index``). A task without
    annotations has answer None (pending). Malformed tasks give rows with a ``problem``.

    Args:
        path: the export file (a JSON list).

    Returns:
        ``(format, rows)``: ``"JSON"`` or ``"JSON_MIN"`` and one :class:`ExportRow` per task,
        in file order. Non-object entries give rows with ``index`` None and a ``problem``.

    Raises:
        ValueError: unreadable JSON or not a list (the message names the file).
    """
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: a Label Studio export is a JSON list of tasks, got {type(records).__name__}")
    fmt = JSON if any(isinstance(r, dict) and "annotations" in r for r in records) else JSON_MIN
    rows: list[ExportRow] = []
    by_task: dict[object, ExportRow] = {}
    stamps: dict[object, str] = {}
    for n, rec in enumerate(records, start=1):
        task_id = rec.get("id") if isinstance(rec, dict) else None
        where = f"task {n}" + (f" (id {task_id})" if isinstance(task_id, (int, str)) else "")
        if not isinstance(rec, dict):
            rows.append(ExportRow(where, None, None, None, problem=f"is {type(rec).__name__}, not a task object"))
            continue
        if fmt == JSON:
            data = rec.get("data") if isinstance(rec.get("data"), dict) else rec
            raw = rec.get("annotations") or []
            anns = [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []
            answer, problem, cancelled = None, None, False
            if not isinstance(raw, list) or len(anns) != len(raw):
                problem = "has annotations that are not a list of objects"
            elif anns:
                answer, problem, cancelled = _json_answer(max(anns, key=_stamp))
            rows.append(ExportRow(where, data.get("index"), answer, data.get("round"), len(anns),
                                  data.get("run"), data.get("file"), data.get("image"), problem, cancelled))
            continue
        # JSON-MIN: one record per annotation (task data flattened in); the same task id again is a re-label.
        answer, problem = _min_answer(rec)
        row = ExportRow(where, rec.get("index"), answer, rec.get("round"), 1, rec.get("run"), rec.get("file"),
                        rec.get("image"), problem)
        key = (task_id, str(rec.get("index"))) if isinstance(task_id, (int, str)) else None
        if key is not None and key in by_task:
            kept = by_task[key]
            kept.annotations += 1
            if _stamp(rec) > stamps[key]:
                kept.answer, kept.problem, stamps[key] = row.answer, row.problem, _stamp(rec)
                kept.run, kept.file, kept.image, kept.round = row.run, row.file, row.image, row.round
            continue
        if key is not None:
            by_task[key], stamps[key] = row, _stamp(rec)
        rows.append(row)
    return fmt, rows
