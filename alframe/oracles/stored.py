"""Simulated oracle: labels come from the dataset's stored targets."""

from __future__ import annotations

from alframe.oracles.base import LabelRequest, LabelResult, Oracle


class StoredOracle(Oracle):
    """Answers every request with the stored label (a perfect annotator, for simulations).

    Raises:
        ValueError: at setup, when the dataset has no stored labels (use a human oracle); at
            labelling, when a requested sample's stored label is unknown (-1).
    """

    name = "stored"
    uses_suggestion = False

    def setup(self, data, run_dir) -> None:
        super().setup(data, run_dir)
        if data.targets is None:
            raise ValueError(f"dataset {data.name!r} has no stored labels: oracle=stored cannot "
                             "answer; use a human oracle (oracle=terminal, web or files)")

    def label(self, request: LabelRequest) -> LabelResult:
        y = self.data.targets[request.idx]
        if (y < 0).any():
            raise ValueError(f"no stored label for indices {request.idx[y < 0].tolist()}")
        return LabelResult(idx=request.idx.copy(), labels=y.astype("int64"))
