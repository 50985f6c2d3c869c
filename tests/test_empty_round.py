"""A first batch whose every sample was skipped is never committed: the run waits (pending) with
nothing labelled and no model trained, the person's skips are forgotten so the batch is asked
again, and the resumed run goes on with the labels then given."""

from __future__ import annotations

import json

import numpy as np

from alframe.data.digits import digits
from alframe.loop.experiment import Experiment
from alframe.oracles.answers import SKIP, AnswerStore
from alframe.oracles.base import LabelResult, Oracle
from alframe.rundir.state import PoolState

from .conftest import FAST, compose


class SkipsFirstBatch(Oracle):
    """Skips every sample of the first batch it is asked (through the answers file, as the page
    and terminal do), then labels with the stored labels."""

    name = "skips-first"
    uses_suggestion = False

    def label(self, request):
        store = AnswerStore(self.run_dir, request.round, request.idx)
        if not store.answers and not (self.run_dir / "asked_once").exists():
            (self.run_dir / "asked_once").write_text("1")
            for i in request.idx:
                store.set(int(i), SKIP, 1.0)
            return store.result()
        y = self.data.targets[request.idx]
        return LabelResult(idx=np.asarray(request.idx), labels=y.astype(np.int64))


def test_all_skipped_first_batch_waits_and_then_continues(tmp_path, store):
    overrides = [*FAST, "trainer.max_epochs=1", "loop.rounds=1",
                 "oracle._target_=tests.test_empty_round.SkipsFirstBatch"]
    res = Experiment(compose(overrides, tmp_path), tmp_path / "job").run()
    assert res.status == "pending" and res.history == []
    state = PoolState.load(res.run_dir)
    assert state.n_labelled == 0 and state.progress.pending.round == 0 and len(state.progress.pending.idx) == 20
    saved = json.loads((res.run_dir / "answers" / "round_0.json").read_text())
    assert saved["answers"] == []  # the skips are forgotten: the batch is asked again
    res2 = Experiment(compose([*overrides, f"loop.resume={res.run_dir}"], tmp_path), tmp_path / "job2").run()
    assert res2.status == "finished" and [h["n_labelled"] for h in res2.history] == [20, 30]
    state = PoolState.load(res.run_dir)
    lab = state.labelled_idx
    np.testing.assert_array_equal(state.labels[lab], digits().targets[lab])


def test_drop_skips_keeps_labels(tmp_path):
    s = AnswerStore(tmp_path, 0, np.array([3, 4, 5]))
    s.set(3, 1, 2.0)
    s.set(4, SKIP, 1.0)
    s.set(5, SKIP, 1.0)
    assert s.drop_skips() == 2
    again = AnswerStore(tmp_path, 0, np.array([3, 4, 5]))
    assert again.order == [3] and again.answers[3]["label"] == 1
