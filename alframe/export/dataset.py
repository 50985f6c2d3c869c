"""``alframe-export``: the labelled dataset of a run, to carry away.

::

    alframe-export RUN_DIR --format csv|imagefolder|label-studio --out DIR [--accept-above T] [--link]

Works on any run folder: finished, waiting for labels or interrupted. Every sample of the pool
gets one entry:

- labelled samples carry the label an oracle gave, with source ``human`` (a person: terminal,
  web, files, seed labels) or ``stored``/``noisy`` (simulated oracles) and the round;
- the rest of the pool gets the last trained model's prediction as a *machine* label with its
  confidence (arg-max softmax probability); with ``--accept-above T`` only machine labels with
  confidence >= T are kept, the others stay unlabelled (source ``unlabelled``) in every format;
- validation samples held out of the train source (simulations only) are listed in the CSV
  with source ``validation`` and their stored label, and left out of the other formats.

Formats (into ``--out DIR``):

- ``csv``: ``DIR/labels.csv`` with columns ``file,label,source,confidence,round``; ``file`` is
  the path relative to the dataset root for folder datasets, the sample index otherwise;
  ``confidence`` is empty for oracle labels, ``round`` empty for machine labels.
- ``imagefolder``: ``DIR/<class>/<file>`` (copies, or symbolic links with ``--link``), readable
  by torchvision's ``ImageFolder``; datasets not read from files are written as PNGs named by
  index. Unlabelled samples are left out. ``DIR`` must be new or empty.
- ``label-studio``: ``DIR/tasks.json`` (one task per pool image: human labels as
  ``annotations``, machine labels as ``predictions`` i.e. pre-annotations a team accepts or
  corrects) and ``DIR/label_studio_config.xml``. Images are referenced as Label Studio local
  files (``/data/local-files/?d=...``; serve them with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alframe.errors import ConfigError
from alframe.export.mlmodel import Preprocessing
from alframe.export.runfolder import LoadedRun, load_run
from alframe.scoring.pool import compute_outputs

FORMATS = ("csv", "imagefolder", "label-studio")
CSV_NAME = "labels.csv"
CSV_COLUMNS = ("file", "label", "source", "confidence", "round")
TASKS_NAME = "tasks.json"
LS_CONFIG_NAME = "label_studio_config.xml"
MACHINE, UNLABELLED, VALIDATION = "machine", "unlabelled", "validation"


@dataclass
class Entry:
    """One train-source sample in the export.

    Attributes:
        index: absolute index in the train source.
        file: path relative to the dataset root (folder datasets) or the index as text.
        label: class index, or -1 for unlabelled.
        source: ``human``, ``stored``, ``noisy``, ``machine``, ``unlabelled`` or ``validation``.
        confidence: the model's arg-max probability for pool samples (None for oracle labels
            or without a model).
        round: the round an oracle labelled the sample in (None otherwise).
    """

    index: int
    file: str
    label: int
    source: str
    confidence: float | None
    round: int | None


def entries(run: LoadedRun, accept_above: float | None = None, batch_size: int = 512) -> list[Entry]:
    """One :class:`Entry` per train-source sample, in index order (see the module docstring).

    Args:
        run: a loaded run folder.
        accept_above: keep machine labels only at confidence >= this (None keeps all).
        batch_size: samples per forward pass when predicting the pool.

    Raises:
        ValueError: ``accept_above`` outside [0, 1].
    """
    if accept_above is not None and not 0.0 <= accept_above <= 1.0:
        raise ValueError(f"--accept-above {accept_above} is invalid: must be a confidence in [0, 1]")
    data, state = run.data, run.state
    files = data.extras.get("files") or [str(i) for i in range(state.n)]
    pool = state.pool_idx
    conf = np.full(state.n, np.nan, dtype=np.float64)
    pred = np.full(state.n, -1, dtype=np.int64)
    if run.net is not None and len(pool):
        probs = compute_outputs(run.net, data.train, pool, {"probs"}, batch_size=batch_size).probs
        c, p = probs.max(dim=1)
        conf[pool], pred[pool] = c.numpy(), p.numpy()
    source = run.label_source
    targets = data.targets
    out = []
    for i in range(state.n):
        if state.labelled_round[i] >= 0:
            out.append(Entry(i, files[i], int(state.labels[i]), source, None, int(state.labelled_round[i])))
        elif not state.available[i]:  # validation hold-out (a labelled split of a simulation)
            y = int(targets[i]) if targets is not None else -1
            out.append(Entry(i, files[i], y, VALIDATION, None, None))
        elif pred[i] >= 0 and (accept_above is None or conf[i] >= accept_above):
            out.append(Entry(i, files[i], int(pred[i]), MACHINE, float(conf[i]), None))
        else:
            out.append(Entry(i, files[i], -1, UNLABELLED, None if np.isnan(conf[i]) else float(conf[i]), None))
    return out


def write_csv(rows: Sequence[Entry], class_names: Sequence[str], out: Path) -> Path:
    """``out/labels.csv`` (UTF-8) with :data:`CSV_COLUMNS`; returns its path.

    A cell a spreadsheet would run as a formula (a class or file name starting with ``= + - @``,
    a tab or a carriage return) is written with a leading ``'`` (OWASP's rule against CSV
    injection; :func:`alframe.oracles.importing.from_spreadsheet` undoes it)."""
    from alframe.spreadsheet import spreadsheet_safe

    out.mkdir(parents=True, exist_ok=True)
    path = out / CSV_NAME
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for e in rows:
            w.writerow([spreadsheet_safe(c) for c in (
                e.file, class_names[e.label] if e.label >= 0 else "", e.source,
                "" if e.confidence is None else f"{e.confidence:.6f}", "" if e.round is None else e.round)])
    return path


def _pixels(run: LoadedRun, i: int) -> np.ndarray:
    """Sample ``i`` as ``uint8 [H, W]`` or ``[H, W, 3]``: the normalisation undone."""
    prep = Preprocessing.from_data(run.data)
    x = run.data.train[i][0].float()
    if prep.mean is not None:
        m = torch.tensor(prep.mean).view(-1, 1, 1)
        s = torch.tensor(prep.std).view(-1, 1, 1)
        x = x * s + m
    a = (x.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def _image_file(run: LoadedRun, e: Entry, images_dir: Path) -> Path:
    """The image file of ``e``: the dataset's own file, or a PNG written into ``images_dir``."""
    paths = run.data.extras.get("paths")
    if paths is not None:
        return Path(paths[e.index]).resolve()
    path = images_dir / f"{e.index}.png"
    if not path.is_file():
        images_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pixels(run, e.index)).save(path)
    return path.resolve()


def write_imagefolder(run: LoadedRun, rows: Sequence[Entry], out: Path, link: bool = False) -> int:
    """``out/<class>/<file>`` for every labelled entry (oracle or accepted machine label).

    Returns:
        The number of images written.

    Raises:
        ConfigError: ``out`` exists and is not empty.
    """
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty: imagefolder export needs a new or empty folder "
                          "(files of an older export would mix in)")
    names = run.data.class_names
    has_files = run.data.extras.get("paths") is not None
    n = 0
    for e in rows:
        if e.label < 0 or e.source == VALIDATION:
            continue
        rel = e.file if has_files and not Path(e.file).is_absolute() else f"{Path(e.file).name}"
        dest = out / names[e.label] / (rel if has_files else f"{e.index}.png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if has_files:
            src = _image_file(run, e, out)
            if link:
                os.symlink(src, dest)
            else:
                shutil.copy2(src, dest)
        else:
            Image.fromarray(_pixels(run, e.index)).save(dest)
        n += 1
    return n


def _choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def write_label_studio(run: LoadedRun, rows: Sequence[Entry], out: Path) -> Path:
    """``out/tasks.json`` and ``out/label_studio_config.xml`` (see the module docstring); returns
    the tasks file."""
    from alframe.oracles.label_studio import labelling_config

    out.mkdir(parents=True, exist_ok=True)
    names = run.data.class_names
    tasks = []
    for e in rows:
        if e.source == VALIDATION:
            continue
        img = _image_file(run, e, out / "images")
        task: dict = {"data": {"image": f"/data/local-files/?d={img.as_posix().lstrip('/')}", "file": e.file,
                               "index": e.index}}
        if e.source == MACHINE:
            task["predictions"] = [{"model_version": "alframe last model", "score": e.confidence,
                                    "result": _choice(names[e.label])}]
        elif e.label >= 0:
            task["annotations"] = [{"result": _choice(names[e.label]), "ground_truth": False,
                                    "meta": {"source": e.source, "round": e.round}}]
        tasks.append(task)
    path = out / TASKS_NAME
    path.write_text(json.dumps(tasks, indent=1))
    (out / LS_CONFIG_NAME).write_text(labelling_config(names))  # the oracle's config: one hotkey per class
    return path


def export(run_dir: str | Path, fmt: str, out: str | Path, accept_above: float | None = None,
           link: bool = False) -> tuple[Path, Counter]:
    """Export the run in ``run_dir`` (see the module docstring).

    Returns:
        ``(output folder, number of entries per source)``.

    Raises:
        ConfigError: unknown format, bad ``accept_above``, a run folder that cannot be read, or a
            non-empty ``out`` for imagefolder.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is invalid: must be one of {', '.join(FORMATS)}")
    if accept_above is not None and not 0.0 <= accept_above <= 1.0:
        raise ConfigError(f"--accept-above {accept_above} is invalid: must be a confidence in [0, 1]")
    run = load_run(run_dir)
    rows = entries(run, accept_above)
    out = Path(out)
    if fmt == "csv":
        write_csv(rows, run.data.class_names, out)
    elif fmt == "imagefolder":
        write_imagefolder(run, rows, out, link=link)
    else:
        write_label_studio(run, rows, out)
    counts = Counter(e.source for e in rows)
    if run.net is None:
        counts["no model yet"] = 1
    return out, counts




