"""Machine labels with evidence (semi-automatic labelling).

The last model labels the rest of the pool; a team keeps only machine labels whose confidence
(the arg-max softmax probability) is at least a threshold t. In a simulation the pool's stored
labels tell how good that is: for each t, how many pool samples reach it (``count``), what
share of the pool that is (``coverage``) and how many of them the model labels correctly
(``accuracy``). The loop logs these every round as MLflow metrics
``machine_labels/t<t>/count|coverage|accuracy`` (step = number of labels) and ``alframe-report``
tabulates the final values per strategy.
"""

from __future__ import annotations

import re

import numpy as np

#: confidence thresholds the loop reports on
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
_KEY = re.compile(r"^machine_labels/t(?P<t>[0-9.]+)/(?P<what>count|coverage|accuracy)$")


def evidence(confidence: np.ndarray, correct: np.ndarray, thresholds=THRESHOLDS) -> list[dict[str, float]]:
    """Count, coverage and accuracy of machine labels at confidence >= t, for each t.

    Args:
        confidence: ``[P] float`` arg-max probability of each pool sample.
        correct: ``[P] bool`` the arg-max class equals the stored label.
        thresholds: confidences in [0, 1].

    Returns:
        One dict per threshold: ``threshold``, ``count`` (samples kept), ``coverage``
        (count / P; NaN for an empty pool), ``accuracy`` (share correct among them; NaN when none).

    Raises:
        ValueError: ``confidence`` and ``correct`` differ in length.
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} must have the same length")
    rows = []
    for t in thresholds:
        keep = confidence >= float(t)
        n = int(keep.sum())
        rows.append({"threshold": float(t), "count": float(n),
                     "coverage": n / len(keep) if len(keep) else float("nan"),
                     "accuracy": float(correct[keep].mean()) if n else float("nan")})
    return rows


def as_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """MLflow metrics ``machine_labels/t<t>/<count|coverage|accuracy>`` of :func:`evidence` rows
    (NaN values left out)."""
    out = {}
    for r in rows:
        for what in ("count", "coverage", "accuracy"):
            if not np.isnan(r[what]):
                out[f"machine_labels/t{r['threshold']:g}/{what}"] = float(r[what])
    return out


def from_metrics(metrics: dict[str, float]) -> dict[float, dict[str, float]]:
    """Parse :func:`as_metrics` keys back: ``{threshold: {"count": .., "coverage": .., "accuracy": ..}}``."""
    out: dict[float, dict[str, float]] = {}
    for k, v in metrics.items():
        m = _KEY.match(k)
        if m:
            out.setdefault(float(m["t"]), {})[m["what"]] = float(v)
    return out
