"""MC-dropout pool scoring (:func:`alframe.scoring.pool.compute_outputs` with ``"mc_probs"``):
BatchNorm stays in eval mode, passes differ, head-only sampling is exact, and models with
dropout inside the trunk fall back to (batched) whole-network sampling."""

import numpy as np
import pytest
import torch
from torch import nn

from alframe.data.base import TensorImageDataset
from alframe.models.base import ALNet, mc_dropout
from alframe.models.cnn import GalCNN, SmallCNN
from alframe.scoring.mc import keep_mask, sample_head
from alframe.scoring.pool import compute_outputs


def digits_pool(n=60):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:n] / 16.0, dtype=torch.float32).reshape(n, 1, 8, 8)
    return TensorImageDataset(x, y[:n])


def trained_small_cnn(ds, steps=20):
    """A SmallCNN whose BatchNorm statistics have moved away from their initial values."""
    torch.manual_seed(0)
    net = SmallCNN(10, (1, 8, 8))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(ds.x), ds.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


class TrunkDropoutNet(ALNet):
    """Dropout inside the trunk only: head-only sampling would give T identical samples."""

    def __init__(self, num_classes=10, input_shape=(1, 8, 8), p=0.5):
        c, h, w = input_shape
        trunk = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Dropout(p))
        head = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, num_classes))
        super().__init__(trunk, head)


def test_bn_buffers_untouched_and_passes_differ():
    ds = digits_pool()
    net = trained_small_cnn(ds)
    net.train()  # the loop may hand over a model in either mode
    buffers = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    assert buffers and any(not torch.equal(v, torch.zeros_like(v)) for k, v in buffers.items() if "mean" in k)
    torch.manual_seed(1)
    out = compute_outputs(net, ds, np.arange(60), {"mc_probs", "probs"}, mc_samples=8, batch_size=16)
    for k, v in net.state_dict().items():
        if k in buffers:
            assert torch.equal(v, buffers[k]), f"BatchNorm buffer {k} changed during MC dropout"
    assert net.training, "previous training flag must be restored"
    mc = out.mc_probs
    assert mc.shape == (60, 8, 10) and mc.dtype == torch.float32
    torch.testing.assert_close(mc.sum(2), torch.ones(60, 8))
    assert not torch.allclose(mc[:, 0], mc[:, 1]), "two MC passes gave the same probabilities"
    # a second call samples fresh masks
    out2 = compute_outputs(net, ds, np.arange(60), {"mc_probs"}, mc_samples=8, batch_size=16)
    assert not torch.equal(out.mc_probs, out2.mc_probs)
    # the deterministic probs are those of eval mode (dropout off, BN running statistics)
    net.eval()
    torch.testing.assert_close(out.probs, torch.softmax(net(ds.x), 1))


def test_mc_dropout_context_modes():
    net = SmallCNN(10, (1, 8, 8))
    net.train()
    with mc_dropout(net):
        assert all(not m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))
        assert all(m.training for m in net.modules() if isinstance(m, nn.Dropout))
    assert all(m.training for m in net.modules())


def test_head_only_sampling_equals_naive_passes_with_the_same_masks():
    """Fixed seed: the fast head sampler (masks broadcast over the T copies, 1/(1-p) applied
    after the linear layer, T stacked in groups) equals T plain passes of the network with the
    same dropout masks applied by hand."""
    ds = digits_pool(40)
    net = trained_small_cnn(ds, steps=5).eval()
    assert net.trunk_is_deterministic
    t, b = 6, 40
    d0, lin1, relu, d1, lin2 = net.head
    with torch.no_grad(), mc_dropout(net):
        h = net.trunk(ds.x)
        torch.manual_seed(123)
        fast = sample_head(net.head, h, t, max_elements=10**9)  # one group: masks drawn in this order
        torch.manual_seed(123)
        m0 = keep_mask((t, b, h.shape[1]), d0.p)
        m1 = keep_mask((t * b, lin1.out_features), d1.p).reshape(t, b, -1)
        naive = torch.stack([lin2(relu(lin1(h * m0[i] / (1 - d0.p))) * m1[i] / (1 - d1.p)) for i in range(t)], 1)
        torch.testing.assert_close(fast, naive, rtol=1e-4, atol=1e-5)
        # grouping the T samples (small blocks) changes nothing but the mask order: same law
        torch.manual_seed(5)
        small = sample_head(net.head, h, t, max_elements=h.numel())
        assert small.shape == (b, t, 10) and not torch.allclose(small[:, 0], small[:, 1])
    net.eval()
    with torch.no_grad():
        det = net.head(h)
    # dropout really sampled, and every sample is a valid dropout output
    assert not torch.allclose(fast[:, 0], det)


@pytest.mark.parametrize("p", [0.25, 0.5, 0.3, 0.9])
def test_keep_mask_is_bernoulli(p):
    torch.manual_seed(0)
    raw = keep_mask((200, 1000), p)
    assert raw.dtype == torch.bool and raw.shape == (200, 1000)
    m = raw.double()
    n = m.numel()
    assert abs(m.mean().item() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    # no correlation between neighbouring entries (bytes/words must not be reused)
    a, c = m.reshape(-1)[:-1], m.reshape(-1)[1:]
    corr = ((a - a.mean()) * (c - c.mean())).mean() / (a.std() * c.std())
    assert abs(corr.item()) < 5 / np.sqrt(n)


def test_head_only_equals_fallback_in_distribution(monkeypatch):
    """The same deterministic-trunk model sampled head-only and by the whole-network fallback:
    MC means and standard deviations agree within Monte-Carlo error."""
    ds = digits_pool(12)
    net = GalCNN(10, (1, 8, 8), kernel=2)
    torch.manual_seed(0)
    t = 2000
    head = compute_outputs(net, ds, np.arange(12), {"mc_probs"}, mc_samples=t, batch_size=12).mc_probs.double()
    monkeypatch.setattr(GalCNN, "trunk_is_deterministic", property(lambda self: False))
    full = compute_outputs(net, ds, np.arange(12), {"mc_probs"}, mc_samples=t, batch_size=12).mc_probs.double()
    se = head.std(1) / np.sqrt(t)
    assert (head.mean(1) - full.mean(1)).abs().max() < 5 * se.max() + 1e-6
    torch.testing.assert_close(head.std(1), full.std(1), rtol=0.1, atol=2e-3)


def test_fallback_samples_dropout_inside_the_trunk():
    ds = digits_pool(30)
    torch.manual_seed(0)
    net = TrunkDropoutNet()
    assert not net.trunk_is_deterministic and net.has_dropout
    t = 5
    torch.manual_seed(7)
    mc = compute_outputs(net, ds, np.arange(30), {"mc_probs"}, mc_samples=t, batch_size=8).mc_probs
    assert mc.shape == (30, t, 10)
    # each of the T samples has its own masks (head-only sampling would make them identical)
    assert all(not torch.allclose(mc[:, 0], mc[:, j]) for j in range(1, t))
    # against naive whole-network passes, in distribution: mean over many samples
    torch.manual_seed(8)
    many = compute_outputs(net, ds, np.arange(30), {"mc_probs"}, mc_samples=1500, batch_size=30).mc_probs.double()
    with torch.no_grad(), mc_dropout(net):
        naive = torch.stack([torch.softmax(net(ds.x), 1) for _ in range(1500)], 1).double()
    se = naive.std(1) / np.sqrt(1500)
    assert (many.mean(1) - naive.mean(1)).abs().max() < 5 * se.max() + 1e-6
    # dropout off (deterministic probs) differ from the MC mean: dropout really sampled
    det = compute_outputs(net, ds, np.arange(30), {"probs"}).probs.double()
    assert (det - naive.mean(1)).abs().max() > 10 * se.max()


def test_mc_probs_needs_dropout_and_valid_t():
    ds = digits_pool(4)
    plain = ALNet(nn.Flatten(), nn.Sequential(nn.Linear(64, 10)))
    with pytest.raises(ValueError, match="dropout"):
        compute_outputs(plain, ds, np.arange(4), {"mc_probs"}, mc_samples=3)
    with pytest.raises(ValueError, match="mc_samples"):
        compute_outputs(SmallCNN(10, (1, 8, 8)), ds, np.arange(4), {"mc_probs"}, mc_samples=0)
