"""Budget-curve metrics: AUBC and labels-to-target (NumPy only; the report imports them
without loading torch or Lightning)."""

from __future__ import annotations

import numpy as np

#: metrics that ``loop.target_accuracy`` may watch
TARGET_METRICS = ("test_accuracy", "val_accuracy")


def labels_to_target(history: list[dict], target: float | None, metric: str = "test_accuracy") -> float:
    """Number of labels of the first evaluated round whose ``metric`` is >= ``target``.

    Args:
        history: evaluated rounds in order, dicts with ``n_labelled`` and ``metric``.
        target: accuracy in (0, 1], or None.
        metric: ``test_accuracy`` or ``val_accuracy``.

    Returns:
        The number of labels, or NaN when ``target`` is None or never reached.
    """
    if target is None:
        return float("nan")
    for h in history:
        v = h.get(metric)
        if v is not None and v >= float(target):
            return float(h["n_labelled"])
    return float("nan")


def aubc(n_labels, accuracy) -> float:
    """Area under the budget curve (Zhan et al. 2021), normalised to [0, 1].

    Trapezoid area of accuracy over the number of labels (scikit-learn's ``auc``) divided by
    the label range; a single
    point gives its own accuracy.

    Args:
        n_labels: ``[R]`` increasing numbers of labels.
        accuracy: ``[R]`` accuracies in [0, 1].

    Returns:
        The normalised area; NaN for an empty curve.
    """
    x, y = np.asarray(n_labels, dtype=float), np.asarray(accuracy, dtype=float)
    if len(x) == 0:
        return float("nan")
    if len(x) == 1 or x[-1] == x[0]:
        return float(y[-1])
    from sklearn.metrics import auc

    return float(auc(x, y) / (x[-1] - x[0]))
