"""The "compressed PLY" of SuperSplat and PlayCanvas: a binary little-endian PLY whose Gaussians are packed
into 32-bit integers relative to per-chunk bounds, 256 Gaussians a chunk, plus optional 8-bit SH.

    element chunk  ceil(N / 256)   float min_x min_y min_z max_x max_y max_z min_scale_x min_scale_y
                                   min_scale_z max_scale_x max_scale_y max_scale_z min_r min_g min_b
                                   max_r max_g max_b
    element vertex N               uint packed_position packed_rotation packed_scale packed_color
    element sh N (SH degree > 0)   uchar f_rest_0 .. f_rest_{3(K-1)-1}  (the PLY's channel-major order)

Gaussian i belongs to chunk i div 256. Within its chunk, with t = (v - min) / (max - min) and
unorm_b(t) = floor(t (2^b - 1) + 0.5):

- packed_position: x, y, z as 11, 10, 11 bits (bits 21-31, 11-20, 0-10);
- packed_scale: the log-scales, the same way, between the chunk's min_scale / max_scale;
- packed_color: bits 24-31, 16-23, 8-15 the colour 0.5 + SH_C0 f_dc of R, G, B between min_r.. and max_r..,
  bits 0-7 the opacity sigmoid(logit) as unorm_8;
- packed_rotation: bits 30-31 the index of the largest component of the unit quaternion w x y z (made
  positive), then the other three in order as unorm_10(q sqrt(2) / 2 + 1/2), the first in bits 20-29;
- f_rest: clamp(floor(256 (f / 8 + 1/2)), 0, 255); read back as 8 ((b + 1/2) / 256 - 1/2), with 0 and 255
  read as -4 and 4.

The writer orders the Gaussians along a Morton curve of their positions (`gsplat_py.io.packing`), so that a
chunk's bounds are tight. Round-trip bounds: a position within a chunk of extent e per axis, e / 4094 (x,
z) and e / 2046 (y); log-scales the same with the chunk's scale extent; colour (0.5 + SH_C0 f_dc) 1/510 of
its chunk's range; opacity 1/510; rotation components 1 / (1023 sqrt 2) each (the largest, rebuilt, within
three times that); f_rest 1/64 inside (-4 + 1/32, 4 - 1/32), 1/32 in the two end buckets, clamped to
[-4, 4].

The header's ``comment`` lines carry metadata as a PLY's do (`gsplat_py.io.ply.read_ply_comments`). Reading
accepts the 12-property chunks without colour bounds too (colours then stored directly as unorm_8); errors
name the file and the element or property (SplatFormatError).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..model import SH_C0, GaussianSplats
from .atomic import atomic_open
from .packing import (
    SplatFormatError,
    byte_to_logit,
    channel_major_rest,
    check_finite,
    from_smallest_three,
    morton_order,
    require_gaussians,
    sh_from_channel_major,
    sigmoid,
    smallest_three,
    splat_arrays,
    splats_from_arrays,
)
from .paths import PathLike
from .ply import ply_header_lines

__all__ = [
    "CHUNK_SIZE",
    "CHUNK_PROPERTIES",
    "PACKED_PROPERTIES",
    "write_compressed_ply",
    "read_compressed_ply",
    "is_compressed_ply",
]

CHUNK_SIZE = 256
CHUNK_PROPERTIES = [
    f"{end}_{name}"
    for group in (("x", "y", "z"), ("scale_x", "scale_y", "scale_z"), ("r", "g", "b"))
    for end in ("min", "max")
    for name in group
]
PACKED_PROPERTIES = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
SH_RANGE = 8.0  # f_rest bytes cover [-4, 4]
POSITION_BITS = (11, 10, 11)
# PLY's type names of numpy's kinds and sizes
_TYPE_NAMES = {"f4": "float", "f8": "double", "u1": "uchar", "u2": "ushort", "u4": "uint", "i1": "char"}
_TYPE_NAMES |= {"i2": "short", "i4": "int"}


MAX_SH_DEGREE_IN_FORMAT = 3  # SuperSplat's compressed PLY: f_rest of SH bands 1 to 3
SH_PROPERTY_COUNTS = tuple(3 * ((d + 1) ** 2 - 1) for d in range(1, MAX_SH_DEGREE_IN_FORMAT + 1))  # 9, 24, 45


def _unorm(t: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(t * top + 0.5), 0, top).astype(np.uint32)


def _chunk_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk minima and maxima [C, D] of values [N, D] (the last chunk may be short)."""
    starts = np.arange(0, len(values), CHUNK_SIZE)
    return np.minimum.reduceat(values, starts, axis=0), np.maximum.reduceat(values, starts, axis=0)


def _normalized(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(v - low) / (high - low) of each value against its chunk's bounds (0 where the chunk is flat)."""
    chunk = np.arange(len(values)) // CHUNK_SIZE
    low, extent = low[chunk], (high - low)[chunk]
    return np.where(extent > 0, (values - low) / np.where(extent > 0, extent, 1.0), 0.0)


def _pack_triple(t: np.ndarray) -> np.ndarray:
    x, y, z = (_unorm(t[:, axis], bits) for axis, bits in enumerate(POSITION_BITS))
    return x << 21 | y << 11 | z


def _pack_color(color_t: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    red, green, blue = (_unorm(color_t[:, channel], 8) for channel in range(3))
    return red << 24 | green << 16 | blue << 8 | _unorm(opacity, 8)


def _header(chunks: int, count: int, rest: int, comments: Sequence[str]) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", *(f"comment {text}" for text in comments)]
    lines += [f"element chunk {chunks}", *(f"property float {name}" for name in CHUNK_PROPERTIES)]
    lines += [f"element vertex {count}", *(f"property uint {name}" for name in PACKED_PROPERTIES)]
    if rest:
        lines += [f"element sh {count}", *(f"property uchar f_rest_{i}" for i in range(rest))]
    return ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")


def write_compressed_ply(path: PathLike, splats: GaussianSplats, comments: Sequence[str] = ()) -> None:
    """Write ``splats`` as a compressed PLY, atomically; ``comments`` become header comment lines. ValueError
    before writing for invalid or no Gaussians, a comment that is not one line of ASCII or an SH degree
    above the format's 3."""
    if splats.sh_degree > MAX_SH_DEGREE_IN_FORMAT:
        raise ValueError(
            f"{os.fspath(path)}: SH degree {splats.sh_degree}: the compressed PLY stores degrees 0 to "
            f"{MAX_SH_DEGREE_IN_FORMAT}"
        )
    arrays = splat_arrays(path, splats)
    for text in comments:
        if not text.isascii() or "\n" in text or "\r" in text:
            raise ValueError(f"{os.fspath(path)}: PLY comment {text!r} is not one line of ASCII")
    order = morton_order(arrays.means)
    means, log_scales = arrays.means[order], arrays.log_scales[order]
    colors = SH_C0 * arrays.sh[order, 0] + 0.5
    position_bounds, scale_bounds, color_bounds = (_chunk_bounds(v) for v in (means, log_scales, colors))

    largest, others = smallest_three(arrays.quats[order])
    fields = [_unorm(others[:, i] * (math.sqrt(2.0) / 2.0) + 0.5, 10) for i in range(3)]
    color_t = _normalized(colors, *color_bounds)
    opacity = sigmoid(arrays.logit_opacities[order])
    packed = np.stack(
        [
            _pack_triple(_normalized(means, *position_bounds)),
            largest.astype(np.uint32) << 30 | fields[0] << 20 | fields[1] << 10 | fields[2],
            _pack_triple(_normalized(log_scales, *scale_bounds)),
            _pack_color(color_t, opacity),
        ],
        axis=1,
    ).astype("<u4")
    chunk_table = np.concatenate([*position_bounds, *scale_bounds, *color_bounds], axis=1).astype("<f4")
    rest = channel_major_rest(arrays.sh[order])
    rest_bytes = np.clip(np.floor((rest / SH_RANGE + 0.5) * 256.0), 0, 255).astype(np.uint8)
    with atomic_open(path) as file:
        file.write(_header(len(chunk_table), len(means), rest.shape[1], comments))
        file.write(chunk_table.tobytes())
        file.write(packed.tobytes())
        file.write(rest_bytes.tobytes())


# --------------------------------------------------------------------------------------------------------
# Reading


def is_compressed_ply(path: PathLike) -> bool:
    """Whether the PLY header of ``path`` declares a ``chunk`` element and a ``packed_position`` property
    (reads the header only; PlyFormatError when there is no PLY header)."""
    words = [line.split() for line in ply_header_lines(path)]
    has_chunks = any(w[:2] == ["element", "chunk"] for w in words)
    return has_chunks and any(w[:1] == ["property"] and w[-1:] == ["packed_position"] for w in words)


def _element(path: str, ply, name: str):
    if name not in [element.name for element in ply.elements]:
        raise SplatFormatError(f"{path}: no '{name}' element")
    return ply[name]


def _columns(path: str, element, names: Sequence[str], dtype: str) -> np.ndarray:
    """The named properties of ``element`` as a [rows, len(names)] array, each checked to be ``dtype``."""
    present = {prop.name: prop for prop in element.properties}
    columns = []
    for name in names:
        if name not in present:
            raise SplatFormatError(f"{path}: element '{element.name}': missing property '{name}'")
        data = np.asarray(element.data[name])
        found = data.dtype.kind + str(data.dtype.itemsize)
        if found != dtype:
            raise SplatFormatError(
                f"{path}: element '{element.name}': property '{name}' is {_TYPE_NAMES.get(found, found)}; "
                f"expected {_TYPE_NAMES[dtype]}"
            )
        columns.append(data)
    return np.stack(columns, axis=1) if columns else np.zeros((len(element.data), 0))


def read_compressed_ply(path: PathLike) -> GaussianSplats:
    """Read a compressed PLY into float32 splats, in the file's order. SplatFormatError naming the file and
    the element or property for anything unreadable or inconsistent."""
    from plyfile import PlyData  # as in gsplat_py.io.ply: importing this module does not need plyfile

    location = os.fspath(path)
    try:
        ply = PlyData.read(location, mmap="c")  # as in gsplat_py.io.ply: fast, and copied out below
    except OSError as error:
        raise SplatFormatError(f"{location}: cannot read file: {error.strerror or error}") from None
    except Exception as error:  # plyfile raises PlyParseError, ValueError, ... for malformed input
        raise SplatFormatError(f"{location}: not a valid PLY file: {error}") from None
    vertex, chunk = _element(location, ply, "vertex"), _element(location, ply, "chunk")
    count = len(vertex.data)
    require_gaussians(location, "element vertex", count)
    if len(chunk.data) != math.ceil(count / CHUNK_SIZE):
        raise SplatFormatError(
            f"{location}: element chunk: {len(chunk.data)} chunks; {count} vertices need "
            f"{math.ceil(count / CHUNK_SIZE)} ({CHUNK_SIZE} a chunk)"
        )
    with_colors = "min_r" in [prop.name for prop in chunk.properties]
    table = _columns(location, chunk, CHUNK_PROPERTIES[: 18 if with_colors else 12], "f4").astype(np.float64)
    check_finite(location, "element chunk", table)
    packed = _columns(location, vertex, PACKED_PROPERTIES, "u4").astype(np.int64)
    rest = np.zeros((count, 0))
    if "sh" in [element.name for element in ply.elements]:
        sh_element = ply["sh"]
        names = [prop.name for prop in sh_element.properties]
        if len(names) not in SH_PROPERTY_COUNTS:
            raise SplatFormatError(f"{location}: element sh: {len(names)} properties; expected 9, 24 or 45")
        if len(sh_element.data) != count:
            raise SplatFormatError(
                f"{location}: element sh: {len(sh_element.data)} rows; element vertex has {count}"
            )
        stored = _columns(location, sh_element, [f"f_rest_{i}" for i in range(len(names))], "u1")
        levels = np.where(stored == 0, 0.0, np.where(stored == 255, 1.0, (stored + 0.5) / 256.0))
        rest = (levels - 0.5) * SH_RANGE

    chunk_of = np.arange(count) // CHUNK_SIZE
    bounds = table[chunk_of]

    def unpacked(values: np.ndarray, bits: Sequence[int], shifts: Sequence[int], column: int) -> np.ndarray:
        t = np.stack([(values >> s & (1 << b) - 1) / ((1 << b) - 1) for b, s in zip(bits, shifts)], axis=1)
        low, high = bounds[:, column : column + 3], bounds[:, column + 3 : column + 6]
        return low * (1.0 - t) + high * t

    means = unpacked(packed[:, 0], POSITION_BITS, (21, 11, 0), 0)
    log_scales = unpacked(packed[:, 2], POSITION_BITS, (21, 11, 0), 6)
    if with_colors:
        colors = unpacked(packed[:, 3], (8, 8, 8), (24, 16, 8), 12)
    else:
        colors = np.stack([(packed[:, 3] >> s & 0xFF) / 255.0 for s in (24, 16, 8)], axis=1)
    fields = np.stack([(packed[:, 1] >> s & 0x3FF) / 1023.0 for s in (20, 10, 0)], axis=1)
    quats = from_smallest_three(packed[:, 1] >> 30, (fields - 0.5) * math.sqrt(2.0))
    dc = (colors - 0.5) / SH_C0
    sh = sh_from_channel_major(dc, rest)
    return splats_from_arrays(means, quats, log_scales, byte_to_logit(packed[:, 3] & 0xFF), sh)
