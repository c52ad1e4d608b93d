"""Read and write Gaussian splats in the Inria 3DGS PLY layout (the one every splat viewer opens).

Layout written by :func:`write_ply`: ``binary_little_endian 1.0``, a single ``vertex`` element with N rows
and only ``float`` (float32) properties, in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{3(K-1)-1}  opacity
    scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

* K = (degree + 1)^2 SH coefficients per channel, degree 0..3 (so 0, 9, 24 or 45 ``f_rest_*``).
* ``f_rest`` is channel-major: ``f_rest_{c*(K-1) + (k-1)}`` holds coefficient k (k >= 1) of channel c, i.e.
  all R rest coefficients, then all G, then all B. ``f_dc_c`` is coefficient 0 of channel c, stored in the
  SH basis (the renderer adds 0.5 after evaluating the SH, so a grey of 0.5 has DC 0).
* ``opacity`` is the logit (pre-sigmoid), ``scale_i`` are log-scales, ``rot_0..rot_3`` is the quaternion
  w x y z, not necessarily normalised (it is written and read back exactly as given).
* ``nx ny nz`` are written as zeros (the 3DGS training code writes them, viewers ignore them).
* optional ``comment`` lines after the format line carry metadata (:func:`read_ply_comments` reads them
  back; gsplat_py records the model's world frame there, see `gsplat_py.saved_models`).

:func:`read_ply` is lenient about everything that does not change the meaning of the data:

* properties may come in any order and as ``float`` or ``double`` (doubles are rounded to float32);
* any other properties (``nx/ny/nz``, per-vertex ``red/green/blue``, ``f_dc_3``, list properties, ...) and
  any other elements (``face``, ...) are accepted and ignored;
* ascii and both binary encodings are accepted (parsing is done by ``plyfile``).

and strict about everything that does: every problem raises :class:`PlyFormatError` (a ``ValueError``)
whose message starts with the file's path, e.g. ``"scene.ply: missing property 'scale_2'"``:

* the file cannot be read, is not a regular file, or is not a (well-formed) PLY file;
* the data after the header is shorter or longer than the header's element counts declare (checked before
  reading the data: a count of 0 followed by rows, or a huge count, is an error, not an empty model or an
  allocation);
* there is no ``vertex`` element;
* a required property is missing, or is a list / integer property;
* the ``f_rest_*`` indices are not exactly 0..M-1 (missing ones are named), or a name is malformed
  (e.g. ``f_rest_05``);
* M, the number of ``f_rest_*`` properties, matches no SH degree (valid: 0, 9, 24, 45);
* a value is NaN or +-inf (the property and the first bad row are named), or a double overflows float32;
* a quaternion is zero (no rotation), or a log-scale's exp overflows float32.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from ..model import GaussianSplats
from ..rendering.limits import MAX_SH_DEGREE
from .atomic import atomic_open
from .packing import channel_major_rest, sh_from_channel_major
from .paths import PathLike, input_file_problem

__all__ = [
    "GaussianSplats",
    "PlyFormatError",
    "read_ply",
    "write_ply",
    "read_ply_comments",
    "ply_property_names",
    "ply_header_lines",
    "ply_file_size",
    "VALID_F_REST_COUNTS",
]

# Number of f_rest_* properties for SH degree d: 3 * ((d + 1)^2 - 1).
VALID_F_REST_COUNTS = {3 * ((d + 1) ** 2 - 1): d for d in range(MAX_SH_DEGREE + 1)}  # {0:0, 9:1, 24:2, 45:3}

_F_REST_RE = re.compile(r"f_rest_(\d+)")
_FLOAT_KINDS = ("f4", "f8")  # numpy "kind+itemsize" of the accepted property types (float, double)


class PlyFormatError(ValueError):
    """A PLY file that is not a readable Inria-layout Gaussian splat file. The message names the file."""


def ply_property_names(sh_degree: int) -> list[str]:
    """The vertex property names :func:`write_ply` writes for ``sh_degree``, in file order."""
    if sh_degree not in range(MAX_SH_DEGREE + 1):
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _to_matrix(splats: GaussianSplats) -> np.ndarray:
    """[N, P] little-endian float32 matrix whose columns follow ``ply_property_names(splats.sh_degree)``."""

    def f32(t: Tensor) -> Tensor:
        return t.detach().to(device="cpu", dtype=torch.float32)

    n = splats.num_gaussians
    sh = f32(splats.sh)
    f_rest = torch.from_numpy(channel_major_rest(sh.numpy()))
    columns = torch.cat(
        [
            f32(splats.means),
            torch.zeros(n, 3, dtype=torch.float32),  # nx ny nz
            sh[:, 0, :],
            f_rest,
            f32(splats.logit_opacities).reshape(n, 1),
            f32(splats.log_scales),
            f32(splats.quats),
        ],
        dim=1,
    )
    return np.ascontiguousarray(columns.numpy(), dtype="<f4")


def _ply_header(n: int, names: list[str], comments: Sequence[str]) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0"] + [f"comment {text}" for text in comments]
    lines.append(f"element vertex {n}")
    lines += [f"property float {name}" for name in names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def ply_file_size(num_gaussians: int, sh_degree: int, comments: Sequence[str] = ()) -> int:
    """The size in bytes of the file :func:`write_ply` writes for these Gaussians and comments."""
    names = ply_property_names(sh_degree)
    return len(_ply_header(num_gaussians, names, comments)) + 4 * len(names) * num_gaussians


def write_ply(target: PathLike | BinaryIO, splats: GaussianSplats, comments: Sequence[str] = ()) -> None:
    """Write ``splats`` as an Inria-layout binary little-endian PLY to ``target``: a path, written
    atomically, or a binary file (e.g. one of `gsplat_py.io.atomic.atomic_open_all`'s).

    ``comments`` become ``comment`` lines of the header (ASCII, one line each).

    The splats are validated first (ValueError/TypeError, nothing is written). A path is written to a temp
    file in the same folder, which is flushed, fsync'ed and then renamed over it with ``os.replace``; on any
    failure the temp file is removed and an existing file is left untouched. Tensors may be on any device
    and of any floating dtype; they are written as float32 (float32 input round-trips bit-exactly).
    """
    name = os.fspath(target) if isinstance(target, (str, os.PathLike)) else getattr(target, "name", "PLY")
    try:
        splats.validate()
    except (ValueError, TypeError) as e:
        raise type(e)(f"{name}: cannot write splats: {e}") from None
    for text in comments:
        if not text.isascii() or "\n" in text or "\r" in text:
            raise ValueError(f"{name}: PLY comment {text!r} is not one line of ASCII")
    data = _to_matrix(splats)
    header = _ply_header(splats.num_gaussians, ply_property_names(splats.sh_degree), comments)

    if isinstance(target, (str, os.PathLike)):
        with atomic_open(target) as file:
            _write_header_and_rows(file, header, data)
    else:
        _write_header_and_rows(target, header, data)


def _write_header_and_rows(file: BinaryIO, header: bytes, data: np.ndarray) -> None:
    file.write(header)
    file.write(data.reshape(-1).view(np.uint8).data)  # the rows' bytes without a copy


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------

_MAX_HEADER_BYTES = 1 << 20  # a splat PLY header is a few KB; more means this is no PLY header
# Bytes of each PLY scalar type (its names in the specification and plyfile's aliases).
_TYPE_SIZES = {
    **dict.fromkeys(("char", "uchar", "int8", "uint8"), 1),
    **dict.fromkeys(("short", "ushort", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "uint", "float", "int32", "uint32", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}


def _header_bytes(path: str) -> bytes:
    """The file's header, from ``ply`` to the end of its ``end_header`` line."""
    problem = input_file_problem(path)
    if problem is not None:
        raise PlyFormatError(f"{path}: cannot read file: {problem}")
    try:
        with open(path, "rb") as file:
            start = file.read(_MAX_HEADER_BYTES)
    except OSError as e:
        raise PlyFormatError(f"{path}: cannot read file: {e.strerror or e}") from e
    end = start.find(b"end_header")
    line_end = start.find(b"\n", end)
    if not start.startswith(b"ply") or end < 0 or line_end < 0:
        raise PlyFormatError(f"{path}: not a valid PLY file (no 'ply' ... 'end_header' header)")
    return start[: line_end + 1]


def ply_header_lines(path: PathLike) -> list[str]:
    """The lines of a PLY header before ``end_header``, stripped (reads only the header). Raises
    :class:`PlyFormatError` when the file cannot be read or has no PLY header."""
    header = _header_bytes(os.fspath(path))
    return [line.strip() for line in header.decode("ascii", errors="replace").splitlines()[:-1]]


def read_ply_comments(path: PathLike) -> list[str]:
    """The ``comment`` lines of a PLY header, without the keyword, in file order (reads only the header).
    Raises :class:`PlyFormatError` when the file cannot be read or has no PLY header."""
    comments = []
    for line in ply_header_lines(path):
        keyword, _, text = line.partition(" ")
        if keyword == "comment":
            comments.append(text.strip())
    return comments


@dataclass
class _Element:
    """An element as the header declares it: ``row_bytes`` is its size in a binary file, or the least it can
    be when it has list properties (``fixed`` False)."""

    name: str
    count: int
    row_bytes: int = 0
    fixed: bool = True


def _declared_elements(header: bytes) -> tuple[str, list[_Element]] | None:
    """(format, elements) of a header, or None for one this reads no sizes from (plyfile then names what
    is wrong with it)."""
    file_format, elements = "", []
    for line in header.decode("ascii", errors="replace").splitlines():
        words = line.split()
        if words[:1] == ["format"] and len(words) >= 2:
            file_format = words[1]
        elif words[:1] == ["element"]:
            if len(words) != 3 or not words[2].isdigit():
                return None
            elements.append(_Element(words[1], int(words[2])))
        elif words[:1] == ["property"]:
            if not elements:
                return None
            if len(words) == 5 and words[1] == "list" and words[2] in _TYPE_SIZES:
                elements[-1].row_bytes += _TYPE_SIZES[words[2]]
                elements[-1].fixed = False
            elif len(words) == 3 and words[1] in _TYPE_SIZES:
                elements[-1].row_bytes += _TYPE_SIZES[words[1]]
            else:
                return None
    return (file_format, elements) if file_format else None


def _check_data_size(path: str, header: bytes) -> None:
    """PlyFormatError when the data after the header cannot be what the header declares: too short
    (truncated, or a count that would allocate more than the file holds) or too long (rows the header does
    not count, such as a vertex count of 0 followed by vertices). Checked before reading any data."""
    declared = _declared_elements(header)
    if declared is None:
        return
    file_format, elements = declared
    counts = ", ".join(f"{element.count:,} '{element.name}' rows" for element in elements) or "no elements"
    if file_format == "ascii":
        with open(path, "rb") as file:
            file.seek(len(header))
            rows = sum(1 for line in file if line.strip())
        expected = sum(element.count for element in elements)
        if rows != expected:
            problem = "truncated" if rows < expected else "rows after the last element"
            raise PlyFormatError(f"{path}: {problem}: the header declares {counts}, the file has {rows:,}")
        return
    size = os.path.getsize(path) - len(header)
    needed = sum(element.count * element.row_bytes for element in elements)
    if size < needed:
        raise PlyFormatError(
            f"{path}: truncated: the header declares {counts} ({needed:,} bytes), {size:,} bytes follow it"
        )
    if size > needed and all(element.fixed for element in elements):
        raise PlyFormatError(
            f"{path}: {size - needed:,} bytes after the data the header declares ({counts}): a wrong count?"
        )


def _f_rest_count(path: str, names: list[str]) -> int:
    """Number of f_rest_* properties after checking their indices are exactly 0..M-1."""
    indices = []
    for name in names:
        m = _F_REST_RE.fullmatch(name)
        if m is None:
            continue
        digits = m.group(1)
        if digits != str(int(digits)):
            raise PlyFormatError(
                f"{path}: malformed property name '{name}' (f_rest indices have no leading zeros)"
            )
        indices.append(int(digits))
    if not indices:
        return 0
    present = set(indices)
    top = max(present)
    missing = [i for i in range(top + 1) if i not in present]
    if missing:
        shown = ", ".join(f"f_rest_{i}" for i in missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise PlyFormatError(
            f"{path}: f_rest indices are not contiguous: have {len(present)} properties "
            f"f_rest_0..f_rest_{top} "
            f"but {len(missing)} missing ({shown})"
        )
    count = len(present)
    if count not in VALID_F_REST_COUNTS:
        valid = ", ".join(f"{c} (degree {d})" for c, d in VALID_F_REST_COUNTS.items())
        raise PlyFormatError(
            f"{path}: {count} f_rest_* properties match no SH degree; valid counts are {valid}"
        )
    return count


def _column(path: str, vertex, name: str, props: dict[str, object]) -> np.ndarray:
    """The float32 column of a required property, checked for presence, type and finiteness."""
    prop = props.get(name)
    if prop is None:
        raise PlyFormatError(f"{path}: missing property '{name}'")
    if not hasattr(prop, "val_dtype") or hasattr(prop, "len_dtype"):
        raise PlyFormatError(f"{path}: property '{name}' is a list property; expected float or double")
    raw = np.asarray(vertex.data[name])
    kind = f"{raw.dtype.kind}{raw.dtype.itemsize}"
    if kind not in _FLOAT_KINDS:
        raise PlyFormatError(
            f"{path}: property '{name}' has type {prop.val_dtype!r} ({raw.dtype}); expected float or double"
        )
    bad = ~np.isfinite(raw)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise PlyFormatError(
            f"{path}: property '{name}' has a non-finite value ({raw[row]}) at row {row} "
            f"({int(bad.sum())} non-finite in total)"
        )
    with np.errstate(over="ignore"):
        col = raw.astype(np.float32)
    overflow = ~np.isfinite(col)
    if overflow.any():
        row = int(np.flatnonzero(overflow)[0])
        raise PlyFormatError(f"{path}: property '{name}' value {raw[row]!r} at row {row} overflows float32")
    return col


def _check_rotations_and_scales(path: str, quats: Tensor, log_scales: Tensor) -> None:
    """PlyFormatError for a row that is finite but cannot be rendered: a quaternion whose norm is 0 in
    float32 (no rotation; the renderer would skip the Gaussian), a log-scale whose exp overflows float32."""
    zero = ~((quats * quats).sum(dim=1) > 0.0)
    if bool(zero.any()):
        row = int(zero.nonzero()[0, 0])
        raise PlyFormatError(
            f"{path}: rot_0..rot_3 are {quats[row].tolist()} at row {row}: a rotation needs a quaternion "
            f"that is not zero ({int(zero.sum())} of {len(quats)} rows)"
        )
    huge = ~torch.isfinite(torch.exp(log_scales))
    if bool(huge.any()):
        row, axis = (int(i) for i in huge.nonzero()[0])
        raise PlyFormatError(
            f"{path}: property 'scale_{axis}' value {float(log_scales[row, axis])} at row {row} is the log "
            "of a scale that overflows float32"
        )


def read_ply(path: PathLike) -> GaussianSplats:
    """Read an Inria-layout Gaussian splat PLY (see the module docstring for what is accepted).

    Returns float32 CPU tensors; the SH degree is inferred from the number of ``f_rest_*`` properties.
    Raises :class:`PlyFormatError` (naming the file and the problem) for anything unreadable or invalid.
    """
    from plyfile import PlyData  # imported here so that importing gsplat_py.io.ply never needs plyfile

    path = os.fspath(path)
    header = _header_bytes(path)
    _check_data_size(path, header)
    try:
        with open(path, "rb") as file:
            # mmap: fixed-size rows are mapped, not copied row by row (100k degree-3 rows: 30 s -> 0.1 s)
            ply = PlyData.read(file, mmap="c")
            trailing = 0 if ply.text else os.path.getsize(path) - file.tell()
    except OSError as e:
        raise PlyFormatError(f"{path}: cannot read file: {e.strerror or e}") from e
    except Exception as e:  # plyfile raises PlyParseError, ValueError, ... for malformed input
        raise PlyFormatError(f"{path}: not a valid PLY file: {e}") from e
    if trailing > 0:  # only binary rows with list properties leave the data size open until now
        raise PlyFormatError(f"{path}: {trailing:,} bytes after the data the header declares")

    names = [el.name for el in ply.elements]
    if "vertex" not in names:
        raise PlyFormatError(f"{path}: no 'vertex' element (elements: {names or 'none'})")
    vertex = ply["vertex"]
    props = {p.name: p for p in vertex.properties}
    n = int(len(vertex.data))

    n_rest = _f_rest_count(path, list(props))

    def cols(prop_names: list[str]) -> Tensor:
        mat = np.empty((n, len(prop_names)), dtype=np.float32)
        for j, name in enumerate(prop_names):
            mat[:, j] = _column(path, vertex, name, props)
        return torch.from_numpy(mat)

    means = cols(["x", "y", "z"])
    f_dc = cols([f"f_dc_{c}" for c in range(3)])  # [N, 3]
    f_rest = cols([f"f_rest_{i}" for i in range(n_rest)])  # [N, 3(K-1)], channel-major
    logit_opacities = cols(["opacity"]).reshape(n)
    log_scales = cols([f"scale_{i}" for i in range(3)])
    quats = cols([f"rot_{i}" for i in range(4)])
    _check_rotations_and_scales(path, quats, log_scales)

    sh = torch.from_numpy(sh_from_channel_major(f_dc.numpy(), f_rest.numpy()))
    return GaussianSplats(
        means=means,
        quats=quats,
        log_scales=log_scales,
        logit_opacities=logit_opacities.contiguous(),
        sh=sh,
    )
