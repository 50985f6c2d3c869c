"""The thread default and provenance: training and scoring use ``trainer.threads`` torch threads (1
unless set); every run records its thread count, alframe version and commit as tags.
"""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from alframe.config.fingerprint import config_fingerprint
from alframe.errors import ConfigError
from alframe.loop.experiment import Experiment

from .conftest import compose


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_is_one_thread_and_is_tagged(run, tmp_path, restore_threads):
    torch.set_num_threads(2)
    res = run("loop.rounds=0")
    assert torch.get_num_threads() == 1
    tags = MlflowClient(res.tracking_uri).get_run(res.run_id).data.tags
    assert tags["threads"] == "1"


def test_null_keeps_torchs_own_setting(tmp_path, restore_threads):
    torch.set_num_threads(2)
    Experiment(compose(["trainer.threads=null", "loop.rounds=0"], tmp_path), tmp_path / "job")
    assert torch.get_num_threads() == 2


def test_bad_thread_count_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.threads=0 is invalid: must be an integer >= 1 or null"):
        Experiment(compose(["trainer.threads=0"], tmp_path), tmp_path / "job")


def test_thread_count_may_change_on_resume(tmp_path):
    assert config_fingerprint(compose(["trainer.threads=1"], tmp_path)) == \
        config_fingerprint(compose(["trainer.threads=4"], tmp_path))


def test_runs_record_the_version_and_commit_that_made_them(finished_run):
    import re
    from pathlib import Path

    import tomllib

    import alframe

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert alframe.__version__ == pyproject["project"]["version"]
    tags = MlflowClient(finished_run.tracking_uri).get_run(finished_run.run_id).data.tags
    assert tags["alframe.version"] == alframe.__version__
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", tags["alframe.commit"])  # tests run from a git checkout
    assert tags["threads"] == "1"
