"""MC-dropout pool scoring: the Gal et al. (2017) CNN on a 10,000-image 28x28 pool, T = 20.

Reports (MC scoring time) / (one deterministic pass) next to its FLOP bound
``(trunk + T * head) / (trunk + head)`` (multiply-adds counted with forward hooks), and the
naive cost of re-running the whole network T times. The deterministic trunk runs once per
image and only the head is sampled (exact, see :func:`alframe.scoring.mc.sample_head`). Target:
<= 2.3x. Also checks the whole-network fallback (dropout inside the trunk, the BatchBALD CNN):
its batched T passes against T separate passes.

Data: 10,000 real MNIST digits from the folder given as ``ALFRAME_MNIST_ROOT`` (or as the
argument of ``python -m benchmarks.bench_mc <folder>``): the folder that holds ``MNIST/raw`` with
torchvision's files (the ``dataset.root`` of ``dataset=mnist``). Without it the benchmark is
skipped with a message. Weights are untrained, which does not change the cost.
Each timing is the best of ``REPEATS`` interleaved runs, to damp noise on a shared machine.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

from alframe.data.base import IndexedImages, TensorImageDataset, make_loader
from alframe.models.base import mc_dropout
from alframe.scoring.pool import compute_outputs

T = 20
N = 10_000
BATCH = 512
REPEATS = 3
ROOT_ENV = "ALFRAME_MNIST_ROOT"


def pool_images(root: str, n: int = N) -> tuple[TensorImageDataset | None, str]:
    """``n`` normalised 28x28 MNIST digits (train split first, then test) read from ``root``;
    ``(None, why)`` when the files are missing or hold fewer than ``n`` images."""
    from torchvision.datasets import MNIST

    try:
        data = torch.cat([MNIST(root, train=split, download=False).data for split in (True, False)])[:n]
    except (RuntimeError, OSError) as e:
        return None, f"no MNIST files under {root}/MNIST/raw ({type(e).__name__})"
    if len(data) < n:
        return None, f"{root} holds {len(data)} MNIST images, the benchmark needs {n}"
    x = (data.float() / 255.0 - 0.1307) / 0.3081
    return TensorImageDataset(x.unsqueeze(1)), f"MNIST digits from {root}"


def gal_cnn() -> nn.Module:
    """The Gal et al. 2017 MNIST CNN (alframe.models.cnn.GalCNN; local copy if absent)."""
    try:
        from alframe.models.cnn import GalCNN
    except ImportError:  # same network, defined here
        from alframe.models.base import ALNet

        class GalCNN(ALNet):
            def __init__(self, num_classes, input_shape):
                trunk = nn.Sequential(nn.Conv2d(input_shape[0], 32, 4), nn.ReLU(), nn.Conv2d(32, 32, 4), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Flatten())
                head = nn.Sequential(nn.Dropout(0.25), nn.Linear(3872, 128), nn.ReLU(), nn.Dropout(0.5),
                                     nn.Linear(128, num_classes))
                super().__init__(trunk, head)
    torch.manual_seed(0)
    return GalCNN(10, (1, 28, 28)).eval()


def macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds per sample of the Conv2d and Linear layers of ``module`` on input ``x[:1]``."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(x[:1])
    for h in handles:
        h.remove()
    return total


def naive_mc(net, ds, idx, t: int) -> torch.Tensor:
    """What libraries without a trunk/head split do: T whole-network passes with dropout on."""
    out = []
    with torch.no_grad(), mc_dropout(net):
        for x, *_ in make_loader(IndexedImages(ds, idx), batch_size=BATCH):
            out.append(torch.stack([torch.softmax(net(x), 1) for _ in range(t)], 1))
    return torch.cat(out)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None):
    root = (argv or [None])[0] or os.environ.get(ROOT_ENV)
    if not root:
        print(f"bench_mc: skipped: set {ROOT_ENV}=<folder with MNIST/raw> (torchvision's MNIST files, "
              f"the dataset.root of dataset=mnist), or run python -m benchmarks.bench_mc <folder>")
        return
    ds, source = pool_images(root)
    if ds is None:
        print(f"bench_mc: skipped: {source}")
        return
    idx = np.arange(len(ds))
    net = gal_cnn()
    x0 = ds.x[:1]
    trunk_macs = macs(net.trunk, x0)
    head_macs = macs(net.head, net.trunk(x0).detach())
    bound = (trunk_macs + T * head_macs) / (trunk_macs + head_macs)
    print(f"pool: {len(ds)} {source}; Gal et al. CNN, T={T}, batch {BATCH}; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"multiply-adds per image: trunk {trunk_macs / 1e6:.2f} M, head {head_macs / 1e6:.3f} M")

    def det():
        return compute_outputs(net, ds, idx, {"probs"}, batch_size=BATCH)

    def mc():
        return compute_outputs(net, ds, idx, {"mc_probs"}, mc_samples=T, batch_size=BATCH)

    def mc_consistent():  # one mask per MC sample shared by the pool (BatchBALD's consistent dropout)
        return compute_outputs(net, ds, idx, {"mc_probs"}, mc_samples=T, batch_size=BATCH, mask_seed=0)

    det()  # warm-up
    t_det, t_mc, t_mcc = [], [], []
    for _ in range(REPEATS):  # interleaved, so all see the same machine load
        t_det.append(timed(det))
        t_mc.append(timed(mc))
        t_mcc.append(timed(mc_consistent))
    d, m, mc_c = min(t_det), min(t_mc), min(t_mcc)
    print(f"  one deterministic pass      {d:7.2f} s")
    print(f"  MC dropout, T={T} (head only) {m:7.2f} s   ratio {m / d:.2f}x   FLOP bound {bound:.2f}x   "
          f"target <= 2.3x: {'met' if m / d <= 2.3 else 'NOT met'}")
    print(f"  same, consistent masks      {mc_c:7.2f} s   ratio {mc_c / d:.2f}x   "
          f"target <= 2.3x: {'met' if mc_c / d <= 2.3 else 'NOT met'}")
    # naive: T whole-network passes, timed on a 1,000-image slice (x10 for the pool)
    sub = idx[:1000]
    t_sub_det = min(timed(lambda: compute_outputs(net, ds, sub, {"probs"}, batch_size=BATCH)) for _ in range(2))
    t_naive = timed(lambda: naive_mc(net, ds, sub, T))
    print(f"  naive: whole network x {T}   {t_naive * len(idx) / len(sub):7.2f} s   ratio {t_naive / t_sub_det:.1f}x "
          f"(timed on {len(sub)} images, scaled to {len(idx)})")
    bench_fallback(ds)


def bench_fallback(ds, n: int = 500):
    """Dropout inside the trunk (BatchBALD CNN): batched T passes vs T separate passes."""
    from alframe.models.cnn import BatchBALDCNN

    torch.manual_seed(0)
    net = BatchBALDCNN(10, (1, 28, 28)).eval()
    assert not net.trunk_is_deterministic
    idx = np.arange(n)
    t_det = min(timed(lambda: compute_outputs(net, ds, idx, {"probs"}, batch_size=BATCH)) for _ in range(2))
    t_fb = min(timed(lambda: compute_outputs(net, ds, idx, {"mc_probs"}, mc_samples=T, batch_size=BATCH))
               for _ in range(2))
    t_fbc = min(timed(lambda: compute_outputs(net, ds, idx, {"mc_probs"}, mc_samples=T, batch_size=BATCH,
                                              mask_seed=0)) for _ in range(2))
    t_naive = timed(lambda: naive_mc(net, ds, idx, T))
    print(f"fallback (BatchBALD CNN, Dropout2d in the trunk), {n} images, T={T}:")
    print(f"  batched whole-network sampling {t_fb:6.2f} s ({t_fb / t_det:.1f}x one pass); "
          f"T separate passes {t_naive:6.2f} s ({t_naive / t_det:.1f}x); consistent masks {t_fbc:6.2f} s "
          f"({t_fbc / t_det:.1f}x)")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
