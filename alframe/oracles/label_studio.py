"""Label Studio side of the files oracle: the labelling config and tasks alframe writes, and
the reading of Label Studio's JSON and JSON-MIN exports.

Behaviour checked against a real Label Studio 1.23.2 server (``make label-studio-check``):

- Choices get Label Studio's default hotkeys 1, 2, ..., 9, 0 in order unless each
  ``<Choice>`` sets its own, so alframe always sets them (:func:`hotkeys`).
- The Skip button stores a *cancelled* annotation (``was_cancelled: true``, empty result).
  JSON exports keep it; JSON-MIN leaves the task out.
- Re-labelling adds an annotation, editing one changes its ``updated_at``. JSON nests all
  annotations of a task; JSON-MIN writes one record per annotation (same task ``id``).
  The latest by ``updated_at`` is the answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from alframe.oracles.answers import SKIP

#: Keys for classes 10.. when there are more than 10 classes: the letters in the order Label
#: Studio itself assigns automatic hotkeys after the digits (``makeComb`` in its editor's
#: ``Hotkey`` module, 1.23.2: "1234567890qwetasdfgzxcvbyiopjklnm"); r, u and h are left out there.
LETTERS = "qwetasdfgzxcvbyiopjklnm"
JSON, JSON_MIN = "JSON", "JSON_MIN"
_ROUND_IN_PATH = re.compile(r"round_(\d+)/images/")


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
    """Label Studio labelling config: an image and one single-choice ``<Choices>`` named
    ``label`` with one ``<Choice>`` per class, each with its hotkey (:func:`hotkeys`).

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
            "  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInLine=\"true\">\n"
            + "\n".join(lines) + "\n  </Choices>\n</View>\n")


def task(index: int, image: Path, file: str, round: int, suggestion: str | None,
         confidence: float | None) -> dict:
    """One Label Studio task for pool sample ``index``.

    Args:
        index: absolute train-source index (kept in ``data.index``; the export is matched on it).
        image: the PNG on disk; the task points at it through Label Studio's local-files
            URL ``/data/local-files/?d=<absolute path without the leading />``.
        file: the image path relative to the round folder (``images/<index>.png``).
        round: the round that queried it (``data.round``; tells a reused project's rounds apart).
        suggestion: the model's predicted class name (a pre-annotation), or None.
        confidence: the model's probability of ``suggestion`` (the prediction's score), or None.
    """
    t: dict = {"data": {"image": f"/data/local-files/?d={Path(image).resolve().as_posix().lstrip('/')}",
                        "index": int(index), "round": int(round), "file": file, "suggested_label": suggestion}}
    if suggestion is not None:
        t["predictions"] = [{"model_version": f"alframe round {round - 1}", "score": confidence,
                             "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [suggestion]}}]}]
    return t


@dataclass
class ExportRow:
    """One task of an export, reduced to its answer.

    Attributes:
        where: how to name it in messages (``task 3 (id 37)``).
        index: ``data.index`` as found (validated later).
        answer: the latest annotation's class text, :data:`~alframe.oracles.answers.SKIP` when
            the latest annotation is cancelled (Skip button), None when there is none.
        round: the round whose tasks it came from (``data.round`` or ``round_<r>/images/`` in
            the image path), None when unknown.
        annotations: how many annotation records the task had (>1: re-labelled).
    """

    where: str
    index: object
    answer: object
    round: int | None
    annotations: int = 1


def _stamp(rec: dict) -> str:
    # ISO-8601 UTC stamps of one server sort as text; updated_at covers edits.
    return str(rec.get("updated_at") or rec.get("created_at") or "")


def _round_of(data: dict) -> int | None:
    if isinstance(data.get("round"), int) and not isinstance(data.get("round"), bool):
        return int(data["round"])
    m = _ROUND_IN_PATH.search(str(data.get("image") or ""))
    return int(m.group(1)) if m else None


def _choice(value: object) -> object:
    """The first choice of a JSON-MIN ``label`` value (text, list or ``{"choices": [...]}``)."""
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        return value[0] if value else None
    return value


def read_export(path: Path) -> tuple[str, list[ExportRow]]:
    """Read a Label Studio JSON or JSON-MIN export.

    JSON: one row per task; the answer is its latest annotation by ``updated_at`` (a
    cancelled one = skip). JSON-MIN: records are grouped by task ``id`` and the latest record
    wins (records of one task carry the same ``id`` and ``index``). A task without
    annotations has answer None.

    Args:
        path: the export file (a JSON list).

    Returns:
        ``(format, rows)``: ``"JSON"`` or ``"JSON_MIN"`` and one :class:`ExportRow` per task,
        in file order. Non-object entries give rows with ``index`` None.

    Raises:
        ValueError: unreadable JSON or not a list (the message names the file).
    """
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: a Label Studio export is a JSON list of tasks, got {type(records).__name__}")
    fmt = JSON if any(isinstance(r, dict) and "annotations" in r for r in records) else JSON_MIN
    rows: list[ExportRow] = []
    by_task: dict[object, ExportRow] = {}
    stamps: dict[object, str] = {}
    for n, rec in enumerate(records, start=1):
        where = f"task {n}" + (f" (id {rec['id']})" if isinstance(rec, dict) and "id" in rec else "")
        if not isinstance(rec, dict):
            rows.append(ExportRow(where, None, None, None))
            continue
        if fmt == JSON:
            data = rec.get("data") if isinstance(rec.get("data"), dict) else rec
            anns = [a for a in rec.get("annotations") or [] if isinstance(a, dict)]
            answer = None
            if anns:
                latest = max(anns, key=_stamp)
                if latest.get("was_cancelled"):
                    answer = SKIP
                else:
                    for res in latest.get("result") or []:
                        choices = (res.get("value") or {}).get("choices") if isinstance(res, dict) else None
                        if choices:
                            answer = choices[0]
                            break
            rows.append(ExportRow(where, data.get("index"), answer, _round_of(data), len(anns)))
            continue
        # JSON-MIN: one record per annotation; the same task id again is a re-label.
        key = (rec.get("id"), str(rec.get("index"))) if "id" in rec else None
        row = ExportRow(where, rec.get("index"), _choice(rec.get("label")), _round_of(rec))
        if key is not None and key in by_task:
            kept = by_task[key]
            kept.annotations += 1
            if _stamp(rec) > stamps[key]:
                kept.answer, stamps[key] = row.answer, _stamp(rec)
            continue
        if key is not None:
            by_task[key], stamps[key] = row, _stamp(rec)
        rows.append(row)
    return fmt, rows
