"""Self-supervised features of the pool (``ssl=simclr``): SimCLR trained on the pool alone.

SimCLR (Chen et al. 2020): two augmented views of each pool image go through the encoder and a
projection head; lightly's NT-Xent loss pulls the two views of one image together and pushes the
other images of the batch away. The loss (``lightly.loss.NTXentLoss``), the projection head
(``lightly.models.modules.SimCLRProjectionHead``) and the views (``lightly.transforms``'
``MultiViewTransform`` of a view made of torchvision crops and lightly's rotation) come from
lightly; training is a ``pytorch_lightning.Trainer`` fit.

What it sees: the pool, i.e. the train source minus the validation split (:func:`pool_indices`),
never the test split. Images are taken back to pixel values (the dataset's normalisation undone),
augmented, and normalised again in the training step, so the encoder learns on the same inputs
the frozen-feature mode later gives it (``model.backbone.pixels=false``).

The views for grey digits: a random resized crop keeping 50-100 % of the area (the stroke layout
stays readable, the position and scale vary) and a rotation of at most 15 degrees half of the
time (a 6 stays a 6); no flips (a mirrored 2 or 7 is not a digit), no colour jitter (a grey
image has no hue or saturation, and its brightness carries the strokes), no blur (it erases the
strokes of a 28x28 or 8x8 image). Colour images get a flip (0.5), colour jitter at lightly's
strength for small images (0.5, p 0.8) and greyscale (0.2), as in SimCLR. lightly's own
``SimCLRTransform`` is not used as a whole: its blur turns every tensor into an 8-bit PIL image
and back, even with probability 0.

The cache (trained once, shared by the jobs of a sweep) is :mod:`alframe.training.ssl_cache`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import time
from collections.abc import Iterator, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from alframe import faults, progress
from alframe.data.base import ALData, IndexedImages, batches, make_loader
from alframe.errors import ConfigError
from alframe.models.base import ALNet
from alframe.models.lightning import quiet_lightning  # noqa: F401 (Lightning quiet here too)

#: the extra that brings lightly
INSTALL = "pip install 'alframe[ssl]' (lightly 1.6)"
CONV_ENCODER = "alframe.models.ssl.ConvEncoder"
RESNET_ENCODER = "alframe.models.resnet.ResNet18"


def require_lightly():
    """The ``lightly`` module.

    Raises:
        ConfigError: lightly is not installed (one line saying how to install it).
    """
    try:
        import lightly
    except ImportError as e:
        raise ConfigError(f"ssl=simclr needs lightly, which is not installed: {INSTALL}") from e
    return lightly


def pool_indices(data: ALData) -> np.ndarray:
    """``[P] int64`` sorted indices of the train source that self-supervised training may see: all
    of it but the validation split (the test split is another dataset)."""
    return np.setdiff1d(np.arange(data.n_train, dtype=np.int64), np.asarray(data.val_idx, dtype=np.int64))


def encoder_choice(spec: Mapping, input_shape: tuple[int, ...]) -> tuple[str, dict]:
    """``(class path, kwargs)`` of the encoder of ``ssl.encoder`` for images of ``input_shape``."""
    name, kwargs = str(spec.get("encoder") or "auto"), dict(spec.get("encoder_kwargs") or {})
    if name == "auto":
        name = CONV_ENCODER if input_shape[0] == 1 else RESNET_ENCODER
        if name == RESNET_ENCODER:
            kwargs.setdefault("dropout", 0.0)  # its head's dropout would act on the features in training
    if name == CONV_ENCODER and spec.get("dim") is not None:
        kwargs.setdefault("dim", int(spec["dim"]))
    return name, kwargs


def build_encoder(spec: Mapping, num_classes: int, input_shape: tuple[int, ...]) -> tuple[ALNet, str, dict]:
    """A fresh encoder of ``ssl.encoder`` (seeded by the caller).

    Returns:
        ``(net, class path, kwargs)``: the frozen-feature mode rebuilds it from the last two.

    Raises:
        ConfigError: an unknown class, one that is not an alframe ALNet, arguments it refuses,
            inputs it cannot take, or features of another size than ``ssl.dim`` (one line each).
    """
    name, kwargs = encoder_choice(spec, input_shape)
    module, _, cls_name = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name) if module else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, ALNet)):
        raise ConfigError(f"ssl.encoder={name!r} is invalid: must be auto or the dotted path of an alframe ALNet "
                          f"class (e.g. {CONV_ENCODER}, {RESNET_ENCODER})")
    try:
        net = cls(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
        with torch.no_grad():
            d = net.eval().embed(torch.zeros(2, *input_shape)).shape
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"ssl.encoder={name} with ssl.encoder_kwargs={kwargs} cannot encode images of shape "
                          f"{tuple(input_shape)}: {' '.join(str(e).split())[:200]}") from e
    want = spec.get("dim")
    if len(d) != 2 or (want is not None and d[1] != int(want)):
        raise ConfigError(f"ssl.dim={want} is invalid for ssl.encoder={name}, whose features have shape "
                          f"{tuple(d[1:])}: set ssl.dim=null (or {d[1]})")
    return net.train(), name, kwargs


def view_transform(spec: Mapping, input_shape: tuple[int, ...]):
    """lightly's ``MultiViewTransform`` of two views of one image in pixel values ``[C, H, W]``."""
    require_lightly()
    from lightly.transforms import RandomRotateDegrees
    from lightly.transforms.multi_view_transform import MultiViewTransform
    from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T

    grey = input_shape[0] == 1
    hflip = (0.0 if grey else 0.5) if spec.get("hflip") is None else float(spec["hflip"])
    jitter = (0.0 if grey else 0.8) if spec.get("color_jitter") is None else float(spec["color_jitter"])
    steps = [T.RandomResizedCrop(tuple(input_shape[1:]), scale=(float(spec.get("crop_min_scale", 0.5)), 1.0),
                                 antialias=True)]
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(p=hflip))
    if float(spec.get("rotation") or 0) > 0 and float(spec.get("rotation_prob") or 0) > 0:
        steps.append(RandomRotateDegrees(prob=float(spec["rotation_prob"]), degrees=float(spec["rotation"])))
    if jitter > 0 and not grey:
        steps += [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=jitter), T.RandomGrayscale(p=0.2)]
    view = T.Compose(steps)
    return MultiViewTransform([view, view])


class PoolViews(Dataset):
    """Two augmented views of each pool image: ``j -> (view [C, H, W], view)`` in pixel values.

    Args:
        base: the train source.
        idx: ``[P]`` absolute indices of the pool (:func:`pool_indices`).
        transform: the two-view transform (:func:`view_transform`).
        mean, std: the dataset's per-channel normalisation, undone here (None: none).
    """

    def __init__(self, base: Dataset, idx: np.ndarray, transform, mean=None, std=None):
        self.base, self.idx, self.transform = base, np.asarray(idx, dtype=np.int64), transform
        self.norm = None if mean is None or std is None else (
            torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))
        if hasattr(base, "num_workers"):  # lazy folders: their loader processes
            self.num_workers = base.num_workers

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j: int):
        item = self.base[int(self.idx[j])]
        x = item[0] if isinstance(item, (tuple, list)) else item
        if self.norm is not None:
            x = x * self.norm[1] + self.norm[0]
        v0, v1 = self.transform(x.clamp(0.0, 1.0))
        return v0, v1


class SimCLR(pl.LightningModule):
    """The encoder's penultimate embedding, lightly's SimCLR projection head and NT-Xent loss.

    Args:
        encoder: an ALNet; its :meth:`~alframe.models.base.ALNet.embed` is the representation.
        dim: D, the representation size.
        proj_hidden, proj_dim: widths of the projection head.
        temperature: of the NT-Xent loss.
        lr, weight_decay: Adam.
        mean, std: the dataset's normalisation, applied to the views (pixel values) first.
    """

    def __init__(self, encoder: ALNet, dim: int, proj_hidden: int, proj_dim: int, temperature: float, lr: float,
                 weight_decay: float, mean=None, std=None):
        super().__init__()
        require_lightly()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.encoder = encoder
        self.projection = SimCLRProjectionHead(dim, proj_hidden, proj_dim)
        self.criterion = NTXentLoss(temperature=temperature)
        self.lr, self.weight_decay = lr, weight_decay
        c = None if mean is None or std is None else (torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                                                       torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("mean", c[0] if c else torch.zeros(1, 1, 1, 1), persistent=False)
        self.register_buffer("std", c[1] if c else torch.ones(1, 1, 1, 1), persistent=False)
        self.epoch_losses: list[float] = []
        self._sum, self._n = 0.0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections ``[B, proj_dim]`` of views ``[B, C, H, W]`` in pixel values."""
        return self.projection(self.encoder.embed((x - self.mean) / self.std))

    def training_step(self, batch, batch_idx):
        v0, v1 = batch
        loss = self.criterion(self(v0), self(v1))
        self._sum, self._n = self._sum + float(loss.detach()) * len(v0), self._n + len(v0)
        return loss

    @property
    def epoch_loss(self) -> float:
        """Mean loss per image of the epoch so far."""
        return self._sum / max(self._n, 1)

    def on_train_epoch_end(self) -> None:  # after the callbacks' on_train_epoch_end
        self.epoch_losses.append(self.epoch_loss)
        self._sum, self._n = 0.0, 0

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class EpochLines(pl.Callback):
    """One console line per epoch (``alframe.progress``; a sweep job's lines carry its prefix)."""

    def __init__(self, epochs: int, n: int):
        self.epochs, self.n, self.t0 = epochs, n, time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        faults.point("ssl_epoch")
        progress.console.print(f"ssl: epoch {trainer.current_epoch + 1}/{self.epochs}, NT-Xent loss "
                               f"{module.epoch_loss:.4f}, {time.perf_counter() - self.t0:.0f} s "
                               f"({self.n} pool images)", style="dim")


@contextlib.contextmanager
def own_randomness() -> Iterator[None]:
    """Run with the global random states (torch, NumPy, Python, Lightning's seed variables) put back
    afterwards, so a run draws the same whether its encoder was trained now or read from the cache."""
    states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def train_encoder(spec: Mapping, data: ALData, accelerator: str = "cpu", threads: int | None = None,
                  quiet: bool = False) -> tuple[ALNet, dict]:
    """SimCLR on the pool of ``data``: ``ssl.epochs`` passes, seeded by ``ssl.seed``.

    Args:
        spec: the ``ssl`` settings (a plain mapping).
        accelerator: Lightning's accelerator (one device).
        threads: torch CPU threads while training (None: as they are); restored afterwards.
        quiet: no line per epoch.

    Returns:
        ``(encoder in eval mode on the CPU, info)``: info holds the epochs' mean losses, the
        seconds it took (wall and this process's CPU time), the threads and the pool size.

    Raises:
        ConfigError: a bad ``ssl`` value (one line), or a pool of fewer than 2 images.
    """
    idx = pool_indices(data)
    if len(idx) < 2:
        raise ConfigError(f"ssl=simclr needs at least 2 pool images to contrast, dataset {data.name!r} has {len(idx)}")
    mean, std = data.extras.get("mean"), data.extras.get("std")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with own_randomness():
            seed = int(spec.get("seed", 0))
            pl.seed_everything(seed, workers=True, verbose=False)
            encoder, name, kwargs = build_encoder(spec, data.num_classes, data.input_shape)
            dim = encoder.embedding_dim if spec.get("dim") is None else int(spec["dim"])
            module = SimCLR(encoder, dim, int(spec.get("proj_hidden") or dim), int(spec.get("proj_dim", 64)),
                            float(spec.get("temperature", 0.5)), float(spec.get("lr", 1e-3)),
                            float(spec.get("weight_decay", 0.0)), mean, std)
            views = PoolViews(data.train, idx, view_transform(spec, data.input_shape), mean, std)
            loader = make_loader(views, batch_size=int(spec.get("batch_size", 256)), shuffle=True, seed=seed,
                                 num_workers=int(spec.get("num_workers") or 0))
            epochs = int(spec.get("epochs", 10))
            trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=epochs, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 num_sanity_val_steps=0, limit_val_batches=0,
                                 callbacks=[] if quiet else [EpochLines(epochs, len(idx))])
            faults.point("ssl_fit")
            trainer.fit(module, train_dataloaders=loader)
    finally:
        torch.set_num_threads(previous)
    encoder = module.encoder.cpu().eval()
    info = {"encoder": name, "encoder_kwargs": kwargs, "dim": int(dim), "n_pool": int(len(idx)), "epochs": epochs,
            "losses": [round(v, 6) for v in module.epoch_losses], "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2), "threads": int(threads or previous),
            "accelerator": accelerator}
    return encoder, info


@torch.no_grad()
def encode(encoder: ALNet, dataset: Dataset, batch_size: int = 512, device: str | torch.device = "cpu") -> np.ndarray:
    """The encoder's features ``[N, D] float32`` of every image of ``dataset`` (as the dataset
    gives them, normalised), in eval mode: the features the frozen-feature mode computes."""
    encoder = encoder.to(device).eval()
    out = []
    for batch in batches(make_loader(IndexedImages(dataset), batch_size=batch_size)):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out.append(encoder.embed(x.to(device)).float().cpu())
    encoder.cpu()
    return torch.cat(out).numpy() if out else np.empty((0, encoder.embedding_dim), np.float32)
