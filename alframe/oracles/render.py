"""Showing pool samples to a person: PNG files, PNG bytes for the web page, terminal previews."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.segment import Segment
from rich.style import Style
from torch.utils.data import Dataset


def sample_array(dataset: Dataset, i: int) -> np.ndarray:
    """Image ``i`` of ``dataset`` as ``[H, W]`` (grey) or ``[H, W, 3]`` (colour) ``uint8``.

    The model-space tensor (normalised, ``[C, H, W]`` float) is min-max scaled per image, so
    the preview shows the contrast the model sees whatever the normalisation.

    Raises:
        ValueError: the sample is not a ``[C, H, W]`` image with 1 or 3 channels.
    """
    item = dataset[int(i)]
    x = item[0] if isinstance(item, (tuple, list)) else item
    x = torch.as_tensor(x).detach().float().cpu()
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"sample {i} is not a [C, H, W] image with 1 or 3 channels: shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    a = (x.numpy() * 255.0 + 0.5).astype(np.uint8)
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def sample_image(dataset: Dataset, i: int, min_side: int = 112) -> Image.Image:
    """Image ``i`` as a PIL image, upscaled (nearest neighbour) so its short side is at least
    ``min_side`` pixels; small images such as 8x8 digits stay readable."""
    img = Image.fromarray(sample_array(dataset, i))
    short = min(img.size)
    if short < min_side:
        f = -(-min_side // short)
        img = img.resize((img.size[0] * f, img.size[1] * f), Image.NEAREST)
    return img


def png_bytes(dataset: Dataset, i: int) -> bytes:
    """PNG encoding of :func:`sample_image`."""
    buf = io.BytesIO()
    sample_image(dataset, i).save(buf, format="PNG")
    return buf.getvalue()


def save_png(dataset: Dataset, i: int, path: Path) -> Path:
    """Write :func:`sample_image` of sample ``i`` to ``path`` (folders created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        sample_image(dataset, i).save(path, format="PNG")
    return path


RAMP = " .:-=+*#%@"


class HalfBlockImage:
    """A rich renderable drawing an image with unicode upper half blocks (two pixels per cell),
    or with a brightness ramp of ASCII characters (:data:`RAMP`, dark to bright) when the console
    has no colours or colour is turned off (``NO_COLOR=1``).

    Args:
        pixels: ``[H, W]`` or ``[H, W, 3]`` uint8.
        width: columns to draw (the image is resized to ``width`` x proportional height).
    """

    def __init__(self, pixels: np.ndarray, width: int = 24):
        img = Image.fromarray(pixels).convert("RGB")
        h = max(2, round(img.size[1] * width / img.size[0]))
        h += h % 2
        self.rgb = np.asarray(img.resize((width, h), Image.NEAREST))

    def __rich_console__(self, console, options):
        rgb = self.rgb
        # No colours (a pipe, TERM=dumb, NO_COLOR=1: rich keeps a colour system but drops every
        # colour, so half blocks would all look alike): characters whose density is the grey level.
        if console.color_system is None or console.no_color:
            grey = rgb.astype(float).mean(axis=2)
            grey = (grey[0::2] + grey[1::2]) / 2
            for row in grey:
                yield Segment("".join(RAMP[int(v * (len(RAMP) - 1) / 255 + 0.5)] for v in row))
                yield Segment.line()
            return
        for y in range(0, rgb.shape[0], 2):
            for x in range(rgb.shape[1]):
                top, bottom = rgb[y, x], rgb[y + 1, x]
                yield Segment("▀", Style(color=f"rgb({top[0]},{top[1]},{top[2]})",
                                         bgcolor=f"rgb({bottom[0]},{bottom[1]},{bottom[2]})"))
            yield Segment.line()


def terminal_preview(dataset: Dataset, i: int, width: int | None = None) -> HalfBlockImage:
    """Half-block preview of sample ``i``; ``width`` defaults to the image width clamped to [24, 48]."""
    a = sample_array(dataset, i)
    if width is None:
        width = int(min(48, max(24, a.shape[1])))
    return HalfBlockImage(a, width)
