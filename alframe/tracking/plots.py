"""Budget-curve plots (matplotlib): mean test accuracy against labels, with a band across seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd


# --------------------------------------------------------------------------- output
def plot_budget_curves(curves: pd.DataFrame, title: str = "budget curves", ylabel: str = "test accuracy"):
    """Figure of the mean budget curve per group with a +-1 std band (where std is defined).

    Args:
        curves: output of :func:`mean_curves`.

    Returns:
        A matplotlib Figure (caller saves and closes it); line ``i`` of ``fig.axes[0]`` is the
        ``i``-th group's mean curve, and its band is ``fig.axes[0].collections[i]`` when drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for group in dict.fromkeys(curves.group):
        c = curves[curves.group == group]
        n = int(c.n_seeds.max())
        (line,) = ax.plot(c["labels"], c["mean"], marker="o", markersize=3, label=f"{group} (n={n})")
        std = c["std"].to_numpy()
        if np.isfinite(std).any():
            std = np.nan_to_num(std, nan=0.0)
            ax.fill_between(c["labels"], c["mean"] - std, c["mean"] + std, color=line.get_color(), alpha=0.2,
                            linewidth=0)
    ax.set_xlabel("number of labels")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
