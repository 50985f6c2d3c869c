"""Pool scoring: class probabilities, MC-dropout samples and embeddings in one pass.

What is computed is what the query strategy declares in ``requires``:

- ``"probs"``: ``[M, C]`` softmax of the deterministic network (dropout off).
- ``"mc_probs"``: ``[M, T, C]`` softmax of T stochastic passes (MC dropout, Gal et al. 2017),
  BatchNorm in eval mode. When the trunk has no dropout, the trunk runs once per sample and
  only the head is sampled T times (exact); otherwise the whole network is sampled, with the
  T passes batched.
- ``"embeddings"``: ``[M, D]`` penultimate features of the deterministic network.
- ``"labelled_embeddings"``: ``[L, D]`` the same for the labelled set (Core-set).

With ``trainer.devices=N`` the loop passes a :class:`Spread`: the same outputs, computed in N
spawned processes (Lightning ``predict``) and gathered in pool order.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from alframe.data.base import IndexedImages, batches, make_loader
from alframe.models.base import DROPOUT_TYPES, ALNet, mc_dropout
from alframe.models.lightning import quiet_lightning  # noqa: F401 (quiet in the spawned ranks too)

KNOWN_REQUIREMENTS = frozenset({"probs", "mc_probs", "embeddings", "labelled_embeddings"})


@dataclass
class ModelOutputs:
    """Model outputs over the candidate pool samples, row-aligned with ``idx``.

    Attributes:
        idx: ``[M] int64`` absolute indices of the scored (candidate) pool samples.
        probs: ``[M, C] float32`` or None.
        mc_probs: ``[M, T, C] float32`` or None.
        embeddings: ``[M, D] float32`` or None.
        labelled_embeddings: ``[L, D] float32`` or None.
    """

    idx: np.ndarray
    probs: torch.Tensor | None = None
    mc_probs: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    labelled_embeddings: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.idx)

    def require(self, name: str) -> torch.Tensor:
        """The field ``name``; raises ValueError naming it when it was not computed."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"model output {name!r} was not computed: add it to the strategy's `requires`")
        return value


@torch.no_grad()
def compute_outputs(net: ALNet | None, dataset: Dataset, idx: np.ndarray, requires: frozenset[str] | set[str],
                    mc_samples: int = 20, batch_size: int = 512, device: str | torch.device = "cpu",
                    labelled_idx: np.ndarray | None = None, mask_seed: int | None = None,
                    spread: Spread | None = None) -> ModelOutputs:
    """Score the samples ``dataset[idx]`` with what a strategy needs.

    Args:
        net: trained network (None only when ``requires`` is empty).
        dataset: the train source.
        idx: ``[M] int`` absolute indices to score.
        requires: subset of ``{"probs", "mc_probs", "embeddings", "labelled_embeddings"}``.
        mc_samples: T, number of MC-dropout samples (>= 1) when ``"mc_probs"`` is required.
        batch_size: samples per forward pass.
        device: where to run the network.
        labelled_idx: ``[L] int`` labelled indices, needed for ``"labelled_embeddings"``.
        mask_seed: None: every pool point draws its own dropout masks in every MC sample (the
            default of MC dropout). An integer: *consistent* MC dropout, as in BatchBALD's code:
            one mask per MC sample t and dropout layer, shared by all scored points, drawn from
            this seed (:class:`ConsistentMasks`), so ``mc_probs[:, t]`` are the predictions of
            one parameter sample w_t and the result does not depend on batching.
        spread: shard the scoring over several devices (:class:`Spread`, ``trainer.devices=N``)
            and gather the rows here; None: score on ``device``.

    Returns:
        ModelOutputs with the requested fields filled.

    Raises:
        ValueError: unknown requirement, ``mc_samples < 1``, a network without dropout asked
            for ``"mc_probs"``, or consistent masks for a dropout type they do not support.
    """
    requires = frozenset(requires)
    unknown = requires - KNOWN_REQUIREMENTS
    if unknown:
        raise ValueError(f"unknown model outputs {sorted(unknown)}; allowed: {sorted(KNOWN_REQUIREMENTS)}")
    idx = np.asarray(idx, dtype=np.int64)
    out = ModelOutputs(idx=idx)
    if not requires:
        return out
    if net is None:
        raise ValueError(f"outputs {sorted(requires)} need a trained network, got None")
    if "mc_probs" in requires:
        if mc_samples < 1:
            raise ValueError(f"strategy.mc_samples must be >= 1, got {mc_samples}")
        if not net.has_dropout:
            raise ValueError("MC-dropout strategies need a model with dropout layers; "
                             f"{type(net).__name__} has none")
    was_training = net.training
    sharded = spread is not None and len(idx) > 0
    if not sharded:  # sharded: the spawned ranks move their copy to their device
        net.to(device)
    net.eval()
    lab_idx = None  # the labelled set, scored for "labelled_embeddings" only
    if "labelled_embeddings" in requires:
        if labelled_idx is None:
            raise ValueError("'labelled_embeddings' requires labelled_idx")
        lab_idx = np.asarray(labelled_idx, dtype=np.int64)
    pool_requires = requires - {"labelled_embeddings"}
    try:
        if sharded:
            # one sharded pass over the candidates (and the labelled set), gathered here
            sets = [IndexedImages(dataset, idx)] + ([IndexedImages(dataset, lab_idx)] if lab_idx is not None else [])
            seed = int(torch.randint(2**31 - 1 - 64, ()))  # from the caller's seeded generator
            rows = spread.run(net, sets, pool_requires | ({"embeddings"} if len(sets) > 1 else set()),
                              mc_samples, batch_size, mask_seed if "mc_probs" in requires else None, seed)
            for k in pool_requires:
                setattr(out, k, rows[0][k])
            if len(sets) > 1:
                out.labelled_embeddings = rows[1]["embeddings"]
            return out
        masks = ConsistentMasks(net, mask_seed, mc_samples) if mask_seed is not None and "mc_probs" in requires \
            else None
        fields = _score(net, dataset, idx, pool_requires, mc_samples, batch_size, device, masks)
        for k, v in fields.items():
            setattr(out, k, v)
        if lab_idx is not None:
            out.labelled_embeddings = _score(net, dataset, lab_idx, {"embeddings"}, 1,
                                             batch_size, device)["embeddings"]
    finally:
        net.train(was_training)
    return out


def _score(net: ALNet, dataset: Dataset, idx: np.ndarray, requires, mc_samples: int, batch_size: int,
           device, masks: ConsistentMasks | None = None) -> dict[str, torch.Tensor]:
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in requires}
    loader = make_loader(IndexedImages(dataset, idx), batch_size=batch_size)
    for batch in batches(loader):
        x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device, non_blocking=True)
        for k, v in _score_batch(net, x, requires, mc_samples, masks).items():
            chunks[k].append(v)
    return {k: (torch.cat(v) if v else torch.empty(0)) for k, v in chunks.items()}


def _score_batch(net: ALNet, x: torch.Tensor, requires, mc_samples: int,
                 masks: ConsistentMasks | None = None) -> dict[str, torch.Tensor]:
    """The ``requires`` outputs (plus ``"logits"`` ``[B, C]`` on request) of one batch
    ``x: [B, ...]``, float32 on the CPU."""
    out: dict[str, torch.Tensor] = {}
    h = net.trunk(x)
    if "logits" in requires:
        out["logits"] = net.head(h).float().cpu()
    if "probs" in requires:
        out["probs"] = torch.softmax(net.head(h), dim=-1).float().cpu()
    if "embeddings" in requires:
        out["embeddings"] = net.embed_features(h).float().cpu()
    if "mc_probs" in requires:
        with mc_dropout(net):
            if net.trunk_is_deterministic:  # exact: the trunk is deterministic, sample the head only
                samples = sample_head(net.head, h, mc_samples, masks=masks)
            else:  # dropout in the trunk: sample the whole network, T passes batched
                samples = _sample_network(net, x, mc_samples, masks=masks)
        out["mc_probs"] = torch.softmax(samples, dim=-1).float().cpu()
    return out


#: most numbers held by one block of stacked MC samples (T-groups are sized to fit)
MC_BLOCK_ELEMENTS = 1 << 22


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


#: dropout layers whose consistent mask is a plain (scaled) multiplication
CONSISTENT_TYPES = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)


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
                x = xin * keep_mask(shape, m.p, x.device).to(xin.dtype)  # 10x faster than torch.where
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


@torch.no_grad()
def evaluate(net: ALNet, dataset: Dataset, batch_size: int = 512, device="cpu",
             spread: Spread | None = None) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``net`` (dropout off) on a labelled dataset.

    Args:
        spread: shard the dataset over several devices (:class:`Spread`); None: ``device``.

    Returns:
        ``{"accuracy": float in [0, 1], "loss": float (nats per sample)}``; both NaN for an
        empty dataset (e.g. an unlabelled folder without a test folder: nothing to measure).
    """
    return evaluate_many(net, [dataset], batch_size, device, spread)[0]


@torch.no_grad()
def evaluate_many(net: ALNet, datasets: list[Dataset], batch_size: int = 512, device="cpu",
                  spread: Spread | None = None) -> list[dict[str, float]]:
    """:func:`evaluate` of each dataset; with ``spread`` all of them in one sharded pass."""
    from torchmetrics.functional.classification import multiclass_accuracy

    results = [{"accuracy": float("nan"), "loss": float("nan")} for _ in datasets]
    todo = [i for i, ds in enumerate(datasets) if len(ds) > 0]
    if not todo:
        return results
    if spread is not None:
        rows = spread.run(net, [datasets[i] for i in todo], {"logits", "y"}, batch_size=batch_size)
        pairs = [(r["logits"], r["y"]) for r in rows]
    else:
        net.to(device)
        was_training = net.training
        net.eval()
        pairs = []
        for i in todo:
            logits, ys = [], []
            for x, y in batches(make_loader(datasets[i], batch_size=batch_size)):
                logits.append(net(x.to(device)).float().cpu())
                ys.append(torch.as_tensor(y))
            pairs.append((torch.cat(logits), torch.cat(ys).long()))
        net.train(was_training)
    for i, (logits_t, y_t) in zip(todo, pairs, strict=True):
        acc = multiclass_accuracy(logits_t, y_t, num_classes=logits_t.shape[1], average="micro")
        loss = torch.nn.functional.cross_entropy(logits_t, y_t)
        results[i] = {"accuracy": float(acc), "loss": float(loss)}
    return results


# ---------------------------------------------------------------------- several devices
@dataclass(frozen=True)
class Spread:
    """Scoring and evaluation sharded over several devices (``trainer.devices=N``, N > 1).

    One ``Trainer.predict`` with Lightning's ``ddp_spawn`` per call: N processes, each scoring its
    share of the samples (Lightning's ``DistributedSampler``, which pads the last shard with
    duplicates), each writing its rows and their positions (:class:`_RankWriter`); this process
    then puts the rows back in dataset order, so the result has exactly the shape and order of
    the single-device path. Consistent MC dropout gives the same numbers as one device;
    per-sample MC dropout draws rank ``r``'s masks from ``seed + r``.

    Attributes:
        accelerator: ``trainer.accelerator``.
        devices: ``trainer.devices`` (N > 1 devices).
    """

    accelerator: str
    devices: object

    def run(self, net: ALNet, datasets: list[Dataset], requires, mc_samples: int = 1, batch_size: int = 512,
            mask_seed: int | None = None, seed: int = 0) -> list[dict[str, torch.Tensor]]:
        """Outputs of ``net`` over every dataset of ``datasets`` (items ``image`` or ``(image, label)``).

        Args:
            requires: output names of :func:`_score_batch` (``probs``, ``mc_probs``,
                ``embeddings``, ``logits``) and ``y`` (the dataset's labels, ``[M] int64``).
            mask_seed: consistent MC-dropout seed (see :func:`compute_outputs`), or None.
            seed: torch seed of per-sample MC dropout (rank r uses ``seed + r``).

        Returns:
            One dict per dataset, ``name -> [M, ...]`` rows in dataset order (M = its length).
        """
        import tempfile

        from alframe.training import spawn_sharing

        with tempfile.TemporaryDirectory(prefix="alframe-scores-") as tmp:
            writer = _RankWriter(tmp, len(datasets))
            trainer = pl.Trainer(accelerator=self.accelerator, devices=self.devices, strategy="ddp_spawn",
                                 logger=False, enable_progress_bar=False, enable_model_summary=False,
                                 enable_checkpointing=False, callbacks=[writer], default_root_dir=tmp)
            module = _ScoringModule(net, frozenset(requires), int(mc_samples), mask_seed, int(seed))
            loaders = [make_loader(ds, batch_size=batch_size) for ds in datasets]
            with spawn_sharing(trainer):
                trainer.predict(module, dataloaders=loaders, return_predictions=False)
            return [_gather(tmp, trainer.world_size, d, len(ds)) for d, ds in enumerate(datasets)]


def _gather(folder: str, world_size: int, dataloader: int, n: int) -> dict[str, torch.Tensor]:
    """Rows of every rank's file for ``dataloader``, placed at their dataset positions ``[n, ...]``."""
    out: dict[str, torch.Tensor] = {}
    seen = torch.zeros(n, dtype=torch.bool)
    for rank in range(world_size):
        saved = torch.load(f"{folder}/rank{rank}.pt", weights_only=False)
        for rows, pos in zip(saved["pred"][dataloader], saved["idx"][dataloader], strict=True):
            pos = torch.as_tensor(pos, dtype=torch.long)
            seen[pos] = True
            for k, v in rows.items():
                if k not in out:
                    out[k] = torch.empty((n, *v.shape[1:]), dtype=v.dtype)
                out[k][pos] = v  # a padded duplicate writes the same row again
    if not bool(seen.all()):
        raise RuntimeError(f"sharded scoring lost {int((~seen).sum())} of {n} samples")
    return out


class _RankWriter(pl.callbacks.BasePredictionWriter):
    """Lightning prediction writer: each rank saves its predictions and their dataset
    positions to ``<folder>/rank<r>.pt`` at the end of ``predict``."""

    def __init__(self, folder: str, n_loaders: int):
        super().__init__(write_interval="epoch")
        self.folder, self.n_loaders = folder, n_loaders

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        if self.n_loaders == 1:  # Lightning unnests a single loader's predictions (not its indices)
            predictions = [predictions]
        torch.save({"pred": predictions, "idx": batch_indices}, f"{self.folder}/rank{trainer.global_rank}.pt")


class _ScoringModule(pl.LightningModule):
    """``predict_step`` = :func:`_score_batch` of ``net`` (plus the batch's labels for ``"y"``)."""

    def __init__(self, net: ALNet, requires: frozenset[str], mc_samples: int, mask_seed: int | None, seed: int):
        super().__init__()
        self.net, self.requires, self.mc_samples = net, requires, mc_samples
        self.mask_seed, self.seed, self.masks = mask_seed, seed, None

    def on_predict_start(self) -> None:
        torch.manual_seed(self.seed + self.global_rank)  # per-sample MC-dropout masks of this rank
        if self.mask_seed is not None and "mc_probs" in self.requires:
            self.masks = ConsistentMasks(self.net, self.mask_seed, self.mc_samples)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = _score_batch(self.net, x, self.requires - {"y"}, self.mc_samples, self.masks)
        if "y" in self.requires:
            out["y"] = torch.as_tensor(batch[1]).long().cpu()
        return out
