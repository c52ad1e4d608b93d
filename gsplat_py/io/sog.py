"""PlayCanvas's SOG (Spatially Ordered Gaussians, version 2): a ``meta.json`` and lossless WebP images, here
bundled as one ``.sog`` file (a ZIP archive of them). Written and read through Pillow's WebP codec.

Every per-Gaussian image has W x H texels, W = 4 ceil(sqrt(N) / 4), H = 4 ceil(N / W / 4); Gaussian i is
texel (i mod W, i div W), row-major from the top left; texels past N are ignored. The writer orders the
Gaussians along a Morton curve of their positions (`gsplat_py.io.packing.morton_order`), so that
neighbouring texels hold neighbouring Gaussians and the images compress.

    file                channels  content
    means_l.webp        RGB       low byte of the 16-bit quantised x, y, z
    means_u.webp        RGB       high byte
    quats.webp          RGBA      smallest three components of the rotation, A = 252 + index of the largest
    scales.webp         RGB       indices into scales.codebook (log-scales) for axes 0, 1, 2
    sh0.webp            RGBA      indices into sh0.codebook (SH DC) for R, G, B; A = round(255 opacity)
    shN_labels.webp     RG        16-bit index (R low, G high) into the palette of higher SH coefficients
    shN_centroids.webp  RGB       the palette: 64 entries per row, entry e at columns (e mod 64) C + j for
                                  its coefficient j = 0..C-1 (C = 3, 8 or 15 per channel), R G B = indices
                                  into shN.codebook of that coefficient's three channels

Quantisation (the round-trip bounds the tests check):

- positions: each axis through v = sign(x) ln(|x| + 1), stored as round(65535 (v - min) / (max - min)) with
  the axis's ``means.mins``/``maxs`` in meta.json; decoded x = sign(v') (exp(|v'|) - 1). The error in v is at
  most (max - min) / 131070, so |dx| <= (|x| + 1) (exp((max - min) / 131070) - 1).
- rotations: the unit quaternion w x y z signed so its largest component is positive; the other three, each
  in [-1/sqrt 2, 1/sqrt 2], as round(255 (sqrt(2) q / 2 + 1/2)): error at most 1 / (255 sqrt 2) each.
- log-scales and SH DC: one 256-entry codebook each (1D k-means over all three axes / channels,
  `gsplat_py.io.codebooks`); every value decodes to its nearest codebook entry.
- opacity: round(255 sigmoid(logit)): error at most 1/510.
- higher SH (degree 1-3): the Gaussians' channel-major ``f_rest`` vectors clustered into a palette by
  k-means, and the palette's values quantised to a third 256-entry codebook; each Gaussian decodes to its
  palette entry. The palette's size sets the quality: by default the power of two nearest N / 16, from 1024
  to 65536 (at most N). PlayCanvas's writer takes 1024 min(64, 2^floor(log2(N / 1024))), up to N / 2 below
  a million Gaussians: on the bundled scene's 61,687 Gaussians that is 32,768 entries, 7.0x smaller than the
  PLY at 48.5 dB against it, where 4,096 give 15.1x at 42.2 dB (BENCHMARKS.md).

The world frame: SOG stores the Gaussians in the axes of the 3DGS PLY (no conversion). meta.json's
``asset`` object carries ``generator`` and, from gsplat_py, ``comments``: the same lines as a PLY header's
comments (the model's world frame, `gsplat_py.data.world_frame`); other readers ignore them.

Reading accepts a ``.sog`` bundle or a ``meta.json`` whose images are files beside it, version 2 only (the
older version 1 has no ``version`` field). Errors name the file and the field (SplatFormatError).
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..model import GaussianSplats
from .atomic import write_bytes_atomically
from .codebooks import scalar_codebook, vector_palette
from .packing import (
    SplatFormatError,
    byte_to_logit,
    channel_major_rest,
    check_finite,
    from_smallest_three,
    morton_order,
    opacity_to_byte,
    read_file,
    require_gaussians,
    sh_from_channel_major,
    smallest_three,
    splat_arrays,
    splats_from_arrays,
)
from .paths import PathLike

__all__ = [
    "SOG_VERSION",
    "META_FILE",
    "SH_PALETTE_ITERATIONS",
    "MAX_PALETTE",
    "write_sog",
    "read_sog",
    "read_sog_comments",
    "sog_texture_size",
    "sh_palette_size",
]

SOG_VERSION = 2
META_FILE = "meta.json"
CODEBOOK_SIZE = 256
POSITION_LEVELS = 65535  # 16 bits per axis
QUAT_TAG = 252  # alpha of quats.webp: QUAT_TAG + index (w x y z) of the component left out
PALETTE_ROW = 64  # palette entries per row of shN_centroids.webp
SH_PALETTE_ITERATIONS = 10  # k-means iterations of the SH palette (PlayCanvas's default)
MIN_PALETTE, MAX_PALETTE = 1024, 65536  # default palette sizes; 65536: the labels have 16 bits
_COEFFICIENTS_PER_CHANNEL = {1: 3, 2: 8, 3: 15}  # higher SH coefficients per colour channel, by degree
_WEBP_OPTIONS = {"lossless": True, "exact": True, "quality": 50, "method": 4}
# exact: keep the RGB of texels whose alpha is 0 (sh0 texels of transparent Gaussians); lossless WebP would
# otherwise be free to change them.


def sog_texture_size(count: int) -> tuple[int, int]:
    """(W, H) of the per-Gaussian images for ``count`` Gaussians (module docstring)."""
    width = 4 * math.ceil(math.sqrt(count) / 4)
    return width, 4 * math.ceil(count / width / 4)


def sh_palette_size(count: int) -> int:
    """The default palette size for ``count`` Gaussians: the power of two nearest count / 16, within
    [MIN_PALETTE, MAX_PALETTE], at most ``count`` (module docstring)."""
    nearest = 2 ** round(math.log2(count / 16)) if count >= 16 else 1
    return min(count, MAX_PALETTE, max(MIN_PALETTE, nearest))


def _log_transform(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _inverse_log_transform(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # a meta.json range too large for float64 is reported by check_finite
        return np.sign(v) * np.expm1(np.abs(v))


def _texture(count: int, size: tuple[int, int], channels: Sequence[np.ndarray]) -> np.ndarray:
    """An RGBA uint8 [H, W, 4] image whose first ``count`` texels hold ``channels`` (1 to 4 uint8 arrays of
    ``count`` values; missing channels are 0, a missing alpha 255)."""
    width, height = size
    texels = np.zeros((width * height, 4), dtype=np.uint8)
    texels[:, 3] = 255
    for channel, values in enumerate(channels):
        texels[:count, channel] = values
    return texels.reshape(height, width, 4)


def _webp(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="WEBP", **_WEBP_OPTIONS)
    return buffer.getvalue()


def _codebook_json(codebook: np.ndarray) -> list[float]:
    """The float32 entries as the shortest decimals that read back as the same float32."""
    return [float(str(np.float32(value))) for value in codebook]


def write_sog(
    path: PathLike,
    splats: GaussianSplats,
    comments: Sequence[str] = (),
    generator: str = "gsplat_py",
    palette_size: int | None = None,
    palette_iterations: int = SH_PALETTE_ITERATIONS,
) -> None:
    """Write ``splats`` as a ``.sog`` bundle, atomically. ``comments`` go to meta.json's ``asset.comments``,
    ``generator`` to ``asset.generator``; ``palette_size`` (1 to 65536; default :func:`sh_palette_size`)
    bounds the entries of the SH palette. ValueError before writing for invalid or no Gaussians, a
    palette size out of range or an SH degree above 3."""
    if palette_size is not None and not 1 <= palette_size <= MAX_PALETTE:
        raise ValueError(f"SOG palette size {palette_size}: expected 1 to {MAX_PALETTE}")
    if splats.sh_degree > max(_COEFFICIENTS_PER_CHANNEL):
        raise ValueError(
            f"{path}: SH degree {splats.sh_degree}: SOG stores degrees 0 to {max(_COEFFICIENTS_PER_CHANNEL)}"
        )
    arrays = splat_arrays(path, splats)
    count = len(arrays.means)
    order = morton_order(arrays.means)
    size = sog_texture_size(count)
    files: dict[str, bytes] = {}

    means = arrays.means[order]
    transformed = _log_transform(means)
    mins, maxs = transformed.min(axis=0), transformed.max(axis=0)
    extent = np.where(maxs > mins, maxs - mins, 1.0)
    levels = np.round((transformed - mins) / extent * POSITION_LEVELS).astype(np.uint16)
    files["means_l.webp"] = _webp(_texture(count, size, list((levels & 0xFF).astype(np.uint8).T)))
    files["means_u.webp"] = _webp(_texture(count, size, list((levels >> 8).astype(np.uint8).T)))

    largest, others = smallest_three(arrays.quats[order])
    packed = np.round(255.0 * (others * (math.sqrt(2.0) / 2.0) + 0.5)).clip(0, 255).astype(np.uint8)
    files["quats.webp"] = _webp(_texture(count, size, [*packed.T, (QUAT_TAG + largest).astype(np.uint8)]))

    scale_codebook, scale_indices = scalar_codebook(arrays.log_scales[order], CODEBOOK_SIZE)
    files["scales.webp"] = _webp(_texture(count, size, list(scale_indices.astype(np.uint8).T)))

    dc_codebook, dc_indices = scalar_codebook(arrays.sh[order, 0], CODEBOOK_SIZE)
    alpha = opacity_to_byte(arrays.logit_opacities[order])
    files["sh0.webp"] = _webp(_texture(count, size, [*dc_indices.astype(np.uint8).T, alpha]))

    meta: dict[str, Any] = {
        "version": SOG_VERSION,
        "asset": {"generator": generator, "comments": list(comments)},
        "count": count,
        "means": {
            "mins": [float(v) for v in mins],
            "maxs": [float(v) for v in maxs],
            "files": ["means_l.webp", "means_u.webp"],
        },
        "scales": {"codebook": _codebook_json(scale_codebook), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": _codebook_json(dc_codebook), "files": ["sh0.webp"]},
    }
    degree = splats.sh_degree
    if degree > 0:
        per_channel = _COEFFICIENTS_PER_CHANNEL[degree]
        rest = channel_major_rest(arrays.sh[order])
        entries_wanted = sh_palette_size(count) if palette_size is None else min(palette_size, count)
        palette, labels = vector_palette(rest, entries_wanted, palette_iterations)
        rest_codebook, palette_indices = scalar_codebook(palette, CODEBOOK_SIZE)
        entries = len(palette)
        # [entries, 3 channels, C coefficients] -> texels [entries, C, RGB]
        by_coefficient = palette_indices.reshape(entries, 3, per_channel).transpose(0, 2, 1).astype(np.uint8)
        rows = math.ceil(entries / PALETTE_ROW)
        centroids = np.zeros((rows * PALETTE_ROW * per_channel, 4), dtype=np.uint8)
        centroids[:, 3] = 255
        centroids[: entries * per_channel, :3] = by_coefficient.reshape(-1, 3)
        files["shN_centroids.webp"] = _webp(centroids.reshape(rows, PALETTE_ROW * per_channel, 4))
        label_bytes = [(labels & 0xFF).astype(np.uint8), (labels >> 8).astype(np.uint8)]
        files["shN_labels.webp"] = _webp(_texture(count, size, label_bytes))
        meta["shN"] = {
            "count": entries,
            "bands": degree,
            "codebook": _codebook_json(rest_codebook),
            "files": ["shN_centroids.webp", "shN_labels.webp"],
        }

    bundle = io.BytesIO()
    # Stored, not deflated: the images are compressed already, and every SOG reader supports stored entries.
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(META_FILE, json.dumps(meta, separators=(",", ":")))
        for name, data in files.items():
            archive.writestr(name, data)
    write_bytes_atomically(path, bundle.getvalue())


# --------------------------------------------------------------------------------------------------------
# Reading


def _opener(path: PathLike) -> tuple[Callable[[str], bytes], Callable[[], None]]:
    """A function reading a member of the SOG at ``path`` by name (meta.json's names), and its closer."""
    location = os.fspath(path)
    if Path(location).name == META_FILE:
        folder = Path(location).parent
        return lambda name: read_file(folder / name), lambda: None
    try:
        archive = zipfile.ZipFile(location)
    except OSError as error:
        raise SplatFormatError(f"{location}: cannot read file: {error.strerror or error}") from None
    except zipfile.BadZipFile as error:
        raise SplatFormatError(f"{location}: not a SOG bundle (a ZIP archive): {error}") from None

    def read_member(name: str) -> bytes:
        try:
            return archive.read(name)
        except KeyError:
            raise SplatFormatError(f"{location}: {name}: not in the bundle") from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise SplatFormatError(f"{location}: {name}: cannot be extracted: {error}") from None

    return read_member, archive.close


class _Meta:
    """meta.json's fields, each checked where it is read; errors name the file and the field."""

    def __init__(self, location: str, data: bytes):
        self.location = location
        try:
            self.root = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SplatFormatError(f"{location}: {META_FILE}: not valid JSON: {error}") from None
        if not isinstance(self.root, dict):
            raise SplatFormatError(f"{location}: {META_FILE}: expected a JSON object")

    def error(self, field: str, expected: str) -> SplatFormatError:
        return SplatFormatError(f"{self.location}: {META_FILE}: {field}: {expected}")

    def get(self, field: str, required: bool = True) -> Any:
        value: Any = self.root
        for key in field.split("."):
            if not isinstance(value, dict) or key not in value:
                if required:
                    raise self.error(field, "missing")
                return None
            value = value[key]
        return value

    def integer(self, field: str) -> int:
        value = self.get(field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, f"expected an integer, got {value!r}")
        return value

    def numbers(self, field: str, length: int | None = None) -> np.ndarray:
        value = self.get(field)
        if (
            not isinstance(value, list)
            or (length is not None and len(value) != length)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            count = f"{length} " if length is not None else ""
            raise self.error(field, f"expected a list of {count}numbers")
        array = np.asarray(value, dtype=np.float64)
        if not np.isfinite(array).all():
            raise self.error(field, "non-finite value")
        return array

    def codebook(self, field: str) -> np.ndarray:
        codebook = self.numbers(field).astype(np.float32)
        if not 1 <= len(codebook) <= CODEBOOK_SIZE:
            raise self.error(field, f"{len(codebook)} entries; expected 1 to {CODEBOOK_SIZE}")
        return codebook

    def files(self, field: str, count: int) -> list[str]:
        names = self.get(field)
        if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
            raise self.error(field, f"expected a list of {count} file name{'s' if count > 1 else ''}")
        return names


def _decode_webp(location: str, name: str, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGBA"))
    except Exception as error:  # Pillow raises several types for undecodable data
        raise SplatFormatError(f"{location}: {name}: not a readable image: {error}") from None


def _open_meta(path: PathLike) -> tuple[_Meta, Callable[[str], bytes], Callable[[], None]]:
    read, close = _opener(path)
    try:
        meta = _Meta(os.fspath(path), read(META_FILE))
    except BaseException:
        close()
        raise
    return meta, read, close


def read_sog_comments(path: PathLike) -> list[str]:
    """meta.json's ``asset.comments`` (gsplat_py's metadata lines), [] when it has none."""
    meta, _, close = _open_meta(path)
    close()
    comments = meta.get("asset.comments", required=False)
    if comments is None:
        return []
    if not isinstance(comments, list) or not all(isinstance(c, str) for c in comments):
        raise meta.error("asset.comments", "expected a list of strings")
    return comments


def read_sog(path: PathLike) -> GaussianSplats:
    """Read a SOG (a ``.sog`` bundle or a ``meta.json`` with its images beside it) into float32 splats, in the
    file's order. SplatFormatError naming the file and the field for anything unreadable or inconsistent."""
    meta, read, close = _open_meta(path)
    try:
        return _Decoder(meta, read).splats()
    finally:
        close()


class _Decoder:
    """Decodes the images meta.json names, checking each against meta.json and the others."""

    def __init__(self, meta: _Meta, read: Callable[[str], bytes]):
        self.meta, self.read, self.location = meta, read, meta.location
        version = meta.get("version", required=False)
        if version is None:
            raise meta.error("version", "missing: SOG version 1 is not supported (only version 2)")
        if version != SOG_VERSION:
            raise meta.error("version", f"{version!r} is not supported (only version {SOG_VERSION})")
        self.count = meta.integer("count")
        require_gaussians(self.location, f"{META_FILE}: count", self.count)
        self.size: tuple[int, int] | None = None

    def texels(self, name: str) -> np.ndarray:
        """The first ``count`` texels [count, 4] of a per-Gaussian image (all must have one size)."""
        pixels = _decode_webp(self.location, name, self.read(name))
        height, width = pixels.shape[:2]
        if width * height < self.count:
            raise SplatFormatError(
                f"{self.location}: {name}: {width}x{height} texels hold {width * height} Gaussians; "
                f"{META_FILE} count is {self.count}"
            )
        if self.size is not None and (width, height) != self.size:
            raise SplatFormatError(
                f"{self.location}: {name}: {width}x{height} texels; the other images are "
                f"{self.size[0]}x{self.size[1]}"
            )
        self.size = (width, height)
        return pixels.reshape(-1, 4)[: self.count].astype(np.int64)

    def lookup(self, name: str, field: str, indices: np.ndarray) -> np.ndarray:
        """The entries of meta.json's codebook ``field`` at ``indices`` [rows, columns] read from ``name``."""
        codebook = self.meta.codebook(field)
        bad = indices >= len(codebook)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise SplatFormatError(
                f"{self.location}: {name}: codebook index {int(indices[bad][0])} at row {row}; {META_FILE} "
                f"{field} has {len(codebook)} entries"
            )
        return codebook[indices].astype(np.float64)

    def splats(self) -> GaussianSplats:
        meta = self.meta
        if meta.get("model", required=False) == "antialiased":
            warnings.warn(
                f"{self.location}: the model was trained with antialiasing; gsplat_py renders it without the "
                "antialiasing filter",
                stacklevel=3,
            )
        mins = meta.numbers("means.mins", 3)
        maxs = meta.numbers("means.maxs", 3)
        low_name, high_name = meta.files("means.files", 2)
        levels = self.texels(low_name)[:, :3] | (self.texels(high_name)[:, :3] << 8)
        extent = np.where(maxs != mins, maxs - mins, 1.0)
        means = _inverse_log_transform(mins + extent * (levels / POSITION_LEVELS))
        check_finite(self.location, "positions (means)", means)

        (quats_name,) = meta.files("quats.files", 1)
        quat_texels = self.texels(quats_name)
        tags = quat_texels[:, 3] - QUAT_TAG
        if ((tags < 0) | (tags > 3)).any():
            row = int(np.flatnonzero((tags < 0) | (tags > 3))[0])
            raise SplatFormatError(
                f"{self.location}: {quats_name}: alpha {int(quat_texels[row, 3])} at Gaussian {row} is no "
                f"component tag ({QUAT_TAG}-{QUAT_TAG + 3})"
            )
        quats = from_smallest_three(tags, (quat_texels[:, :3] / 255.0 - 0.5) * math.sqrt(2.0))

        (scales_name,) = meta.files("scales.files", 1)
        log_scales = self.lookup(scales_name, "scales.codebook", self.texels(scales_name)[:, :3])

        (sh0_name,) = meta.files("sh0.files", 1)
        sh0_texels = self.texels(sh0_name)
        dc = self.lookup(sh0_name, "sh0.codebook", sh0_texels[:, :3])
        logit_opacities = byte_to_logit(sh0_texels[:, 3])

        has_rest = meta.get("shN", required=False) is not None
        sh = sh_from_channel_major(dc, self.rest()) if has_rest else dc[:, None, :]
        return splats_from_arrays(means, quats, log_scales, logit_opacities, sh)

    def rest(self) -> np.ndarray:
        """The channel-major higher SH coefficients [count, 3 C] from the palette and the labels."""
        meta = self.meta
        degree = meta.integer("shN.bands")
        if degree not in _COEFFICIENTS_PER_CHANNEL:
            raise meta.error("shN.bands", f"{degree}; expected 1, 2 or 3")
        per_channel = _COEFFICIENTS_PER_CHANNEL[degree]
        entries = meta.integer("shN.count")
        if entries < 1:
            raise meta.error("shN.count", f"{entries}; expected a positive palette size")
        centroids_name, labels_name = meta.files("shN.files", 2)
        palette = _decode_webp(self.location, centroids_name, self.read(centroids_name))
        rows, width = palette.shape[:2]
        if width != PALETTE_ROW * per_channel or rows * PALETTE_ROW < entries:
            raise SplatFormatError(
                f"{self.location}: {centroids_name}: {width}x{rows} texels; {entries} palette entries of "
                f"degree {degree} need {PALETTE_ROW * per_channel}x{math.ceil(entries / PALETTE_ROW)}"
            )
        # texels [rows * 64 entries, C, RGB] -> per entry [3 channels, C]: channel-major
        entry_texels = palette[..., :3].reshape(rows * PALETTE_ROW, per_channel, 3)[:entries]
        indices = entry_texels.astype(np.int64).transpose(0, 2, 1).reshape(entries, 3 * per_channel)
        values = self.lookup(centroids_name, "shN.codebook", indices)
        label_texels = self.texels(labels_name)
        labels = label_texels[:, 0] | (label_texels[:, 1] << 8)
        if (labels >= entries).any():
            row = int(np.flatnonzero(labels >= entries)[0])
            raise SplatFormatError(
                f"{self.location}: {labels_name}: palette index {int(labels[row])} at Gaussian {row}; "
                f"{META_FILE} shN.count is {entries}"
            )
        return values[labels]
