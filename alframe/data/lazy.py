"""Image folders larger than memory: decode on access through a torch ``DataLoader``.

A folder dataset is either *cached* (every image decoded once into one in-memory float32
tensor, :class:`~alframe.data.base.TensorImageDataset`) or *lazy* (:class:`ImageFiles`: each
access opens, decodes, resizes and normalises the file; ``DataLoader`` worker processes,
``dataset.num_workers``, decode in parallel). ``dataset.cache=auto`` (default) caches when
the load's peak (about 4x the float32 tensor) fits in ``dataset.cache_max_gb`` (default: half
the memory available now).

Lazy folders are still checked before any training: :func:`scan_images` decodes every file
once (in the worker processes), keeps only per-file channel sums for the normalisation
statistics, and reports unreadable files by path. Memory stays O(number of files).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

log = logging.getLogger(__name__)

CACHE_CHOICES = ("auto", "true", "false")
#: peak resident memory of an in-memory folder load over its float32 image bytes (measured with
#: benchmarks/bench_folders.py: 3.6-4.3x; uint8 decode buffer, split copies, float32 train + test)
CACHE_PEAK_FACTOR = 4


def image_size_hw(image_size) -> tuple[int, int]:
    """``(H, W)`` from ``dataset.image_size`` (int or ``[H, W]``).

    Raises:
        ValueError: not a positive int or a pair of positive ints.
    """
    if isinstance(image_size, int) or (isinstance(image_size, str) and image_size.isdigit()):
        hw = (int(image_size), int(image_size))
    else:
        hw = tuple(int(v) for v in image_size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"dataset.image_size must be a positive int or [height, width], got {image_size!r}")
    return hw


class ImageDecoder:
    """One file -> ``[C, H, W] uint8``: Pillow decode, convert to ``L`` (``channels=1``) or
    ``RGB`` (3), resize the short side + centre crop (``crop=True``) or stretch to ``image_size``.

    Picklable (DataLoader workers). Raises whatever Pillow raises for a bad file
    (``UnidentifiedImageError``, ``OSError`` for truncated data, ...).

    Raises:
        ValueError: ``channels`` not 1 or 3, or a bad ``image_size`` (at construction).
    """

    def __init__(self, channels: int = 3, image_size: int | Sequence[int] = 64, crop: bool = True):
        if channels not in (1, 3):
            raise ValueError(f"dataset.channels must be 1 (grey) or 3 (RGB), got {channels}")
        self.channels, self.hw, self.crop = int(channels), image_size_hw(image_size), bool(crop)
        self.mode = "L" if channels == 1 else "RGB"
        self.resize = v2.Compose([v2.Resize(min(self.hw), antialias=True), v2.CenterCrop(self.hw)]) if crop \
            else v2.Resize(self.hw, antialias=True)

    def __call__(self, path: str) -> torch.Tensor:
        with Image.open(path) as im:
            im.load()
            im = im.convert(self.mode)
        return self.resize(v2.functional.pil_to_tensor(im))


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


class _ScanFiles(Dataset):
    """Per file: ``(ok, reason, sum [C] float64, sum of squares [C] float64)`` of pixels in [0, 1]."""

    def __init__(self, paths: list[str], decoder: ImageDecoder):
        self.paths, self.decoder = paths, decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            x = self.decoder(self.paths[i]).to(torch.float64).div_(255.0)
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
            return False, _reason(e), None, None
        return True, None, x.sum(dim=(1, 2)).numpy(), x.square().sum(dim=(1, 2)).numpy()


@dataclass
class LazyImages:
    """Readable image files of a folder and their per-file pixel sums (no pixels held).

    Attributes:
        paths: ``[M]`` files that decoded.
        sums, sq_sums: ``[M, C] float64`` per-file sums of the pixel values in [0, 1] and of their squares.
        pixels: pixels per image (H * W).
    """

    paths: list[str]
    sums: np.ndarray
    sq_sums: np.ndarray
    pixels: int

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: np.ndarray) -> LazyImages:
        """The files at positions ``idx`` (``[K] int``)."""
        idx = np.asarray(idx, dtype=np.int64)
        return LazyImages([self.paths[i] for i in idx], self.sums[idx], self.sq_sums[idx], self.pixels)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel ``(mean [C], std [C])`` over all pixels of these files (std 0 -> 1), the
        same statistics as :func:`alframe.data.transforms.channel_stats` of the decoded tensor."""
        count = len(self) * self.pixels
        mean = self.sums.sum(0) / count
        std = np.sqrt(np.clip(self.sq_sums.sum(0) / count - mean * mean, 0, None))
        std[std == 0] = 1.0
        return mean.tolist(), std.tolist()


def scan_images(paths: Sequence[str], decoder: ImageDecoder, num_workers: int = 0,
                batch_size: int = 64) -> tuple[LazyImages, list[int], list[tuple[str, str]]]:
    """Decode every file once (DataLoader, ``num_workers`` processes) to find unreadable ones
    and collect channel sums, keeping no pixels.

    Returns:
        ``(images, ok [M] positions in paths, bad [(path, reason)])``.
    """
    paths = [str(p) for p in paths]
    loader = DataLoader(_ScanFiles(paths, decoder), batch_size=batch_size, num_workers=int(num_workers),
                        collate_fn=list)
    ok, bad, sums, sq = [], [], [], []
    i = 0
    for batch in loader:
        for good, why, s, q in batch:
            if good:
                ok.append(i)
                sums.append(s)
                sq.append(q)
            else:
                bad.append((paths[i], why))
            i += 1
    c = decoder.channels
    images = LazyImages([paths[j] for j in ok], np.asarray(sums, dtype=np.float64).reshape(-1, c),
                        np.asarray(sq, dtype=np.float64).reshape(-1, c), decoder.hw[0] * decoder.hw[1])
    return images, ok, bad


class ImageFiles(Dataset):
    """Images decoded on access: ``ds[i] -> (image [C, H, W] float32, label int64)``, with the
    same values as the cached tensor (``uint8 / 255``, then ``v2.Normalize(mean, std)``).

    Args:
        paths: ``[N]`` image files (already checked by :func:`scan_images`).
        y: ``[N] int`` labels (-1 = unknown), or None for all -1.
        decoder: how to decode and resize a file.
        mean, std: per-channel normalisation, or None for values in [0, 1].
        num_workers: DataLoader worker processes for loaders over this dataset
            (:func:`alframe.data.base.make_loader` reads it).

    Raises:
        ValueError: ``y`` and ``paths`` of different lengths.
        DatasetError: a file that decoded at the check no longer does (changed on disk).
    """

    def __init__(self, paths: Sequence[str], y: np.ndarray | None, decoder: ImageDecoder,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, num_workers: int = 0):
        self.paths = [str(p) for p in paths]
        self.y = torch.full((len(self.paths),), -1, dtype=torch.long) if y is None \
            else torch.as_tensor(np.asarray(y), dtype=torch.long)
        if len(self.y) != len(self.paths):
            raise ValueError(f"{len(self.paths)} files but {len(self.y)} labels")
        self.decoder = decoder
        self.norm = v2.Normalize(mean=list(mean), std=list(std)) if mean is not None else None
        self.num_workers = int(num_workers)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` as a cached tensor would have."""
        return (len(self.paths), self.decoder.channels, *self.decoder.hw)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from alframe.errors import DatasetError

        try:
            x = self.decoder(self.paths[i]).to(torch.float32).div_(255.0)
        except Exception as e:
            raise DatasetError(f"image file {self.paths[i]} cannot be read any more ({_reason(e)}); it was "
                               "readable when the run started") from e
        return (self.norm(x) if self.norm is not None else x), self.y[i]


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; elsewhere the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def use_cache(cache, n_images: int, channels: int, hw: tuple[int, int], cache_max_gb: float | None = None) -> bool:
    """Whether to decode a folder into memory: ``cache`` true/false, or ``auto``: when the
    in-memory load's peak, :data:`CACHE_PEAK_FACTOR` x the float32 tensor
    (``n_images * C * H * W * 4`` bytes), fits in ``cache_max_gb`` GiB (default: half of
    :func:`available_memory`).

    Raises:
        ConfigError: ``cache`` not auto/true/false, or ``cache_max_gb`` <= 0.
    """
    from alframe.errors import ConfigError

    value = str(cache).lower()
    if value not in CACHE_CHOICES:
        raise ConfigError(f"dataset.cache={cache!r} is invalid: allowed auto, true, false")
    if value != "auto":
        return value == "true"
    if cache_max_gb is not None and float(cache_max_gb) <= 0:
        raise ConfigError(f"dataset.cache_max_gb={cache_max_gb} is invalid: must be > 0 (GiB) or null")
    limit = float(cache_max_gb) * 2**30 if cache_max_gb is not None else available_memory() / 2
    need = CACHE_PEAK_FACTOR * n_images * channels * hw[0] * hw[1] * 4
    fits = need <= limit
    log.info("dataset.cache=auto: loading %d images into memory would peak at ~%.2f GiB, limit %.2f GiB -> %s",
             n_images, need / 2**30, limit / 2**30, "in memory" if fits else "decoded on access")
    return fits
