"""Niantic's SPZ format (github.com/nianticlabs/spz): writes version 4 (the current one) or 3, reads 1 to 4.

Version 4: a 32-byte little-endian header, then optional extension records, a table of contents and one
zstd-compressed stream per attribute (zstd through the optional ``zstandard`` package)::

    offset  0  u32 magic 0x5053474e ("NGSP")     offset 13  u8  fractionalBits
    offset  4  u32 version (4)                    offset 14  u8  flags (0x1 antialiased, 0x2 extensions)
    offset  8  u32 numPoints                      offset 15  u8  numStreams (5, or 6 with SH)
    offset 12  u8  shDegree (0..4)                offset 16  u32 tocByteOffset, then 12 reserved zero bytes
    [32, tocByteOffset): extension records, each u32 type, u32 byteLength, payload
    tocByteOffset: numStreams x (u64 compressedSize, u64 uncompressedSize), then the streams back to back

Versions 1-3: the whole file is one gzip stream of a 16-byte header (magic, version, numPoints, shDegree,
fractionalBits, flags, one reserved byte) and the same attribute blocks, then extension records if flag 0x2.

The attributes, in file order (N = numPoints; "stream" in version 4, "block" before):

    positions  N x 3 x 24-bit signed fixed point, fractionalBits fractional bits (v1: N x 3 float16)
    alphas     N x u8: round(255 sigmoid(opacity))
    colors     N x 3 x u8: round(255 (0.15 f_dc + 0.5)), clamped (0.15: the format's colour scale)
    scales     N x 3 x u8: round(16 (log-scale + 10)), clamped
    rotations  v3+: N x u32 "smallest three": bits 30-31 the index of the largest component of the unit
               quaternion x y z w (made positive), then the other three in index order, 10 bits each (a sign
               bit, then round(511 |q_i| sqrt 2)), the first in bits 20-29.
               v1-2: N x 3 x u8: x y z of the unit quaternion with w >= 0, round(127.5 q + 127.5)
    sh         N x (coefficients 1..K-1 x channel R G B) x u8, channel fastest: 128 + 128 c, clamped to
               0..255, c the coefficient (readers take (b - 128) / 128); a writer may round c more coarsely
               for compression: gsplat_py to 1/32 (degree 1) and 1/16 (degrees 2-3)

Coordinates: the format stores right-up-back axes (RUB, as OpenGL / three.js), the 3DGS PLY right-down-front
(RDF, OpenCV's camera axes). The two differ by a half turn about x, (x, y, z) -> (x, -y, -z): positions flip
y and z, rotations keep w and x and flip y and z, and each SH coefficient flips its sign when its basis
function is odd in y and z together (`SH_SIGNS_RDF_RUB`). The writer converts to RUB and the reader back.
A reader also honours Adobe's coordinate-system extension (type 0xADBE0003) for the systems that differ
from RDF by axis flips (RUB, RDF, LUF, ...); other extensions are skipped with a warning. (splat-transform,
SuperSplat's converter, writes and reads SPZ without this conversion, so a file passed through it comes out
turned half a turn about x; Niantic's library converts when told the caller's axes.)

Round-trip bounds, within the ranges above: position 2^-(fractionalBits + 1); log-scale 1/32; opacity
1/510; SH DC 1/(2 * 0.15 * 255) ~ 0.0131; SH coefficients 1/64 (degree 1) or 1/32 (degrees 2-3); rotations
sqrt(1/2) / 1022 per stored component (version 3+). fractionalBits (at most 23) is the largest that keeps the
largest coordinate |x| within 2^16 steps, so positions are within |x| 2^-16 of the largest coordinate's size
whatever the scene's scale (Niantic's writer fixes 12 bits, 1/4096 of a unit, and overflows past 2048 units;
the bundled scene's model: fractionalBits 13, 7% smaller than with 20 bits, 0.02 dB lower).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib

import numpy as np

from ..errors import MissingPackageError
from ..model import GaussianSplats
from .atomic import write_bytes_atomically
from .packing import (
    SplatFormatError,
    byte_to_logit,
    check_finite,
    from_smallest_three,
    opacity_to_byte,
    read_file,
    smallest_three,
    splat_arrays,
    splats_from_arrays,
)
from .paths import PathLike

__all__ = [
    "SPZ_WRITE_VERSIONS",
    "SPZ_READ_VERSIONS",
    "SPZ_VERSION",
    "SPZ_INSTALL_HINT",
    "SH_SIGNS_RDF_RUB",
    "AXIS_SIGNS",
    "RUB",
    "flip_axes",
    "write_spz",
    "read_spz",
]

MAGIC = 0x5053474E  # "NGSP" little-endian
SPZ_VERSION = 4  # the version written by default: the current one
SPZ_WRITE_VERSIONS = (3, 4)
SPZ_READ_VERSIONS = (1, 2, 3, 4)
SPZ_INSTALL_HINT = "pip install zstandard (or gsplat_py's spz extra)"
HEADER = struct.Struct("<IIIBBBB")  # magic, version, numPoints, shDegree, fractionalBits, flags, last byte
HEADER_V4_SIZE = 32
TOC_ENTRY = struct.Struct("<QQ")
EXTENSION_HEADER = struct.Struct("<II")
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
ZSTD_LEVEL = 12  # the level of Niantic's writer
GZIP_LEVEL = 6  # zlib's default, as Niantic's writer: on the bundled scene 2.5% larger than 9, 8x faster
MAX_SH_DEGREE_IN_FORMAT = 4
COLOR_SCALE = 0.15
# SH bytes are kept to multiples of 4 (6 significant bits) for degree 1 and 8 (5 bits) above: fewer distinct
# values compress better. Niantic's writer keeps 5 and 4 bits, which cost the bundled scene's 7k model 6 dB
# (36.3 dB against the PLY, where these give 42.4 dB, for a file 21% larger).
SH_STEP_DEGREE_1 = 4
SH_STEP_HIGHER = 8
ROTATION_MAGNITUDE = 511  # 9 bits
INT24_MAX = (1 << 23) - 1
POSITION_STEPS = 1 << 16  # positions keep 16 bits of the largest coordinate (_fractional_bits)
STREAMS = ("positions", "alphas", "colors", "scales", "rotations", "sh")
COORDINATE_EXTENSION = 0xADBE0003  # Adobe's coordinate-system extension: a u32 naming the stored axes
# Adobe's numbering of the axis conventions that differ from RDF by flips only: the x, y, z signs that
# take such coordinates to RDF (R, D, F positive).
AXIS_SIGNS = {
    1: (-1, 1, -1),  # LDB
    2: (1, 1, -1),  # RDB
    3: (-1, -1, -1),  # LUB
    4: (1, -1, -1),  # RUB
    5: (-1, 1, 1),  # LDF
    6: (1, 1, 1),  # RDF
    7: (-1, -1, 1),  # LUF
    8: (1, -1, 1),  # RUF
}
RUB = 4

# The parity in x, y, z of each real SH basis function of degrees 1-4 (coefficients 1..24, in the order of
# the renderer and of the 3DGS PLY): flipping axes multiplies a coefficient by the product of the flipped
# axes' signs over its odd variables. (Degree 4 is only read, and dropped after the flip.)
# fmt: off
_SH_PARITY = np.array([
    [0, 1, 0], [0, 0, 1], [1, 0, 0],                                # y, z, x
    [1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, 0],          # xy, yz, 3z^2-1, xz, x^2-y^2
    [0, 1, 0], [1, 1, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 0],  # y(3x^2-y^2), xyz, ...
    [1, 1, 0], [0, 1, 1], [1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, 0], [1, 0, 1], [0, 0, 0],
])
# fmt: on


def sh_axis_signs(axis_signs: tuple[int, int, int]) -> np.ndarray:
    """[24] signs of SH coefficients 1..24 when the axes are multiplied by ``axis_signs``."""
    return np.prod(np.where(_SH_PARITY == 1, np.array(axis_signs)[None, :], 1), axis=1).astype(np.float64)


SH_SIGNS_RDF_RUB = sh_axis_signs(AXIS_SIGNS[RUB])


def _zstandard(purpose: str):
    try:
        import zstandard
    except ImportError:
        raise MissingPackageError(
            f"{purpose} needs the zstandard package: {SPZ_INSTALL_HINT}; SPZ version 3 needs nothing"
        ) from None
    return zstandard


def flip_axes(
    means: np.ndarray, quats: np.ndarray, sh_rest: np.ndarray, signs: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussians with their axes multiplied by ``signs``: means, quaternions w x y z (x y z times the product
    of the other two axes' signs: the rotation conjugated by the flip) and SH coefficients [N, K-1, 3]."""
    sx, sy, sz = signs
    quat_signs = np.array([1.0, sy * sz, sx * sz, sx * sy])
    rest_signs = sh_axis_signs(signs)[: sh_rest.shape[1], None].astype(sh_rest.dtype)
    return means * np.array(signs, dtype=np.float64), quats * quat_signs, sh_rest * rest_signs


def _fractional_bits(means: np.ndarray) -> int:
    """The most fractional bits (0 to 23) that keep the largest coordinate within POSITION_STEPS steps;
    ValueError when it does not fit 24 bits even with none."""
    largest = float(np.abs(means).max())
    if round(largest) > INT24_MAX:
        raise ValueError(f"coordinates up to {largest:g} do not fit SPZ's 24-bit positions")
    if largest == 0.0:
        return 23
    return min(23, max(0, math.floor(math.log2(POSITION_STEPS / largest))))


def _sh_bytes(coefficients: np.ndarray, step: int) -> np.ndarray:
    return np.clip(128 + step * np.round(coefficients * 128.0 / step), 0, 255).astype(np.uint8)


def _packed_rotations(quats_xyzw: np.ndarray) -> np.ndarray:
    largest, others = smallest_three(quats_xyzw)
    magnitudes = np.round(np.abs(others) * math.sqrt(2.0) * ROTATION_MAGNITUDE)
    magnitudes = np.minimum(magnitudes, ROTATION_MAGNITUDE)
    fields = (others < 0).astype(np.uint32) << 9 | magnitudes.astype(np.uint32)
    packed = largest.astype(np.uint32) << 30 | fields[:, 0] << 20 | fields[:, 1] << 10 | fields[:, 2]
    return packed.astype("<u4")


def _attribute_bytes(splats: GaussianSplats, path: PathLike) -> tuple[list[bytes], int, int]:
    """The six attribute blocks (the SH one empty at degree 0), shDegree and fractionalBits."""
    arrays = splat_arrays(path, splats)
    count = len(arrays.means)
    degree = splats.sh_degree
    means, quats, rest = flip_axes(arrays.means, arrays.quats, arrays.sh[:, 1:], AXIS_SIGNS[RUB])
    try:
        bits = _fractional_bits(means)
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from None
    fixed = np.round(means * 2.0**bits).astype(np.int64) & 0xFFFFFF
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, fixed >> 16], axis=-1).astype(np.uint8)
    colors = np.clip(np.round(arrays.sh[:, 0] * (COLOR_SCALE * 255.0) + 127.5), 0, 255).astype(np.uint8)
    scales = np.clip(np.round((arrays.log_scales + 10.0) * 16.0), 0, 255).astype(np.uint8)
    rotations = _packed_rotations(quats[:, [1, 2, 3, 0]])
    sh = np.empty((count, rest.shape[1], 3), dtype=np.uint8)
    sh[:, :3] = _sh_bytes(rest[:, :3], SH_STEP_DEGREE_1)
    sh[:, 3:] = _sh_bytes(rest[:, 3:], SH_STEP_HIGHER)
    blocks = [positions, opacity_to_byte(arrays.logit_opacities), colors, scales, rotations, sh]
    return [np.ascontiguousarray(block).tobytes() for block in blocks], degree, bits


def write_spz(path: PathLike, splats: GaussianSplats, version: int = SPZ_VERSION) -> None:
    """Write ``splats`` as an SPZ file of ``version`` (4 or 3), atomically. Version 4 needs the zstandard
    package (MissingPackageError, before anything is written). ValueError before writing for invalid or no
    Gaussians, or coordinates too large for 24-bit fixed point (beyond 2^23)."""
    if version not in SPZ_WRITE_VERSIONS:
        raise ValueError(f"SPZ version {version} cannot be written; expected one of {SPZ_WRITE_VERSIONS}")
    zstandard = _zstandard("writing SPZ version 4") if version == 4 else None
    blocks, degree, bits = _attribute_bytes(splats, path)
    count = splats.num_gaussians
    if zstandard is None:
        header = HEADER.pack(MAGIC, version, count, degree, bits, 0, 0)
        data = gzip.compress(header + b"".join(blocks), compresslevel=GZIP_LEVEL, mtime=0)
    else:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        streams = [(compressor.compress(block), len(block)) for block in blocks if block]
        header = HEADER.pack(MAGIC, version, count, degree, bits, 0, len(streams))
        header += struct.pack("<I", HEADER_V4_SIZE) + bytes(12)
        toc = b"".join(TOC_ENTRY.pack(len(compressed), size) for compressed, size in streams)
        data = header + toc + b"".join(compressed for compressed, _ in streams)
    write_bytes_atomically(path, data)


# --------------------------------------------------------------------------------------------------------
# Reading


def _block_sizes(version: int, count: int, degree: int) -> list[int]:
    """Bytes of each attribute block, in STREAMS order."""
    position_bytes = 6 if version == 1 else 9
    rotation_bytes = 4 if version >= 3 else 3
    sh_bytes = 3 * ((degree + 1) ** 2 - 1)
    return [count * size for size in (position_bytes, 1, 3, 3, rotation_bytes, sh_bytes)]


def _extension_records(location: str, data: bytes) -> list[tuple[int, bytes]]:
    records, offset = [], 0
    while offset < len(data):
        if offset + EXTENSION_HEADER.size > len(data):
            raise SplatFormatError(f"{location}: extension record at byte {offset}: truncated header")
        kind, length = EXTENSION_HEADER.unpack_from(data, offset)
        offset += EXTENSION_HEADER.size
        if offset + length > len(data):
            raise SplatFormatError(
                f"{location}: extension 0x{kind:08X}: byteLength {length} runs past the extension data"
            )
        records.append((kind, data[offset : offset + length]))
        offset += length
    return records


def _stored_axes(location: str, records: list[tuple[int, bytes]]) -> tuple[int, int, int]:
    """The signs taking the stored axes to RDF: RUB unless the coordinate-system extension says otherwise."""
    axes = RUB
    for kind, payload in records:
        if kind != COORDINATE_EXTENSION:
            warnings.warn(f"{location}: unknown SPZ extension 0x{kind:08X} skipped", stacklevel=4)
            continue
        if len(payload) != 4:
            raise SplatFormatError(
                f"{location}: coordinate-system extension: {len(payload)} bytes, expected 4"
            )
        (value,) = struct.unpack("<I", payload)
        if value == 0:  # unspecified: the format's default
            continue
        if value not in AXIS_SIGNS:
            raise SplatFormatError(
                f"{location}: coordinate-system extension: system {value} is not supported (only the axis "
                "conventions 1-8, which differ from RDF by flips)"
            )
        axes = value
    return AXIS_SIGNS[axes]


def _decompress_gzip(location: str, data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise SplatFormatError(f"{location}: gzip stream: {error}") from None


def _v4_blocks(location: str, data: bytes, count: int, degree: int, flags: int) -> tuple[list[bytes], bytes]:
    """The attribute blocks of a version 4 file, and its extension data."""
    streams = data[15]
    (toc_offset,) = struct.unpack_from("<I", data, 16)
    sizes = _block_sizes(4, count, degree)
    expected = [(name, size) for name, size in zip(STREAMS, sizes) if size]
    if streams != len(expected):
        raise SplatFormatError(
            f"{location}: numStreams: {streams}; expected {len(expected)} for shDegree {degree}"
        )
    if not HEADER_V4_SIZE <= toc_offset <= len(data) - streams * TOC_ENTRY.size:
        raise SplatFormatError(
            f"{location}: tocByteOffset: {toc_offset} is outside the file ({len(data)} bytes, "
            f"{streams} table entries)"
        )
    extensions = data[HEADER_V4_SIZE:toc_offset] if flags & FLAG_EXTENSIONS else b""
    decompressor = _zstandard("reading SPZ version 4").ZstdDecompressor()
    offset = toc_offset + streams * TOC_ENTRY.size
    blocks = []
    for index, (name, size) in enumerate(expected):
        compressed, uncompressed = TOC_ENTRY.unpack_from(data, toc_offset + index * TOC_ENTRY.size)
        if uncompressed != size:
            raise SplatFormatError(
                f"{location}: {name} stream: {uncompressed} bytes, expected {size} for numPoints {count}"
            )
        if offset + compressed > len(data):
            raise SplatFormatError(f"{location}: {name} stream: runs past the end of the file (truncated?)")
        try:
            block = decompressor.decompress(data[offset : offset + compressed], max_output_size=size)
        except Exception as error:  # zstandard.ZstdError, and ValueError for a frame without its size
            raise SplatFormatError(f"{location}: {name} stream: {error}") from None
        if len(block) != size:
            raise SplatFormatError(
                f"{location}: {name} stream: decompresses to {len(block)} bytes, not {size}"
            )
        blocks.append(block)
        offset += compressed
    if offset != len(data):
        raise SplatFormatError(f"{location}: {len(data) - offset} bytes after the last stream")
    return blocks + [b""] * (len(STREAMS) - len(blocks)), extensions


def _legacy_blocks(
    location: str, data: bytes, version: int, count: int, degree: int, flags: int
) -> tuple[list[bytes], bytes]:
    """The attribute blocks of a (decompressed) version 1-3 file, and its extension data."""
    blocks, offset = [], HEADER.size
    for name, size in zip(STREAMS, _block_sizes(version, count, degree)):
        if offset + size > len(data):
            raise SplatFormatError(
                f"{location}: {name}: {len(data) - offset} bytes left, expected {size} for numPoints {count} "
                "(truncated?)"
            )
        blocks.append(data[offset : offset + size])
        offset += size
    if offset != len(data) and not flags & FLAG_EXTENSIONS:
        raise SplatFormatError(
            f"{location}: {len(data) - offset} bytes after the data numPoints {count} describes"
        )
    return blocks, data[offset:]


def read_spz(path: PathLike) -> GaussianSplats:
    """Read an SPZ file of version 1-4 into float32 splats in the 3DGS PLY's axes (RDF). SH degree 4 is cut
    to 3 (the renderer's maximum) with a warning. SplatFormatError naming the file and the field for anything
    unreadable; MissingPackageError for version 4 without the zstandard package."""
    location = os.fspath(path)
    data = read_file(location)
    compressed = data[:2] == b"\x1f\x8b"
    if compressed:
        data = _decompress_gzip(location, data)
    if len(data) < HEADER.size:
        raise SplatFormatError(f"{location}: header: {len(data)} bytes, expected at least {HEADER.size}")
    magic, version, count, degree, bits, flags, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SplatFormatError(
            f"{location}: magic: {data[:4].hex(' ')}, expected 4e 47 53 50 ('NGSP') or a gzip stream"
        )
    if version not in SPZ_READ_VERSIONS:
        raise SplatFormatError(f"{location}: version: {version} is not supported (gsplat_py reads 1 to 4)")
    if (version == 4) == compressed:
        form = "a gzip-compressed" if compressed else "an uncompressed"
        raise SplatFormatError(
            f"{location}: version: {version} in {form} file (versions 1-3 are gzip-compressed, 4 is not)"
        )
    if count < 1:
        raise SplatFormatError(f"{location}: numPoints: {count}; expected at least 1")
    if degree > MAX_SH_DEGREE_IN_FORMAT:
        raise SplatFormatError(f"{location}: shDegree: {degree}; expected 0 to {MAX_SH_DEGREE_IN_FORMAT}")
    if version == 4:
        if len(data) < HEADER_V4_SIZE:
            raise SplatFormatError(f"{location}: header: {len(data)} bytes, expected {HEADER_V4_SIZE}")
        blocks, extensions = _v4_blocks(location, data, count, degree, flags)
    else:
        blocks, extensions = _legacy_blocks(location, data, version, count, degree, flags)
    axis_signs = _stored_axes(location, _extension_records(location, extensions))
    if flags & FLAG_ANTIALIASED:
        warnings.warn(
            f"{location}: the model was trained with antialiasing; gsplat_py renders it without the "
            "antialiasing filter",
            stacklevel=2,
        )
    return _decode(location, blocks, version, count, degree, bits, axis_signs)


def _decode(
    location: str,
    blocks: list[bytes],
    version: int,
    count: int,
    degree: int,
    bits: int,
    axis_signs: tuple[int, int, int],
) -> GaussianSplats:
    positions, alphas, colors, scales, rotations, sh_block = (np.frombuffer(b, np.uint8) for b in blocks)
    if version == 1:
        means = np.frombuffer(blocks[0], dtype="<f2").reshape(count, 3).astype(np.float64)
        check_finite(location, "positions", means)
    else:
        triples = positions.reshape(count, 3, 3).astype(np.int64)
        fixed = triples[..., 0] | triples[..., 1] << 8 | triples[..., 2] << 16
        means = np.where(fixed >= 1 << 23, fixed - (1 << 24), fixed) * 2.0**-bits
    if version >= 3:
        packed = np.frombuffer(blocks[4], dtype="<u4").astype(np.int64)
        largest = packed >> 30
        fields = np.stack([(packed >> shift) & 0x3FF for shift in (20, 10, 0)], axis=1)
        signs = np.where(fields & 0x200, -1.0, 1.0)
        others = signs * (fields & 0x1FF) / (ROTATION_MAGNITUDE * math.sqrt(2.0))
        xyzw = from_smallest_three(largest, others)
    else:
        xyz = rotations.reshape(count, 3) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - np.sum(xyz * xyz, axis=1)))
        xyzw = np.concatenate([xyz, w[:, None]], axis=1)
    quats = xyzw[:, [3, 0, 1, 2]]
    coefficients = (degree + 1) ** 2 - 1
    # float32 holds every (b - 128) / 128 exactly, in half the memory of float64
    rest = (sh_block.reshape(count, coefficients, 3).astype(np.float32) - 128.0) / 128.0
    means, quats, rest = flip_axes(means, quats, rest, axis_signs)
    if degree > 3:
        warnings.warn(f"{location}: SH degree {degree} cut to 3 (gsplat_py's maximum)", stacklevel=3)
        rest = rest[:, :15]
    dc = (colors.reshape(count, 3) / 255.0 - 0.5) / COLOR_SCALE
    log_scales = scales.reshape(count, 3) / 16.0 - 10.0
    sh = np.concatenate([dc[:, None, :], rest], axis=1)
    return splats_from_arrays(means, quats, log_scales, byte_to_logit(alphas), sh)
