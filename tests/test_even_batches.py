"""EvenBatchSampler as a torch BatchSampler: the same batches as a seeded ``randperm`` split,
and Lightning can inject a DistributedSampler into it (the data side of ``trainer.devices=N``)."""

import numpy as np
import pytest
import torch
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from alframe.data.base import EvenBatchSampler, TensorImageDataset, make_loader


def _reference_batches(n, batch_size, seed, epochs):
    """The pre-BatchSampler algorithm: one randperm per epoch, split into near-equal parts."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).tolist()
        nb = -(-n // batch_size)
        base, extra = divmod(n, nb)
        start = 0
        for b in range(nb):
            out.append(perm[start:start + base + (b < extra)])
            start += base + (b < extra)
    return out


def _dataset(n):
    return TensorImageDataset(torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1), np.arange(n) % 3)


def test_training_loader_keeps_the_seeded_batches_over_epochs():
    loader = make_loader(_dataset(130), batch_size=64, shuffle=True, seed=7)
    assert isinstance(loader.batch_sampler, torch.utils.data.BatchSampler)
    got = [x.flatten().long().tolist() for _ in range(3) for x, _ in loader]
    assert got == _reference_batches(130, 64, 7, 3)
    assert [len(b) for b in got[:3]] == [44, 43, 43]


def test_drop_last_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="drop_last"):
        EvenBatchSampler(10, 4, drop_last=True)
    with pytest.raises(ValueError, match="batch_size=0"):
        EvenBatchSampler(10, 0)
    with pytest.raises(ValueError, match="n=0"):
        EvenBatchSampler(0, 4)


def test_lightning_injects_a_distributed_sampler_per_rank():
    """What Lightning does for trainer.devices=2: rebuild the loader with a DistributedSampler
    (it errored with "can't inject a (distributed) sampler" before). Each rank gets even batches
    of its own half; together the ranks cover every sample once per epoch."""
    ds = _dataset(130)
    loader = make_loader(ds, batch_size=32, shuffle=True, seed=0)
    seen = []
    for rank in range(2):
        dist = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        new = _update_dataloader(loader, dist)
        assert isinstance(new.batch_sampler, EvenBatchSampler) and new.batch_sampler.sampler is dist
        batches = [x.flatten().long().tolist() for x, _ in new]
        assert [len(b) for b in batches] == [22, 22, 21]  # 65 per rank, ceil(65 / 32) = 3 batches
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(130))
