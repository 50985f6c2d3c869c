"""MC dropout (Gal & Ghahramani 2016): T stochastic passes, head-only when exact, and consistent
masks (one mask per MC sample for the whole pool, as BatchBALD's code scores)."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

from alframe.models.base import DROPOUT_TYPES, ALNet

#: most numbers held by one block of stacked MC samples (T-groups are sized to fit)
MC_BLOCK_ELEMENTS = 1 << 22
#: dropout layers whose consistent mask is a plain (scaled) multiplication
CONSISTENT_TYPES = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)



def keep_mask(shape: tuple[int, ...], p: float, device="cpu") -> torch.Tensor:
    """Dropout keep-mask ``[*shape] bool``, i.i.d. Bernoulli(1 - p), from the default torch
    generator (``torch.manual_seed`` controls it).

    Drawn from random bytes, about 10x faster than ``torch.bernoulli`` on CPU: exact when
    ``(1 - p) * 256`` is an integer (p = 0.25, 0.5, ...), otherwise 32-bit thresholds
    (probability off by < 2^-32, finer than a float32 uniform).
    """
    n = int(np.prod(shape)) if len(shape) else 1
    keep = 1.0 - float(p)
    bits = 8 if float(keep * 256).is_integer() else 32
    words = torch.randint(-(2**63), 2**63 - 1, ((n * bits // 8 + 7) // 8,), dtype=torch.int64, device=device)
    if bits == 8:
        return (words.view(torch.uint8)[:n] < int(keep * 256)).reshape(shape)
    u = words.view(torch.int32)[:n].to(torch.int64) + 2**31  # uniform on [0, 2^32)
    return (u < round(keep * 2**32)).reshape(shape)


class ConsistentMasks:
    """Consistent MC dropout: one dropout mask per MC sample t and dropout layer, shared by every
    scored point (Kirsch, van Amersfoort & Gal 2019, BatchBALD; their ``ConsistentMCDropout``
    keeps one mask per sample until the next training phase).

    The masks of layer ``i`` (its position among the network's dropout modules) are drawn from
    a torch generator seeded with ``(seed, i)``, over the whole ``[T, ...]`` mask at once, so they
    depend only on the seed, T and the layer, never on the batch size or the order of the pool.

    Args:
        net: the network (or head) whose dropout modules are sampled.
        seed: the seed (the loop passes the round's seed).
        t: T, the number of MC samples.

    Raises:
        ValueError: the network has a dropout type without a multiplicative mask (AlphaDropout,
            FeatureAlphaDropout), named.
    """

    def __init__(self, net: torch.nn.Module, seed: int, t: int):
        self.seed, self.t = int(seed), int(t)
        drops = [m for m in net.modules() if isinstance(m, DROPOUT_TYPES)]
        bad = sorted({type(m).__name__ for m in drops if type(m) not in CONSISTENT_TYPES})
        if bad:
            raise ValueError(f"consistent MC dropout supports {[c.__name__ for c in CONSISTENT_TYPES]}; "
                             f"the network has {bad}: set strategy.consistent_dropout=false")
        self.key = {id(m): i for i, m in enumerate(drops)}
        self._masks: dict[int, torch.Tensor] = {}
        self.window = (0, self.t)  # MC samples [t0, t0 + g) of the stacked input now running

    def mask(self, m: torch.nn.Module, feat_shape: tuple[int, ...]) -> torch.Tensor:
        """``[T, 1, *shape]`` float32 keep-mask of module ``m`` scaled by ``1 / (1 - p)``, for inputs
        ``[B, *feat_shape]``; ``shape`` is ``feat_shape`` for ``Dropout`` and ``(C, 1, ...)`` (whole
        channels) for ``Dropout1d/2d/3d``."""
        i = self.key[id(m)]
        got = self._masks.get(i)
        if got is None:
            shape = tuple(feat_shape) if type(m) is torch.nn.Dropout else (feat_shape[0],) + (1,) * (len(feat_shape) - 1)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0]))
            keep = torch.rand((self.t, 1, *shape), generator=gen) >= m.p
            got = keep.float() / (1.0 - m.p) if m.p < 1 else torch.zeros(keep.shape)
            self._masks[i] = got
        return got

    def apply(self, m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Dropout ``m`` on ``x: [g * B, ...]``, g stacked MC samples (``window``), t-major."""
        t0, g = self.window
        b = x.shape[0] // g
        mk = self.mask(m, tuple(x.shape[1:]))[t0:t0 + g].to(device=x.device, dtype=x.dtype)
        return (x.reshape(g, b, *x.shape[1:]) * mk).reshape(x.shape)


@contextlib.contextmanager
def _consistent_forwards(net: torch.nn.Module, masks: ConsistentMasks):
    """Within the block every dropout module of ``net`` applies its consistent masks."""
    mods = [m for m in net.modules() if isinstance(m, DROPOUT_TYPES)]
    for m in mods:
        m.forward = functools.partial(masks.apply, m)  # instance attribute shadows the class method
    try:
        yield
    finally:
        for m in mods:
            del m.forward


def sample_head(head: torch.nn.Sequential, h: torch.Tensor, t: int,
                max_elements: int = MC_BLOCK_ELEMENTS, masks: ConsistentMasks | None = None) -> torch.Tensor:
    """T MC-dropout samples of the head's logits for trunk features ``h: [B, ...]``.

    Exact sampling of ``head`` with its (elementwise) ``nn.Dropout`` layers active, arranged
    for speed: modules before the first dropout run once per sample (they are deterministic);
    from the first dropout on, the T samples are stacked along the batch dimension in groups
    of at most ``max_elements`` numbers; masks come from :func:`keep_mask`; a dropout directly
    followed by ``nn.Linear`` applies its 1/(1-p) scale to the (smaller) linear output. Other
    dropout types (Dropout2d, AlphaDropout, ...) and all other modules are called as they are.
    With ``masks`` (consistent MC dropout) each dropout multiplies by the shared mask of its MC
    sample instead.

    Returns:
        ``[B, T, C]`` logits.
    """
    mods = list(head)
    first = next((i for i, m in enumerate(mods) if isinstance(m, DROPOUT_TYPES)), len(mods))
    for m in mods[:first]:
        h = m(h)
    b = h.shape[0]
    per = max(h[0].numel(), 1) if b else 1
    group = max(1, min(t, max_elements // max(b * per, 1)))
    outs = []
    for t0 in range(0, t, group):
        g = min(group, t - t0)
        if masks is not None:
            masks.window = (t0, g)
        outs.append(_run_sampled(mods[first:], h, g, masks).reshape(g, b, -1))
    return torch.cat(outs).transpose(0, 1)


def _run_sampled(mods: list, h: torch.Tensor, g: int, masks: ConsistentMasks | None = None) -> torch.Tensor:
    """Run ``mods`` on ``g`` stacked copies of ``h: [B, ...]``, sampling dropout; ``[g * B, ...]`` out.

    Until the first dropout the copies are identical, so ``x`` stays ``[B, ...]`` and the
    mask ``[g, B, ...]`` broadcasts against it (no copy of ``h`` is made)."""
    x, stacked = h, False
    i = 0
    while i < len(mods):
        m = mods[i]
        if masks is not None and isinstance(m, DROPOUT_TYPES) and m.training:
            if not stacked:  # [g, 1, ...] mask x [1, B, ...] input -> the g samples, stacked
                x, stacked = x.unsqueeze(0).expand(g, *x.shape).reshape(g * x.shape[0], *x.shape[1:]), True
            x = masks.apply(m, x)
        elif type(m) is torch.nn.Dropout and m.training:
            xin = x if stacked else x.unsqueeze(0)
            shape = tuple(x.shape) if stacked else (g, *x.shape)
            if m.p >= 1:
                x = torch.zeros(shape, dtype=x.dtype, device=x.device)
            elif m.p <= 0:
                x = xin.expand(shape)
            else:
                x = xin * keep_mask(shape, m.p, x.device)  # bool promoted in the multiply: 3x faster than torch.where
            if not stacked:
                x, stacked = x.reshape(shape[0] * shape[1], *shape[2:]), True
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if 0 < m.p < 1 and type(nxt) is torch.nn.Linear:  # scale the smaller linear output
                x = torch.nn.functional.linear(x, nxt.weight).mul_(1.0 / (1.0 - m.p))
                if nxt.bias is not None:
                    x.add_(nxt.bias)
                i += 2
                continue
            if 0 < m.p < 1:
                x = x.mul_(1.0 / (1.0 - m.p))
        else:
            if not stacked and isinstance(m, DROPOUT_TYPES):  # other dropout types: copies first
                x, stacked = x.unsqueeze(0).expand(g, *x.shape).reshape(g * x.shape[0], *x.shape[1:]), True
            x = m(x)
        i += 1
    if not stacked:
        x = x.unsqueeze(0).expand(g, *x.shape).reshape(g * x.shape[0], *x.shape[1:])
    return x


def _sample_network(net: ALNet, x: torch.Tensor, t: int, max_rows: int = 512,
                    masks: ConsistentMasks | None = None) -> torch.Tensor:
    """T MC-dropout samples of the whole network (dropout inside the trunk): the T passes are
    stacked along the batch dimension in groups of at most ``max(B, max_rows)`` rows. Small
    batches (e.g. the pool's last one) are filled up to ``max_rows``; a full batch runs the T
    passes one after the other, which on CPU was as fast as stacking them and keeps the
    activations in cache (measured in ``benchmarks/bench_mc.py``). Memory stays bounded. With
    ``masks`` every dropout module applies the consistent mask of its MC sample.

    Returns:
        ``[B, T, C]`` logits.
    """
    b = x.shape[0]
    group = max(1, min(t, max_rows // max(b, 1)))
    outs = []
    for t0 in range(0, t, group):
        g = min(group, t - t0)
        xr = x.unsqueeze(0).expand(g, *x.shape).reshape(g * b, *x.shape[1:])
        if masks is None:
            outs.append(net(xr).reshape(g, b, -1))
            continue
        masks.window = (t0, g)
        with _consistent_forwards(net, masks):
            outs.append(net(xr).reshape(g, b, -1))
    return torch.cat(outs).transpose(0, 1)
