"""Records of shipped runs: the per-round history (labels, test/validation accuracy, test loss)
and the queried pool indices of a run folder, with what made them (command, alframe version,
commit, threads, machine, date), as JSON. The experiment pages' tables and
``tests/test_records.py`` compare runs against them exactly.

Write the record of a finished run folder (``Run folder:`` in alframe's output)::

    python -m tests.records write --run-dir <run folder> --out experiments/<paper>/records/<name>.json \\
        --threads 1 --command "OMP_NUM_THREADS=1 alframe experiment=... seed=0 dataset.root=<path to mnist10k>"

Compare another run of the same command with it (exit 1 and the first differing round if they differ)::

    python -m tests.records compare --run-dir <run folder> --record experiments/<paper>/records/<name>.json
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import alframe

#: per-round values compared exactly (train_seconds is wall time and is left out)
KEYS = ("round", "n_labelled", "test_accuracy", "val_accuracy", "test_loss")
REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """The CPU model and core count (``/proc/cpuinfo`` where there is one)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def commit() -> str:
    """``git rev-parse --short HEAD`` of this checkout (``+dirty`` when tracked files changed), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_outcome(run_dir: Path) -> dict:
    """The history (:data:`KEYS` of every evaluated round) and the queries (pool indices per round)
    of a run folder."""
    state = json.loads((Path(run_dir) / "pool_state.json").read_text())
    history = [{k: h[k] for k in KEYS if k in h} for h in state["history"]]
    queries: dict[str, list[int]] = {}
    with (Path(run_dir) / "queries.csv").open() as f:
        for row in csv.DictReader(f):
            queries.setdefault(row["round"], []).append(int(row["index"]))
    return {"history": history, "queries": queries}


def make_record(run_dir: Path, command: str, threads: int, made_with: str | None = None, **extra) -> dict:
    """The record of ``run_dir``: :func:`run_outcome` plus what made it (``made_with``: the commit
    of the code that ran; default this checkout's)."""
    return {"command": command, "alframe": alframe.__version__, "commit": made_with or commit(), "threads": threads,
            "machine": machine(), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "date": dt.date.today().isoformat(), **extra,
            **run_outcome(run_dir)}


def differences(got: dict, want: dict) -> list[str]:
    """Where two outcomes differ, first round first (empty: the same to the last bit)."""
    out = []
    gh, wh = got["history"], want["history"]
    if len(gh) != len(wh):
        out.append(f"{len(gh)} evaluated rounds, the record has {len(wh)}")
    for g, w in zip(gh, wh, strict=False):
        if g != w:
            out.append(f"round {w.get('round')}: got {g}, the record has {w}")
    for r in sorted(set(got["queries"]) | set(want["queries"]), key=int):
        if got["queries"].get(r) != want["queries"].get(r):
            out.append(f"round {r} queried {got['queries'].get(r)}, the record has {want['queries'].get(r)}")
    return out


def write(record: dict, path: Path) -> None:
    """``record`` as JSON with one line per round (history) and per round's queries."""
    def block(items: list[str], open_: str, close: str) -> str:
        return open_ + "\n" + ",\n".join(f"  {i}" for i in items) + "\n " + close

    parts = []
    for key, value in record.items():
        if key == "history":
            text = block([json.dumps(h) for h in value], "[", "]")
        elif key == "queries":
            text = block([f"{json.dumps(r)}: {json.dumps(q)}" for r, q in value.items()], "{", "}")
        else:
            text = json.dumps(value)
        parts.append(f" {json.dumps(key)}: {text}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{\n" + ",\n".join(parts) + "\n}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.records", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("write", help="write the record of a finished run folder")
    w.add_argument("--run-dir", required=True, type=Path)
    w.add_argument("--out", required=True, type=Path)
    w.add_argument("--command", required=True, help="the command that made the run, as the page shows it")
    w.add_argument("--threads", required=True, type=int, help="OMP_NUM_THREADS of the run")
    w.add_argument("--commit", default=None, help="commit the run was made with (default: this checkout's HEAD)")
    w.add_argument("--data-root", default=None, type=Path,
                   help="the run's dataset.root: the sha256 of the files under its MNIST/raw go into the record")
    c = sub.add_parser("compare", help="compare a run folder with a record")
    c.add_argument("--run-dir", required=True, type=Path)
    c.add_argument("--record", required=True, type=Path)
    args = p.parse_args(argv)
    if args.what == "write":
        extra = {}
        if args.data_root is not None:
            raw = args.data_root / "MNIST" / "raw"
            extra["data"] = {"sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                        for p in sorted(raw.iterdir()) if p.is_file()}}
        write(make_record(args.run_dir, args.command, args.threads, args.commit, **extra), args.out)
        print(f"Wrote {args.out}")
        return 0
    diff = differences(run_outcome(args.run_dir), json.loads(args.record.read_text()))
    print("\n".join(diff[:5]) if diff else f"{args.run_dir} matches {args.record} round for round")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
