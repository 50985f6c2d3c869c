"""Core data types shared by every dataset loader.

An experiment's data is an :class:`ALData`: a *train source* whose samples form the pool and
the labelled set (absolute indices ``0..N-1``), validation indices held out of that source,
and a separate test set. Labels of the train source are kept in ``targets`` for the simulated
(stored) oracle only; training reads labels from the pool state through :class:`LabelledView`,
so the only way a label reaches the model is through an oracle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from alframe.errors import ConfigError


class TensorImageDataset(Dataset):
    """In-memory images: ``x: [N, C, H, W] float32`` and ``y: [N] int64`` (-1 = unknown).

    Supports batched fetching (``__getitems__``), so a DataLoader over it costs one tensor
    index per batch instead of one Python call per sample.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor | np.ndarray | None = None):
        if x.ndim != 4:
            raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
        self.x = x.contiguous()
        if y is None:
            y = torch.full((len(x),), -1, dtype=torch.long)
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        if len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def get_batch(self, idx: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Images ``[B, C, H, W]`` for absolute indices ``idx`` (no labels)."""
        return self.x[torch.as_tensor(np.asarray(idx), dtype=torch.long)]

    def __getitems__(self, idx: Sequence[int]):
        t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return [Stacked((self.x[t], self.y[t]))]


class Stacked(tuple):
    """One batch a dataset's ``__getitems__`` already stacked: ``(x [B, ...], y [B])`` (images or
    feature vectors); :func:`_collate_batched` passes it through."""


def _collate_batched(batch):
    """Collate for datasets with ``__getitems__`` returning one pre-stacked batch."""
    if len(batch) == 1 and isinstance(batch[0], Stacked):
        return tuple(batch[0])
    if len(batch) == 1 and isinstance(batch[0], tuple) and isinstance(batch[0][0], torch.Tensor) \
            and batch[0][0].ndim == 4:
        return batch[0]
    return torch.utils.data.default_collate(batch)


class LabelledView(Dataset):
    """The labelled set as a training dataset: images from ``base``, labels from the oracle.

    Args:
        base: the train source; its own targets are ignored.
        idx: ``[L] int`` absolute indices of labelled samples.
        labels: ``[L] int`` labels the oracle gave for ``idx``.
        transform: optional augmentation applied per sample to training images only.
    """

    def __init__(self, base: Dataset, idx: np.ndarray, labels: np.ndarray,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        idx = np.asarray(idx, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if idx.shape != labels.shape:
            raise ValueError(f"{len(idx)} indices but {len(labels)} labels")
        if (labels < 0).any():
            raise ValueError("LabelledView got unknown (-1) labels: only oracle labels may be used")
        self.base, self.idx, self.labels, self.transform = base, idx, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j: int):
        x = _image(self.base, int(self.idx[j]))
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[j]

    def __getitems__(self, js: Sequence[int]):
        if self.transform is None and hasattr(self.base, "get_batch"):
            js = np.asarray(js, dtype=np.int64)
            return [Stacked((self.base.get_batch(self.idx[js]), self.labels[torch.as_tensor(js)]))]
        return [self[j] for j in js]


class IndexedImages(Dataset):
    """Images of ``base`` at ``idx`` with the labels ``base`` stores (validation/test only)."""

    def __init__(self, base: Dataset, idx: np.ndarray | None = None):
        self.base = base
        self.idx = np.arange(len(base)) if idx is None else np.asarray(idx, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j: int):
        return self.base[int(self.idx[j])]

    def __getitems__(self, js: Sequence[int]):
        if hasattr(self.base, "__getitems__"):
            return self.base.__getitems__(self.idx[np.asarray(js, dtype=np.int64)].tolist())
        return [self[j] for j in js]


def _image(ds: Dataset, i: int) -> torch.Tensor:
    item = ds[i]
    return item[0] if isinstance(item, (tuple, list)) else item


class EpochPermutation(torch.utils.data.RandomSampler):
    """A ``RandomSampler`` without replacement that draws exactly one ``torch.randperm(n,
    generator)`` per epoch (torch's own draws a second, unused permutation each epoch, which
    would change the epochs of seeded runs saved before). Being a ``RandomSampler``, Lightning
    recognises it as shuffled and uses a shuffling ``DistributedSampler`` on several devices.

    Args:
        data_source: the dataset (only ``len`` is used).
        generator: torch generator (seeded for reproducible epochs; None = a fresh random seed).
    """

    def __init__(self, data_source, generator: torch.Generator | None = None):
        super().__init__(data_source, generator=generator)

    def __iter__(self):
        gen = self.generator
        if gen is None:
            gen = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        yield from torch.randperm(len(self.data_source), generator=gen).tolist()


class EvenBatchSampler(torch.utils.data.BatchSampler):
    """Batches of near-equal size over the indices of ``sampler``: ``ceil(n / batch_size)``
    batches whose sizes differ by at most one (130 samples with batch size 128 give 65 + 65,
    not 128 + 2).

    A labelled set rarely fills its last batch; a last step on 2 samples is so noisy that it
    visibly dents budget curves, so training epochs use this sampler.

    It is a :class:`torch.utils.data.BatchSampler` with the ``(sampler, batch_size, drop_last)``
    signature, so Lightning can swap ``sampler`` for a ``DistributedSampler`` in a multi-device
    run (``trainer.devices=N``): each rank then splits its own share of the indices evenly.

    Args:
        sampler: a sampler of indices (e.g. ``RandomSampler``), or an int ``n`` (>= 1) for a
            shuffle of ``range(n)`` drawn from ``generator``.
        batch_size: largest batch (>= 1).
        drop_last: must be False (every labelled sample trains every epoch); accepted because
            Lightning passes it when it re-creates the sampler.
        generator: torch generator for the shuffle when ``sampler`` is an int (seeded for
            reproducible epochs; the epoch's permutation is ``torch.randperm(n, generator)``).

    Raises:
        ValueError: ``n < 1``, ``batch_size < 1`` or ``drop_last=True``.
    """

    def __init__(self, sampler: torch.utils.data.Sampler | int, batch_size: int, drop_last: bool = False, *,
                 generator: torch.Generator | None = None):
        if isinstance(sampler, int):
            if sampler < 1:
                raise ValueError(f"EvenBatchSampler needs n >= 1, got n={sampler}")
            sampler = EpochPermutation(range(sampler), generator=generator)
        if int(batch_size) < 1:
            raise ValueError(f"EvenBatchSampler needs batch_size >= 1, got batch_size={batch_size}")
        if drop_last:
            raise ValueError("EvenBatchSampler never drops samples: drop_last must be False")
        super().__init__(sampler, int(batch_size), False)

    @property
    def n(self) -> int:
        """Indices per epoch (``len(sampler)``)."""
        return len(self.sampler)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = list(self.sampler)  # one epoch of the (possibly distributed) sampler
        if not order:
            return
        n_batches = -(-len(order) // self.batch_size)
        base, extra = divmod(len(order), n_batches)
        start = 0
        for b in range(n_batches):
            size = base + (b < extra)
            yield order[start:start + size]
            start += size


def loader_workers(ds: Dataset) -> int:
    """DataLoader worker processes for ``ds``: the ``num_workers`` of the dataset it wraps
    (``LabelledView``/``IndexedImages`` -> ``base``), e.g. a lazy image folder's
    ``dataset.num_workers``; 0 (load in the main process) for in-memory data."""
    while ds is not None:
        if hasattr(ds, "num_workers"):
            return int(ds.num_workers)
        ds = getattr(ds, "base", None)
    return 0


def make_loader(ds: Dataset, batch_size: int, shuffle: bool = False, seed: int | None = None,
                num_workers: int | None = None) -> torch.utils.data.DataLoader:
    """DataLoader that uses batched fetching where the dataset supports it.

    With ``shuffle=True`` (training) batches are reshuffled every epoch from ``seed`` and have
    near-equal sizes (:class:`EvenBatchSampler`); otherwise the order is kept.
    ``num_workers`` None: :func:`loader_workers` of ``ds``; training loaders keep their
    workers alive between epochs.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    workers = loader_workers(ds) if num_workers is None else int(num_workers)
    if shuffle and len(ds) > 0:
        sampler = EpochPermutation(ds, generator=gen)
        return torch.utils.data.DataLoader(ds, batch_sampler=EvenBatchSampler(sampler, batch_size),
                                           num_workers=workers, collate_fn=_collate_batched,
                                           persistent_workers=workers > 0)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       num_workers=workers, collate_fn=_collate_batched)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None off glibc (looked up once)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def trim_heap() -> bool:
    """Hand the memory that glibc's allocator keeps after ``free`` back to the OS (``malloc_trim``).

    Scoring batches that arrive from DataLoader worker processes makes glibc keep freed
    intermediate tensors in its heap: the main process grew by ~13 MB per batch of 512 128-px
    images (1.1 GiB over 40 batches; 2.9 GiB peak over a 100,000-file pool), and stays flat
    with a trim after each batch. Returns False (and does nothing) off glibc, e.g. macOS.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def batches(loader: torch.utils.data.DataLoader):
    """The batches of ``loader``; with worker processes, :func:`trim_heap` after each one, so
    scoring a pool larger than memory keeps the main process's memory flat."""
    for batch in loader:
        yield batch
        if loader.num_workers > 0:
            trim_heap()


@dataclass
class ALData:
    """Everything the loop needs to know about an experiment's data.

    Attributes:
        name: dataset name (logged as a tag).
        train: train source; ``train[i] -> (image [C, H, W] float, target)``, absolute
            indices ``0..N-1`` are the pool/labelled/validation samples.
        test: fixed test set ``(image, label)``; never part of the pool.
        val_idx: ``[V] int`` indices of ``train`` held out for validation (never queried).
        num_classes: number of classes C.
        class_names: ``[C]`` display names.
        input_shape: ``(C, H, W)`` of one image as the model sees it.
        targets: ``[N] int`` stored labels of ``train`` (-1 unknown); read only by the stored
            oracles and by class-balanced initial sampling in simulations; None when the
            data set has no labels (a real annotation job).
        train_transform: augmentation for labelled training batches only (never used for
            pool scoring or evaluation).
        fingerprint: identifies the data (name, sizes, split, and for folders every file's path
            and content); saved with the pool state.
    """

    name: str
    train: Dataset
    test: Dataset
    val_idx: np.ndarray
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, int, int]
    targets: np.ndarray | None = None
    train_transform: Callable | None = None
    fingerprint: str = ""
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        self.val_idx = np.asarray(self.val_idx, dtype=np.int64)
        if not self.fingerprint:
            h = hashlib.sha1()
            h.update(f"{self.name}|{len(self.train)}|{len(self.test)}|{self.num_classes}".encode())
            h.update(np.sort(self.val_idx).tobytes())
            if self.targets is not None:
                h.update(np.asarray(self.targets, dtype=np.int64).tobytes())
            if self.extras.get("file_digests"):  # folder datasets: which file, with which content
                # alframe 0.1 did not hash the files: its run folders (no dataset_files.json) resume
                self.extras["fingerprint_without_files"] = h.copy().hexdigest()[:16]
                h.update(json.dumps(self.extras["file_digests"], sort_keys=False).encode())
            self.fingerprint = h.hexdigest()[:16]

    @property
    def n_train(self) -> int:
        """Number of samples in the train source (pool + labelled + validation)."""
        return len(self.train)

    def validation_set(self) -> Dataset:
        """Validation images with their stored labels (a labelled hold-out, like the test set)."""
        return IndexedImages(self.train, self.val_idx)


def stratified_split(y: np.ndarray, test_size: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified split of ``arange(len(y))`` (scikit-learn).

    Args:
        y: ``[N] int`` class labels.
        test_size: number of samples (int) or fraction (float in (0, 1)) for the second part.
        seed: random seed.

    Returns:
        ``(keep_idx, split_idx)`` sorted absolute indices.

    Raises:
        ValueError: a split size that scikit-learn rejects (e.g. fewer samples than classes).
    """
    idx = np.arange(len(y))
    if not test_size:
        return idx, np.empty(0, dtype=np.int64)
    keep, split = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    return np.sort(keep), np.sort(split)


def load_data(dataset_cfg) -> ALData:
    """Instantiate ``cfg.dataset`` (Hydra) into an :class:`ALData`.

    A :class:`DatasetError` (or other :class:`~alframe.errors.ConfigError`) raised by the loader
    is re-raised as itself rather than wrapped in Hydra's ``InstantiationException``, so the
    command line shows its message (files, folder, how to get them) without a stack trace.

    Raises:
        DatasetError: the loader could not load the data.
        ConfigError: ``dataset._target_`` does not return an ALData.
    """
    from alframe.config.instantiate import instantiate_checked

    data = instantiate_checked(dataset_cfg, f"dataset ({dataset_cfg.get('_target_')})")
    if not isinstance(data, ALData):
        raise ConfigError(f"dataset._target_={dataset_cfg.get('_target_')!r} must return an alframe ALData, "
                          f"got {type(data).__name__}")
    return data
