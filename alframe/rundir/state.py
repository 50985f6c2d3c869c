"""Pool state: which samples are labelled, in which round, with which label.

All indices are absolute indices into the experiment's *train source* (the dataset the pool
and the labelled set are drawn from). Samples held out for validation or test are marked
unavailable and can never be labelled or queried.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alframe.errors import StateMismatchError

STATE_FILE = "pool_state.npz"
#: a readable copy of the run progress (the copy inside STATE_FILE is the one that counts)
META_FILE = "pool_state.json"
PROGRESS_VERSION = 2


@dataclass
class PendingRequest:
    """A query batch sent to the oracle whose labels are not all in yet.

    Attributes:
        round: the round the batch belongs to (0 = initial labelled set).
        idx: absolute pool indices still waiting for a label.
        received: labels received for this round so far (skips excluded).
        seconds: a person's seconds per label received so far (empty for simulated oracles).
        scores: the acquisition score of each index of ``idx`` (shown to the person), or None.
    """

    round: int
    idx: list[int]
    received: int = 0
    seconds: list[float] = field(default_factory=list)
    scores: list[float] | None = None


@dataclass
class RunProgress:
    """Where a run stands in the round loop; saved with the pool state, read on resume.

    Attributes:
        dataset_fingerprint: identity of the dataset the indices refer to.
        config_fingerprint: hash of the config minus the keys a resume may change.
        round: last round whose labels are all in (-1 before the initial set is labelled).
        evaluated_round: last round whose model was trained, evaluated and logged.
        finished: the loop stopped for good (rounds or budget spent, pool empty, target reached).
        history: one dict per evaluated round (round, n_labelled, test_accuracy, ...).
        pending: the batch waiting for labels, or None.
        run_id: MLflow run id of this job (the same run on every resume).
        tracking_uri: the MLflow store the run lives in.
        seed_labels: labels a person gave before the run (``dataset.seed_labels``), round 0.
        unlogged: metrics recorded with the labels of a batch but not yet sent to MLflow, as
            ``{"step": number of labels, "metrics": {name: value}}``; the loop sends them with the
            next round's metrics in one request (saved here, so a crash in between loses none).
        corrections: labels a person changed after their round was used (:meth:`PoolState.correct`),
            as ``{"index", "old", "new", "round"}`` (``round``: the batch that brought the change).
    """

    dataset_fingerprint: str = ""
    config_fingerprint: str = ""
    round: int = -1
    evaluated_round: int = -1
    finished: bool = False
    history: list[dict] = field(default_factory=list)
    pending: PendingRequest | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
    seed_labels: int = 0
    unlogged: list[dict] = field(default_factory=list)
    corrections: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (with a format ``version``)."""
        return {"version": PROGRESS_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunProgress:
        """Read :meth:`to_dict` output, or the untyped ``meta`` dict of alframe 0.1 run folders
        (``pending_request`` with a nested ``tally``; unread keys such as ``timings`` dropped)."""
        d = dict(d)
        pending = d.pop("pending", None)
        old = d.pop("pending_request", None)
        if pending is None and old is not None:
            tally = old.get("tally") or {}
            pending = {"round": old["round"], "idx": old["idx"], "received": tally.get("received", 0),
                       "seconds": tally.get("seconds", [])}
        known = {f.name for f in dataclasses.fields(cls)} - {"pending"}
        progress = cls(**{k: v for k, v in d.items() if k in known})
        progress.pending = PendingRequest(**pending) if pending is not None else None
        return progress




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
        progress: where the run stands in the round loop (:class:`RunProgress`).
    """

    labelled_round: np.ndarray
    labels: np.ndarray
    available: np.ndarray
    progress: RunProgress = field(default_factory=RunProgress)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, n: int, holdout: np.ndarray | None = None, progress: RunProgress | None = None) -> PoolState:
        """Empty state over ``n`` samples.

        Args:
            n: number of samples in the train source (> 0).
            holdout: ``[H] int`` absolute indices never to be queried (validation split).
            progress: initial run progress (fingerprints).

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
            progress=progress or RunProgress(),
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

    def correct(self, idx: np.ndarray, y: np.ndarray, round: int, num_classes: int | None = None) -> int:
        """Change labels a person corrected after they were used (the only way a recorded label
        changes). Each sample keeps its round (the budget is unchanged); every change is appended to
        ``progress.corrections``. A "correction" to the label already recorded changes nothing.

        Args:
            idx: ``[k] int`` absolute indices, all labelled, no duplicates.
            y: ``[k] int`` the new labels.
            round: the round whose batch brought the corrections.

        Returns:
            How many labels changed.

        Raises:
            ValueError: mismatched lengths, duplicates, indices out of range or not labelled, or
                labels outside ``[0, num_classes)``. Nothing is written when any check fails.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if idx.shape != y.shape:
            raise ValueError(f"got {len(idx)} indices but {len(y)} corrected labels")
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"duplicate indices in one correction: {idx.tolist()}")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise ValueError(f"corrected indices out of range [0, {self.n}): {idx.tolist()}")
        unlabelled = idx[self.labelled_round[idx] < 0]
        if len(unlabelled):
            raise ValueError(f"only recorded labels can be corrected; not labelled: {unlabelled.tolist()}")
        if num_classes is not None and ((y < 0) | (y >= num_classes)).any():
            raise ValueError(f"corrected labels must lie in [0, {num_classes}), got {y.tolist()}")
        changed = idx[self.labels[idx] != y]
        for i, new in zip(idx.tolist(), y.tolist(), strict=True):
            if self.labels[i] != new:
                self.progress.corrections.append({"index": i, "old": int(self.labels[i]), "new": int(new),
                                                  "round": int(round)})
                self.labels[i] = new
        return int(len(changed))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the state and its progress atomically into ``directory``: one ``.npz`` (temp
        file + ``os.replace``) holds both, so a crash never pairs labels with another round's
        progress; ``pool_state.json`` is a readable copy written after it (not fsynced: the
        next save rewrites it, and resuming reads the ``.npz``).

        Returns:
            Path of the ``.npz`` file written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        npz_path = directory / STATE_FILE
        blob = json.dumps(self.progress.to_dict(), indent=2, sort_keys=True)
        atomic_write(npz_path, lambda f: np.savez(
            f, labelled_round=self.labelled_round, labels=self.labels, available=self.available,
            progress=np.array(blob)))
        atomic_write(directory / META_FILE, lambda f: f.write(blob.encode()), durable=False)
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
            expect: :class:`RunProgress` fields that must match (e.g. ``dataset_fingerprint``,
                ``config_fingerprint``); a different value is an error.

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
            blob = str(z["progress"]) if "progress" in z.files else None
        meta_path = directory / META_FILE
        if blob is None and meta_path.is_file():  # alframe 0.1: progress only in the JSON file
            blob = meta_path.read_text()
        state.progress = RunProgress.from_dict(json.loads(blob)) if blob else RunProgress()
        for key, value in (expect or {}).items():
            saved = getattr(state.progress, key)
            if saved != value:
                raise StateMismatchError(
                    f"saved state in {directory} has {key}={saved!r}, "
                    f"but this run has {key}={value!r}: it belongs to another dataset or configuration")
        return state


def atomic_write(path: Path, write, durable: bool = True) -> None:
    """Write ``path`` atomically: ``write(binary_file)`` fills a temp file in the same folder,
    which is moved over ``path`` with ``os.replace`` (a crash leaves the old file).

    Args:
        durable: fsync the file before the move, so it survives a power cut too (a few ms). Files
            rewritten from the saved state at the next save (readable copies) pass False.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
