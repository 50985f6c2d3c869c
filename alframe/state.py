"""Pool state: which samples are labelled, in which round, with which label.

All indices are absolute indices into the experiment's *train source* (the dataset the pool
and the labelled set are drawn from). Samples held out for validation or test are marked
unavailable and can never be labelled or queried.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATE_FILE = "pool_state.npz"
META_FILE = "pool_state.json"


class StateMismatchError(RuntimeError):
    """A saved pool state does not belong to the current dataset or configuration."""


@dataclass
class PoolState:
    """Labelled set and pool of one active-learning run.

    Attributes:
        labelled_round: ``[N] int64``; -1 for samples still in the pool (or held out),
            ``r`` for a sample labelled in round ``r`` (round 0 = initial labelled set).
        labels: ``[N] int64``; -1 where unknown. Set only through :meth:`label`, i.e. only
            with labels an oracle returned.
        available: ``[N] bool``; False for held-out samples (validation/test) that must never
            be queried or labelled.
        meta: free-form JSON-serialisable facts saved with the state (dataset fingerprint,
            config fingerprint, MLflow run id, last evaluated round, ...).
    """

    labelled_round: np.ndarray
    labels: np.ndarray
    available: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, n: int, holdout: np.ndarray | None = None, meta: dict | None = None) -> PoolState:
        """Empty state over ``n`` samples.

        Args:
            n: number of samples in the train source (> 0).
            holdout: ``[H] int`` absolute indices never to be queried (validation split).
            meta: initial metadata.

        Raises:
            ValueError: ``n`` < 1 or a holdout index outside ``[0, n)``.
        """
        if n < 1:
            raise ValueError(f"PoolState needs at least one sample, got n={n}")
        available = np.ones(n, dtype=bool)
        if holdout is not None and len(holdout):
            holdout = np.asarray(holdout, dtype=np.int64)
            if holdout.min() < 0 or holdout.max() >= n:
                raise ValueError(f"holdout indices must lie in [0, {n}), got range "
                                 f"[{holdout.min()}, {holdout.max()}]")
            available[holdout] = False
        return cls(
            labelled_round=np.full(n, -1, dtype=np.int64),
            labels=np.full(n, -1, dtype=np.int64),
            available=available,
            meta=dict(meta or {}),
        )

    # ------------------------------------------------------------------ views
    @property
    def n(self) -> int:
        """Number of samples in the train source."""
        return int(self.labelled_round.shape[0])

    @property
    def labelled_mask(self) -> np.ndarray:
        """``[N] bool``: True for labelled samples."""
        return self.labelled_round >= 0

    @property
    def pool_mask(self) -> np.ndarray:
        """``[N] bool``: True for samples that may still be queried."""
        return self.available & (self.labelled_round < 0)

    @property
    def labelled_idx(self) -> np.ndarray:
        """``[L] int64`` absolute indices of the labelled set, ascending."""
        return np.flatnonzero(self.labelled_mask)

    @property
    def pool_idx(self) -> np.ndarray:
        """``[P] int64`` absolute indices of the pool, ascending."""
        return np.flatnonzero(self.pool_mask)

    @property
    def n_labelled(self) -> int:
        """Number of labels received so far (the budget spent)."""
        return int(self.labelled_mask.sum())

    @property
    def n_pool(self) -> int:
        """Number of samples left in the pool."""
        return int(self.pool_mask.sum())

    @property
    def last_round(self) -> int:
        """Highest round in which a sample was labelled, -1 if none."""
        return int(self.labelled_round.max()) if self.n else -1

    # ------------------------------------------------------------------ mutation
    def label(self, idx: np.ndarray, y: np.ndarray, round: int, num_classes: int | None = None) -> None:
        """Record labels an oracle returned.

        Args:
            idx: ``[k] int`` absolute indices, all currently in the pool, no duplicates.
            y: ``[k] int`` labels in ``[0, num_classes)``.
            round: the round the labels belong to (>= 0).
            num_classes: when given, labels are range-checked against it.

        Raises:
            ValueError: mismatched lengths, duplicates, out-of-range or held-out indices,
                already-labelled indices, or labels outside ``[0, num_classes)``. Nothing is
                written when any check fails.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if idx.shape != y.shape:
            raise ValueError(f"got {len(idx)} indices but {len(y)} labels")
        if round < 0:
            raise ValueError(f"round must be >= 0, got {round}")
        if len(idx) == 0:
            return
        uniq, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate indices in one labelling call: {uniq[counts > 1].tolist()}")
        bad = idx[(idx < 0) | (idx >= self.n)]
        if len(bad):
            raise ValueError(f"indices out of range [0, {self.n}): {bad.tolist()}")
        held = idx[~self.available[idx]]
        if len(held):
            raise ValueError(f"indices are held out (validation/test) and cannot be labelled: {held.tolist()}")
        already = idx[self.labelled_round[idx] >= 0]
        if len(already):
            raise ValueError(f"indices are already labelled: {already.tolist()}")
        if num_classes is not None:
            wrong = (y < 0) | (y >= num_classes)
            if wrong.any():
                raise ValueError(f"labels must lie in [0, {num_classes}), got {y[wrong].tolist()} "
                                 f"for indices {idx[wrong].tolist()}")
        self.labels[idx] = y
        self.labelled_round[idx] = round

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the state atomically into ``directory`` (temp file + ``os.replace``).

        Returns:
            Path of the ``.npz`` file written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        npz_path = directory / STATE_FILE
        atomic_write(npz_path, lambda f: np.savez(
            f, labelled_round=self.labelled_round, labels=self.labels, available=self.available))
        atomic_write(directory / META_FILE,
                      lambda f: f.write(json.dumps(self.meta, indent=2, sort_keys=True).encode()))
        return npz_path

    @classmethod
    def exists(cls, directory: str | os.PathLike) -> bool:
        """True when ``directory`` holds a saved state."""
        return (Path(directory) / STATE_FILE).is_file()

    @classmethod
    def load(cls, directory: str | os.PathLike, expect: dict[str, Any] | None = None) -> PoolState:
        """Load a state saved by :meth:`save`.

        Args:
            directory: the folder holding ``pool_state.npz``/``pool_state.json``.
            expect: metadata entries that must match (e.g. ``dataset_fingerprint``,
                ``config_fingerprint``); a missing or different entry is an error.

        Raises:
            FileNotFoundError: no saved state in ``directory``.
            StateMismatchError: an ``expect`` entry differs from the saved one.
        """
        directory = Path(directory)
        npz_path = directory / STATE_FILE
        if not npz_path.is_file():
            raise FileNotFoundError(f"no saved pool state in {directory} (expected {STATE_FILE})")
        with np.load(npz_path) as z:
            state = cls(labelled_round=z["labelled_round"].astype(np.int64),
                        labels=z["labels"].astype(np.int64),
                        available=z["available"].astype(bool))
        meta_path = directory / META_FILE
        state.meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        for key, value in (expect or {}).items():
            if state.meta.get(key) != value:
                raise StateMismatchError(
                    f"saved state in {directory} has {key}={state.meta.get(key)!r}, "
                    f"but this run has {key}={value!r}: it belongs to another dataset or configuration")
        return state


def atomic_write(path: Path, write) -> None:
    """Write ``path`` atomically: ``write(binary_file)`` fills a temp file in the same folder,
    which is fsynced and moved over ``path`` with ``os.replace`` (a crash leaves the old file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
