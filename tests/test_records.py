"""A short shipped configuration rerun against its stored record, exactly: a change that moves
the numbers fails here, and the experiment pages' tables must then be rerun.

``gal2017_mnist_cpu`` (BALD, seed 0: the page's configuration) for 4 rounds on a tiny MNIST written
in the real IDX layout (600 train / 200 test scikit-learn digits), one thread. When a change is
meant to move the numbers, rerun the tables of experiments/gal2017_mnist/README.md and rewrite
the record with the command in :data:`COMMAND`."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from threadpoolctl import threadpool_limits

from .conftest import compose
from .helpers import write_mnist_like
from .records import REPO, differences, make_record, write

RECORD = REPO / "experiments" / "gal2017_mnist" / "records" / "gal2017_mnist_cpu_bald_seed0_tiny.json"
OVERRIDES = ["experiment=gal2017_mnist_cpu", "strategy=bald", "seed=0", "loop.rounds=4", "dataset.download=false"]
DATA = {"n_train": 600, "n_test": 200}
COMMAND = "ALFRAME_WRITE_RECORDS=1 OMP_NUM_THREADS=1 python -m pytest tests/test_records.py -m slow"


@pytest.mark.slow
def test_short_gal2017_cpu_run_matches_its_record(tmp_path, store):
    from alframe.loop.experiment import run_experiment

    root = tmp_path / "data"
    write_mnist_like(root, **DATA)
    data_sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "MNIST" / "raw").iterdir())}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # results depend on the thread count: the record is at one thread
    try:
        with threadpool_limits(1):
            result = run_experiment(compose([*OVERRIDES, f"dataset.root={root}"], tmp_path), tmp_path / "job")
    finally:
        torch.set_num_threads(threads)
    got = make_record(result.run_dir, COMMAND, 1, overrides=OVERRIDES,
                      data={"writer": "tests.helpers.write_mnist_like", **DATA, "sha256": data_sha})
    if os.environ.get("ALFRAME_WRITE_RECORDS") == "1":
        write(got, RECORD)
        pytest.skip(f"wrote {RECORD.relative_to(REPO)}")
    want = json.loads(RECORD.read_text())
    assert got["data"]["sha256"] == want["data"]["sha256"], \
        "the test's input digits changed (scikit-learn's load_digits?): not a change in alframe"
    assert [h["n_labelled"] for h in got["history"]] == [20, 30, 40, 50, 60]
    diff = differences(got, want)
    assert not diff, (f"gal2017_mnist_cpu moved against {RECORD.relative_to(REPO)} (made with alframe "
                      f"{want['alframe']} {want['commit']}, torch {want['torch']}, {want['machine']}): "
                      + "; ".join(diff[:3]) + f". If the change is meant, rerun the tables of "
                      f"experiments/gal2017_mnist/README.md and rewrite the record: {COMMAND}")
