"""The self-supervised encoder of a pool, trained once and shared: the cache of ``ssl=simclr``.

Layout, under ``ssl.cache_dir`` (default ``<paths.output_root>/cache/ssl``)::

    simclr-<fingerprint>/encoder.pt     the encoder's state_dict (an alframe ALNet: trunk + head)
    simclr-<fingerprint>/encoder.json   what it is: fingerprint and its parts, encoder class and
                                        kwargs, D, losses per epoch, seconds, threads, sha1 of encoder.pt
    simclr-<fingerprint>.lock           held (filelock) while one job trains it

The fingerprint hashes the data (the dataset's fingerprint, the pool's indices, the images'
bytes when they are in memory, the normalisation), every ``ssl`` setting that changes the
result, ``ssl.seed`` and the versions of torch, torchvision, Lightning and lightly. Threads,
DataLoader workers and the cache folder are left out. Jobs of a sweep on the same data therefore
share one encoder: the first takes the lock and trains, the others wait on the lock and read
its files. Both files are written atomically (temp file, fsync, rename) and ``encoder.json`` goes
last, so a crash mid-training leaves no file and one between the two leaves an ``encoder.pt``
without its description, which is trained again. A file whose description names another
fingerprint, or whose checksum does not match, is never used.

:func:`use_ssl_encoder` makes it the frozen-feature mode's backbone: it sets
``model.backbone.name`` (the encoder class), ``weights=null``, ``checkpoint`` (``encoder.pt``)
and ``kwargs``, the "user checkpoint" form of ``model.backbone``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf, open_dict

from alframe import progress
from alframe.data.base import ALData
from alframe.errors import ConfigError
from alframe.models.base import ALNet
from alframe.rundir.state import atomic_write
from alframe.training import ssl as ssl_train

#: bump when what the cache holds changes meaning (training code, file layout)
FORMAT = "1"
#: ``ssl`` keys that do not change the encoder: left out of the fingerprint
NOT_FINGERPRINTED = ("threads", "num_workers", "cache_dir")
ENCODER_FILE, INFO_FILE = "encoder.pt", "encoder.json"


@dataclass
class CachedEncoder:
    """An encoder in the cache.

    Attributes:
        path: its ``encoder.pt`` (a state_dict of ``info["encoder"]`` built with ``info["encoder_kwargs"]``).
        fingerprint: the key of its folder.
        trained: True when this call trained it, False when it was read from the cache.
        info: the contents of ``encoder.json``.
    """

    path: Path
    fingerprint: str
    trained: bool
    info: dict

    def backbone(self) -> dict:
        """The ``model.backbone`` keys of the frozen-feature mode that load this encoder."""
        return {"name": self.info["encoder"], "weights": None, "checkpoint": str(self.path),
                "kwargs": dict(self.info["encoder_kwargs"])}

    def load(self, num_classes: int, input_shape: tuple[int, ...]) -> ALNet:
        """The encoder with its weights, in eval mode on the CPU."""
        net, _, _ = ssl_train.build_encoder({"encoder": self.info["encoder"], "encoder_kwargs":
                                             self.info["encoder_kwargs"]}, num_classes, input_shape)
        net.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True))
        return net.eval()


def data_fingerprint(data: ALData) -> str:
    """What self-supervised training sees of ``data``: its fingerprint, the pool's indices, the
    normalisation, and the train source's images when they are in memory (a folder dataset's
    fingerprint already holds every file's digest). The test split takes no part."""
    h = hashlib.sha1(data.fingerprint.encode())
    h.update(ssl_train.pool_indices(data).tobytes())
    h.update(json.dumps([list(data.input_shape), data.extras.get("mean"), data.extras.get("std")],
                        default=str).encode())
    x = getattr(data.train, "x", None)
    if isinstance(x, torch.Tensor):
        h.update(x.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose arithmetic the encoder depends on."""
    import pytorch_lightning
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "pytorch_lightning": pytorch_lightning.__version__, "lightly": ssl_train.require_lightly().__version__}


def fingerprint_parts(spec: Mapping, data: ALData) -> dict:
    """Everything the encoder of ``spec`` on ``data`` depends on (hashed by :func:`fingerprint`)."""
    name, kwargs = ssl_train.encoder_choice(spec, data.input_shape)
    settings = {k: v for k, v in sorted(spec.items()) if k not in NOT_FINGERPRINTED}
    return {"format": FORMAT, "data": data_fingerprint(data), "n_pool": int(len(ssl_train.pool_indices(data))),
            "encoder": name, "encoder_kwargs": kwargs, "settings": settings, "versions": library_versions()}


def fingerprint(parts: Mapping) -> str:
    """The cache key of :func:`fingerprint_parts`."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_cached(folder: Path, fp: str) -> dict | None:
    """The description of ``folder``'s encoder when it is complete and of fingerprint ``fp``, else
    None (missing, torn, edited, or another fingerprint's: said in one line, never used)."""
    info_path, weights = folder / INFO_FILE, folder / ENCODER_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
        if info.get("fingerprint") != fp:
            progress.console.print(f"ssl: {folder} holds an encoder of fingerprint {info.get('fingerprint')!r}, not "
                                   f"{fp!r} (other data or settings): not used, training this one", style="yellow")
            return None
        if not weights.is_file() or _sha1(weights) != info.get("sha1"):
            progress.console.print(f"ssl: {weights} is missing or does not match its checksum: training it again",
                                   style="yellow")
            return None
    except (OSError, ValueError, AttributeError) as e:
        progress.console.print(f"ssl: {info_path} is unreadable ({type(e).__name__}): training the encoder again",
                               style="yellow")
        return None
    return info


def pool_encoder(spec: Mapping, data: ALData, cache_dir: str | Path, accelerator: str = "cpu",
                 threads: int | None = None, quiet: bool = False) -> CachedEncoder:
    """The SimCLR encoder of ``data``'s pool for the ``ssl`` settings ``spec``: read from the cache,
    or trained once (under a file lock, so parallel jobs train it once) and written there.

    Args:
        spec: the ``ssl`` settings as a plain mapping.
        cache_dir: the cache folder (``ssl.cache_dir``).
        accelerator: Lightning's accelerator for training.
        threads: torch CPU threads while training (None: as they are).
        quiet: no line per epoch.

    Raises:
        ConfigError: lightly missing, or a bad ``ssl`` value (one line).
    """
    ssl_train.require_lightly()
    parts = fingerprint_parts(spec, data)
    fp = fingerprint(parts)
    cache_dir = Path(cache_dir).expanduser()
    folder = cache_dir / f"{spec.get('method', 'simclr')}-{fp}"
    info = read_cached(folder, fp)
    if info is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            progress.console.print(f"ssl: another job is training this encoder ({lock.lock_file}); waiting for it")
            lock.acquire()
        try:
            info = read_cached(folder, fp)  # trained by the job we waited for
            if info is None:
                return _train_and_write(spec, data, folder, fp, parts, accelerator, threads, quiet)
        finally:
            lock.release()
    progress.console.print(f"ssl: encoder {fp} from the cache ({folder / ENCODER_FILE})", style="dim")
    return CachedEncoder(folder / ENCODER_FILE, fp, False, info)


def _train_and_write(spec, data, folder: Path, fp: str, parts: dict, accelerator, threads, quiet) -> CachedEncoder:
    what = f"ssl: SimCLR on {parts['n_pool']} pool images ({spec.get('epochs')} epochs, once for this data and settings)"
    progress.console.print(f"{what}: a line per epoch follows")  # a spinner alone shows nothing in a log
    with progress.status(what):
        encoder, info = ssl_train.train_encoder(spec, data, accelerator, threads, quiet)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / ENCODER_FILE
    atomic_write(weights, lambda f: torch.save(encoder.state_dict(), f))
    info = {"fingerprint": fp, **info, "sha1": _sha1(weights), "parts": parts,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(folder / INFO_FILE, lambda f: f.write(json.dumps(info, indent=1, default=str).encode()))
    progress.console.print(f"ssl: encoder {fp} trained in {info['seconds']:.0f} s ({info['cpu_seconds']:.0f} s CPU, "
                           f"{info['threads']} threads), cached in {folder}", style="dim")
    return CachedEncoder(weights, fp, True, info)


def ssl_spec(cfg: DictConfig) -> dict | None:
    """The ``ssl`` settings of ``cfg`` as a plain dict (None when ``ssl`` is not set)."""
    node = OmegaConf.select(cfg, "ssl", default=None)
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def use_ssl_encoder(cfg: DictConfig, data: ALData) -> CachedEncoder | None:
    """With ``ssl`` set: the pool's encoder (cached or trained now) becomes ``model.backbone`` of
    ``cfg`` (name, weights=null, checkpoint, kwargs; the preprocessing keys are kept), so the
    frozen-feature mode computes its features. Without ``ssl``: nothing, None.

    Call it after the config fingerprint is taken (the backbone it writes is derived from ``ssl``
    and the data, which the fingerprints already cover) and before the backbone is built.

    Raises:
        ConfigError: ``ssl`` without ``model.backbone`` (not the frozen-feature mode), lightly
            missing, or a bad ``ssl`` value.
    """
    spec = ssl_spec(cfg)
    if spec is None:
        return None
    ssl_feature_shape(cfg, data)  # the frozen-feature mode, and an encoder that takes the images
    threads = spec.get("threads") or OmegaConf.select(cfg, "trainer.threads", default=None)
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    enc = pool_encoder(spec, data, spec["cache_dir"], accelerator, threads)
    with open_dict(cfg):
        for key, value in enc.backbone().items():
            cfg.model.backbone[key] = value
    return enc


def ssl_feature_shape(cfg: DictConfig, data: ALData) -> tuple[int] | None:
    """``(D,)``: the shape of the features ``ssl`` will give, from a fresh (untrained) encoder, so
    that what is trained on them can be checked before the minutes of the self-supervised step;
    None without ``ssl``.

    Raises:
        ConfigError: ``ssl`` without ``model.backbone``, or an encoder that cannot take the images.
    """
    spec = ssl_spec(cfg)
    if spec is None:
        return None
    if OmegaConf.select(cfg, "model.backbone", default=None) is None:
        raise ConfigError(f"ssl={spec.get('method')} trains the backbone of the frozen-feature mode, but "
                          f"model={OmegaConf.select(cfg, 'model.name')} has no model.backbone: use model=frozen "
                          "trainer=head")
    net, _, _ = ssl_train.build_encoder(spec, data.num_classes, data.input_shape)
    with torch.no_grad():
        return (int(net.eval().embed(torch.zeros(1, *data.input_shape)).shape[1]),)


def encoder_features(enc: CachedEncoder, data: ALData, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``(train features [N, D], test features [M, D])`` of the cached encoder (float32): what the
    frozen-feature mode caches, for a probe or ``dataset=features`` files."""
    net = enc.load(data.num_classes, data.input_shape)
    return ssl_train.encode(net, data.train, batch_size), ssl_train.encode(net, data.test, batch_size)
