"""Image files of renders: PNGs (written atomically), colour-mapped depth and contact sheets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image as PILImage

from .atomic import atomic_open
from .paths import PathLike

__all__ = ["write_png", "turbo", "colorize_depth", "contact_sheet", "DEPTH_MIN_ALPHA", "DEPTH_PERCENTILES"]

# Below this opacity a pixel shows mostly background: its expected depth is noise, so it is drawn black.
DEPTH_MIN_ALPHA = 0.5
DEPTH_PERCENTILES = (1.0, 99.0)  # the colour range ignores a few outliers (floaters, far background)

# Polynomial fit of Google's Turbo colour map (Mikhailov 2019, the published approximation), x in [0, 1].
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def write_png(path: PathLike, pixels: np.ndarray) -> None:
    """Write a uint8 [H, W, 3] (RGB) or [H, W] (grey) array as a PNG, atomically."""
    with atomic_open(path) as file:
        PILImage.fromarray(pixels).save(file, format="PNG")


def turbo(x: np.ndarray) -> np.ndarray:
    """The Turbo colour of each value of ``x`` (clipped to [0, 1]: 0 dark blue, 1 dark red), float [...,
    3]."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)[..., None]
    powers = x ** np.arange(6)
    return np.clip(powers @ _TURBO.T, 0.0, 1.0)


def colorize_depth(
    depth: np.ndarray, alpha: np.ndarray, depth_range: tuple[float, float] | None = None
) -> np.ndarray:
    """uint8 [H, W, 3]: near red, far blue (Turbo over ``depth_range``, by default the 1st-99th
    percentiles of this image's depths), black where ``alpha`` < DEPTH_MIN_ALPHA. Frames of one video
    share a range so that a depth keeps its colour from frame to frame."""
    valid = alpha >= DEPTH_MIN_ALPHA
    image = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return image
    near, far = depth_range if depth_range is not None else np.percentile(depth[valid], DEPTH_PERCENTILES)
    closeness = (far - depth) / (far - near) if far > near else np.full(depth.shape, 0.5)
    image[valid] = np.round(turbo(closeness[valid]) * 255.0).astype(np.uint8)
    return image


def contact_sheet(frames: Sequence[np.ndarray], tile_width: int = 256, gap: int = 2) -> np.ndarray:
    """A grid (about square) of ``frames`` (uint8 [H, W, 3], any sizes), each fitted into a cell
    ``tile_width`` wide with the aspect ratio of the first, on a white background, ``gap`` pixels apart."""
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    first_height, first_width = frames[0].shape[:2]
    cell_width = min(tile_width, first_width)
    cell_height = max(1, round(cell_width * first_height / first_width))
    columns = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / columns)
    sheet = np.full(
        (rows * cell_height + (rows + 1) * gap, columns * cell_width + (columns + 1) * gap, 3),
        255,
        dtype=np.uint8,
    )
    for index, frame in enumerate(frames):
        height, width = frame.shape[:2]
        scale = min(cell_width / width, cell_height / height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        thumbnail = np.asarray(PILImage.fromarray(frame).resize(size, PILImage.Resampling.LANCZOS))
        row, column = divmod(index, columns)
        top = gap + row * (cell_height + gap) + (cell_height - size[1]) // 2
        left = gap + column * (cell_width + gap) + (cell_width - size[0]) // 2
        sheet[top : top + size[1], left : left + size[0]] = thumbnail
    return sheet
