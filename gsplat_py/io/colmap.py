"""Read and write COLMAP sparse models: ``cameras``, ``images`` and ``points3D``, as ``.bin`` or ``.txt``.

    model = read_model("data/snowmiku/sparse/0")
    camera = model.cameras[1]               # camera.K(), camera.fx, camera.distortion["k1"], ...
    image = model.images[1]                 # image.world_to_camera(): x_cam = R x_world + t
    model.points.xyz, model.points.rgb      # [P, 3] float64, [P, 3] uint8

The layouts are COLMAP's. Binary files are little-endian:

- cameras.bin: uint64 count; per camera int32 id, int32 model id, uint64 width, uint64 height, float64
  params[n] (n set by the model).
- images.bin: uint64 count; per image int32 id, float64 qvec[4] (w, x, y, z), float64 tvec[3], int32
  camera id, the name (UTF-8, NUL-terminated), uint64 K, then K x (float64 x, float64 y, int64 point3D
  id; -1 = none).
- points3D.bin: uint64 count; per point uint64 id, float64 xyz[3], uint8 rgb[3], float64 error, uint64
  track length T, then T x (int32 image id, int32 point2D index).

Text files hold the same fields, one line per camera or point and two per image (the second, the image's
2D points, may be empty); lines starting with '#' are comments. Only these three files are read: the
rigs and frames files that COLMAP 3.12+ writes next to them are ignored.

Every problem with the files raises `ColmapError`, whose one-line message names the file (and the record and
field): a missing, truncated or malformed file, and values COLMAP never writes, checked the same way for
both formats (a camera's non-positive size or focal length, a non-finite parameter, pose or point, a zero
quaternion, two images with one name, duplicate ids).
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_bytes_atomically
from .paths import PathLike

__all__ = [
    "CAMERA_MODELS",
    "CAMERA_MODELS_BY_ID",
    "CAMERA_MODELS_BY_NAME",
    "Camera",
    "CameraModel",
    "ColmapError",
    "ColmapModel",
    "Image",
    "Points3D",
    "qvec_to_rotmat",
    "read_model",
    "write_model",
]


MODEL_FILES = ("cameras", "images", "points3D")
EXTENSIONS = (".bin", ".txt")  # in order of preference when reading


class ColmapError(ValueError):
    """A COLMAP model that is missing, truncated or malformed (or, when writing, inconsistent)."""


# --------------------------------------------------------------------------------------------------------
# Camera models


@dataclass(frozen=True)
class CameraModel:
    """One of COLMAP's camera models: its id (binary files), its name (text files), its parameter names."""

    id: int
    name: str
    param_names: tuple[str, ...]

    @property
    def num_params(self) -> int:
        return len(self.param_names)


CAMERA_MODELS: tuple[CameraModel, ...] = (
    CameraModel(0, "SIMPLE_PINHOLE", ("f", "cx", "cy")),
    CameraModel(1, "PINHOLE", ("fx", "fy", "cx", "cy")),
    CameraModel(2, "SIMPLE_RADIAL", ("f", "cx", "cy", "k")),
    CameraModel(3, "RADIAL", ("f", "cx", "cy", "k1", "k2")),
    CameraModel(4, "OPENCV", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    CameraModel(5, "OPENCV_FISHEYE", ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    CameraModel(6, "FULL_OPENCV", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
    CameraModel(7, "FOV", ("fx", "fy", "cx", "cy", "omega")),
    CameraModel(8, "SIMPLE_RADIAL_FISHEYE", ("f", "cx", "cy", "k")),
    CameraModel(9, "RADIAL_FISHEYE", ("f", "cx", "cy", "k1", "k2")),
    CameraModel(
        10, "THIN_PRISM_FISHEYE", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "sx1", "sy1")
    ),
    CameraModel(
        11,
        "RAD_TAN_THIN_PRISM_FISHEYE",
        ("fx", "fy", "cx", "cy", "k0", "k1", "k2", "k3", "k4", "k5", "p0", "p1", "s0", "s1", "s2", "s3"),
    ),
)
CAMERA_MODELS_BY_ID = {model.id: model for model in CAMERA_MODELS}
CAMERA_MODELS_BY_NAME = {model.name: model for model in CAMERA_MODELS}

# Parameters that are not distortion coefficients ("f" is the shared focal length of the SIMPLE_* models).
_FOCAL_PARAMS = frozenset(("f", "fx", "fy"))
_PINHOLE_PARAMS = _FOCAL_PARAMS | {"cx", "cy"}


# --------------------------------------------------------------------------------------------------------
# The model


@dataclass(eq=False)
class Camera:
    """Intrinsics shared by one or more images; ``params`` (float64) are in ``model``'s order."""

    id: int
    model: str
    width: int
    height: int
    params: np.ndarray

    @property
    def model_info(self) -> CameraModel:
        try:
            return CAMERA_MODELS_BY_NAME[self.model]
        except KeyError:
            raise ColmapError(f"camera {self.id}: unknown camera model {self.model!r}") from None

    def param(self, name: str) -> float:
        """The parameter called ``name`` (see ``model_info.param_names``)."""
        names = self.model_info.param_names
        if name not in names:
            raise KeyError(f"camera model {self.model} has no parameter {name!r} (it has {', '.join(names)})")
        return float(self.params[names.index(name)])

    def _pinhole_param(self, name: str) -> float:
        # The SIMPLE_* models (and RADIAL, RADIAL_FISHEYE) have one focal length "f" for both axes.
        return self.param(name if name in self.model_info.param_names else "f")

    @property
    def fx(self) -> float:
        return self._pinhole_param("fx")

    @property
    def fy(self) -> float:
        return self._pinhole_param("fy")

    @property
    def cx(self) -> float:
        return self.param("cx")

    @property
    def cy(self) -> float:
        return self.param("cy")

    @property
    def distortion(self) -> dict[str, float]:
        """The distortion coefficients by name, in the model's order (empty for the pinhole models)."""
        names = self.model_info.param_names
        return {n: float(v) for n, v in zip(names, self.params) if n not in _PINHOLE_PARAMS}

    def K(self) -> np.ndarray:
        """The 3x3 (float64) pinhole intrinsics matrix; the distortion is not part of it."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(eq=False)
class Image:
    """A registered image: its pose (world -> camera), its camera, and its 2D keypoints.

    ``qvec`` is the rotation as a quaternion (w, x, y, z) and ``tvec`` the translation: a world point x
    lies at R x + t in the camera's frame, R = qvec_to_rotmat(qvec). ``xys`` (float64 [K, 2]) are the
    keypoints in pixels; ``point3D_ids`` (int64 [K]) the 3D point each one observes, -1 for none.
    """

    id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray
    point3D_ids: np.ndarray

    def rotation(self) -> np.ndarray:
        """The 3x3 world -> camera rotation."""
        return qvec_to_rotmat(self.qvec)

    def world_to_camera(self) -> np.ndarray:
        """The 4x4 (float64) world -> camera transform [[R, t], [0, 1]]."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.rotation()
        matrix[:3, 3] = self.tvec
        return matrix


@dataclass(eq=False)
class Points3D:
    """The sparse point cloud, one row per point.

    ``xyz`` float64 [P, 3], ``rgb`` uint8 [P, 3], ``error`` float64 [P] (mean reprojection error in
    pixels), ``ids`` int64 [P]. The track of point i (the image observations it was triangulated from) is
    ``track(i)``: rows ``track_offsets[i]:track_offsets[i + 1]`` (``track_offsets`` int64 [P + 1]) of
    ``track_image_ids`` and ``track_point2D_idxs`` (int32 [T]; the index into that image's keypoints).
    """

    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    ids: np.ndarray
    track_offsets: np.ndarray
    track_image_ids: np.ndarray
    track_point2D_idxs: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def track(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image ids, point2D indices) of the i-th point (the row, not the point id)."""
        rows = slice(self.track_offsets[i], self.track_offsets[i + 1])
        return self.track_image_ids[rows], self.track_point2D_idxs[rows]


@dataclass(eq=False)
class ColmapModel:
    """A sparse reconstruction; ``cameras`` and ``images`` are keyed by id, in file order."""

    cameras: dict[int, Camera]
    images: dict[int, Image]
    points: Points3D


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """The 3x3 rotation of the quaternion (w, x, y, z), which is normalised first (COLMAP's stored ones
    are)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


# --------------------------------------------------------------------------------------------------------
# Reading


def read_model(path: PathLike, ext: str | None = None) -> ColmapModel:
    """Read the model in the folder ``path`` (e.g. ``sparse/0``).

    Reads cameras, images and points3D with extension ``ext`` (".bin" or ".txt"); by default the binary
    files when all three are there, else the text files.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ColmapError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    ext = _model_extension(folder, ext)
    cameras_path, images_path, points_path = (folder / f"{name}{ext}" for name in MODEL_FILES)
    read_cameras, read_images, read_points = _READERS[ext]
    cameras = read_cameras(cameras_path)
    for camera in cameras.values():
        _check_camera(camera, cameras_path.name)
    images = read_images(images_path)
    _check_images(images, images_path.name)
    for image in images.values():
        if image.camera_id not in cameras:
            raise ColmapError(
                f"{images_path.name}: image {image.id} ({image.name}) refers to camera {image.camera_id}, "
                f"which is not in {cameras_path.name}"
            )
    points = read_points(points_path)
    _check_points(points, points_path.name)
    return ColmapModel(cameras, images, points)


# The checks of each kind of record, whichever format it was read from: what COLMAP itself would never
# write, and what would otherwise surface far from the file (a division by a zero focal length, a NaN
# pose breaking the world normalisation).


def _check_camera(camera: Camera, file: str) -> None:
    where = f"{file}: camera {camera.id} ({camera.model})"
    for name, size in (("width", camera.width), ("height", camera.height)):
        if size < 1:
            raise ColmapError(f"{where}: {name} is {size}; expected a positive number of pixels")
    for name, value in zip(camera.model_info.param_names, camera.params.tolist()):
        if not math.isfinite(value):
            raise ColmapError(f"{where}: {name} is {value}; expected a finite number")
        if name in _FOCAL_PARAMS and not value > 0.0:
            raise ColmapError(f"{where}: {name} is {value}; expected a positive focal length in pixels")


def _check_images(images: dict[int, Image], file: str) -> None:
    first_with_name: dict[str, int] = {}
    for image in images.values():
        where = f"{file}: image {image.id} ({image.name!r})"
        if not image.name:
            raise ColmapError(f"{file}: image {image.id} has an empty name")
        if image.name in first_with_name:
            raise ColmapError(
                f"{where}: image {first_with_name[image.name]} has the same name (one photo cannot have two "
                "poses)"
            )
        first_with_name[image.name] = image.id
        if not (np.isfinite(image.qvec).all() and np.linalg.norm(image.qvec) > 0.0):
            raise ColmapError(
                f"{where}: the rotation qvec is {image.qvec.tolist()}; expected a quaternion of 4 finite "
                "numbers, not all zero"
            )
        if not np.isfinite(image.tvec).all():
            raise ColmapError(
                f"{where}: the translation tvec is {image.tvec.tolist()}; expected 3 finite numbers"
            )
        bad = ~np.isfinite(image.xys).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ColmapError(
                f"{where}: 2D point {row} is at {image.xys[row].tolist()}; expected finite pixel coordinates"
            )


def _check_points(points: Points3D, file: str) -> None:
    for name, values in (("position", points.xyz), ("error", points.error.reshape(-1, 1))):
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ColmapError(
                f"{file}: point {points.ids[row]} has the {name} {values[row].tolist()}; expected finite "
                f"numbers ({int(bad.sum())} of the {len(points)} points have such a {name})"
            )
    unique_ids, counts = np.unique(points.ids, return_counts=True)
    if (counts > 1).any():
        raise ColmapError(f"{file}: duplicate point id {unique_ids[np.argmax(counts > 1)]}")


def _check_extension(ext: str) -> str:
    if ext not in EXTENSIONS:
        raise ValueError(f"ext must be '.bin' or '.txt', not {ext!r}")
    return ext


def _model_extension(folder: Path, ext: str | None) -> str:
    candidates = EXTENSIONS if ext is None else (_check_extension(ext),)
    for candidate in candidates:
        if all((folder / f"{name}{candidate}").is_file() for name in MODEL_FILES):
            return candidate
    expected = " or ".join(", ".join(f"{name}{c}" for name in MODEL_FILES) for c in candidates)
    found = [f"{name}{c}" for c in candidates for name in MODEL_FILES if (folder / f"{name}{c}").is_file()]
    raise ColmapError(
        f"{folder}: incomplete COLMAP model: expected {expected}; found {', '.join(found) or 'none of them'}"
    )


def _insert(items: dict, item: Camera | Image, where: str) -> None:
    kind = type(item).__name__.lower()
    if item.id in items:
        raise ColmapError(f"{where}: duplicate {kind} id {item.id}")
    items[item.id] = item


# Binary ---------------------------------------------------------------------------------------------------

_U64 = struct.Struct("<Q")
_CAMERA_HEADER = struct.Struct("<iiQQ")  # id, model id, width, height
_IMAGE_HEADER = struct.Struct("<i4d3di")  # id, qvec, tvec, camera id
_POINT2D = np.dtype([("xy", "<f8", (2,)), ("point3D_id", "<i8")])
_POINT3D = np.dtype(
    [("id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)), ("error", "<f8"), ("track_length", "<u8")]
)
_TRACK_LENGTH_OFFSET = _POINT3D.itemsize - 8  # the record's last field
_TRACK_ELEMENT = np.dtype([("image_id", "<i4"), ("point2D_idx", "<i4")])


class _BinaryReader:
    """Reads a whole file into memory and decodes it front to back, naming the file in every error."""

    def __init__(self, path: Path):
        self.name = path.name
        self.data = path.read_bytes()
        self.offset = 0

    def take(self, size: int, where: str) -> bytes:
        """The next ``size`` bytes."""
        missing = self.offset + size - len(self.data)
        if missing > 0:
            bytes_ = "byte" if missing == 1 else "bytes"
            raise ColmapError(f"{self.name}: truncated at {where} (expected {missing} more {bytes_})")
        self.offset += size
        return self.data[self.offset - size : self.offset]

    def unpack(self, layout: struct.Struct, where: str) -> tuple:
        return layout.unpack(self.take(layout.size, where))

    def array(self, dtype: np.dtype, count: int, where: str) -> np.ndarray:
        """The next ``count`` items of ``dtype``, read-only (the readers copy out with ``astype``)."""
        return np.frombuffer(self.take(dtype.itemsize * count, where), dtype)

    def count(self, items: str, min_item_size: int) -> int:
        """The leading uint64 item count, checked against the file size (guards against garbage counts)."""
        (count,) = self.unpack(_U64, f"the {items} count")
        available = len(self.data) - self.offset
        if count * min_item_size > available:
            raise ColmapError(
                f"{self.name}: truncated: {count} {items} need at least {count * min_item_size} bytes, "
                f"{available} follow the count"
            )
        return count

    def name_string(self, where: str) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise ColmapError(f"{self.name}: truncated at {where} (the image name is not terminated)")
        raw = self.data[self.offset : end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ColmapError(f"{self.name}: {where} has a name that is not UTF-8: {raw!r}") from None

    def expect_end(self, item: str) -> None:
        extra = len(self.data) - self.offset
        if extra:
            raise ColmapError(f"{self.name}: {extra} unexpected bytes after the last {item}")


def _read_cameras_bin(path: Path) -> dict[int, Camera]:
    reader = _BinaryReader(path)
    count = reader.count("cameras", _CAMERA_HEADER.size)
    cameras: dict[int, Camera] = {}
    for i in range(count):
        where = f"camera {i + 1} of {count}"
        camera_id, model_id, width, height = reader.unpack(_CAMERA_HEADER, where)
        model = CAMERA_MODELS_BY_ID.get(model_id)
        if model is None:
            raise ColmapError(f"{path.name}: camera {camera_id} has unknown camera model id {model_id}")
        params = reader.array(np.dtype("<f8"), model.num_params, where).astype(np.float64)
        _insert(cameras, Camera(camera_id, model.name, width, height, params), path.name)
    reader.expect_end("camera")
    return cameras


def _read_images_bin(path: Path) -> dict[int, Image]:
    reader = _BinaryReader(path)
    count = reader.count("images", _IMAGE_HEADER.size + 1 + _U64.size)
    images: dict[int, Image] = {}
    for i in range(count):
        where = f"image {i + 1} of {count}"
        header = reader.unpack(_IMAGE_HEADER, where)
        name = reader.name_string(where)
        (num_points,) = reader.unpack(_U64, where)
        points = reader.array(_POINT2D, num_points, where)
        image = Image(
            id=header[0],
            qvec=np.array(header[1:5]),
            tvec=np.array(header[5:8]),
            camera_id=header[8],
            name=name,
            xys=points["xy"].astype(np.float64),
            point3D_ids=points["point3D_id"].astype(np.int64),
        )
        _insert(images, image, path.name)
    reader.expect_end("image")
    return images


def _read_points_bin(path: Path) -> Points3D:
    reader = _BinaryReader(path)
    count = reader.count("points", _POINT3D.itemsize)
    # Gather the fixed-size headers and the tracks as two byte strings, then decode each in one go.
    header_chunks, track_chunks = [], []
    for i in range(count):
        where = f"point {i + 1} of {count}"
        header_chunks.append(reader.take(_POINT3D.itemsize, where))
        (track_length,) = _U64.unpack_from(header_chunks[-1], _TRACK_LENGTH_OFFSET)
        track_chunks.append(reader.take(track_length * _TRACK_ELEMENT.itemsize, where))
    reader.expect_end("point")
    header = np.frombuffer(b"".join(header_chunks), _POINT3D)
    track = np.frombuffer(b"".join(track_chunks), _TRACK_ELEMENT)
    return Points3D(
        xyz=header["xyz"].astype(np.float64),
        rgb=header["rgb"].astype(np.uint8),
        error=header["error"].astype(np.float64),
        ids=header["id"].astype(np.int64),
        track_offsets=np.concatenate([[0], np.cumsum(header["track_length"], dtype=np.int64)]),
        track_image_ids=track["image_id"].astype(np.int32),
        track_point2D_idxs=track["point2D_idx"].astype(np.int32),
    )


# Text -----------------------------------------------------------------------------------------------------


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ColmapError(f"{path.name}: not UTF-8 text ({error})") from None
    return ((number, line.strip()) for number, line in enumerate(text.split("\n"), 1))


def _data_lines(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The lines that are neither empty nor comments (consumed from ``lines``)."""
    for number, line in lines:
        if line and not line.startswith("#"):
            yield number, line


@contextlib.contextmanager
def _parsing(where: str, what: str) -> Iterator[None]:
    """Turns a failed conversion of a text field into a ColmapError naming the file and line."""
    try:
        yield
    except ColmapError:
        raise
    except (ValueError, IndexError, OverflowError) as error:
        raise ColmapError(f"{where}: cannot parse {what} ({error})") from None


def _read_cameras_txt(path: Path) -> dict[int, Camera]:
    cameras: dict[int, Camera] = {}
    for number, line in _data_lines(_numbered_lines(path)):
        where = f"{path.name} line {number}"
        with _parsing(where, "the camera"):
            fields = line.split()
            camera_id, model_name, width, height = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
            params = np.array(fields[4:], dtype=np.float64)
        model = CAMERA_MODELS_BY_NAME.get(model_name)
        if model is None:
            raise ColmapError(f"{where}: camera {camera_id} has unknown camera model {model_name!r}")
        if len(params) != model.num_params:
            raise ColmapError(
                f"{where}: camera {camera_id} ({model.name}) has {len(params)} params, expected "
                f"{model.num_params} ({' '.join(model.param_names)})"
            )
        _insert(cameras, Camera(camera_id, model.name, width, height, params), where)
    return cameras


def _read_images_txt(path: Path) -> dict[int, Image]:
    images: dict[int, Image] = {}
    lines = _numbered_lines(path)
    for number, line in _data_lines(lines):
        where = f"{path.name} line {number}"
        with _parsing(where, "the image"):
            fields = line.split(maxsplit=9)
            image_id, camera_id, name = int(fields[0]), int(fields[8]), fields[9]
            qvec = np.array(fields[1:5], dtype=np.float64)
            tvec = np.array(fields[5:8], dtype=np.float64)
        # The next line, even an empty one, holds the image's 2D points (it may be missing at the very end).
        points_number, points_line = next(lines, (number + 1, ""))
        with _parsing(f"{path.name} line {points_number}", f"the 2D points of image {image_id}"):
            fields = points_line.split()
            if len(fields) % 3:
                raise ValueError(f"{len(fields)} values, not (X, Y, POINT3D_ID) triples")
            xys = np.array(fields, dtype=np.float64).reshape(-1, 3)[:, :2].copy()
            point3D_ids = np.array(fields[2::3], dtype=np.int64)
        _insert(images, Image(image_id, qvec, tvec, camera_id, name, xys, point3D_ids), where)
    return images


def _read_points_txt(path: Path) -> Points3D:
    ids, xyz, rgb, error, track_lengths, track = [], [], [], [], [], []
    for number, line in _data_lines(_numbered_lines(path)):
        with _parsing(f"{path.name} line {number}", "the point"):
            fields = line.split()
            point_track = [int(v) for v in fields[8:]]
            if len(point_track) % 2:
                raise ValueError("the track is not (IMAGE_ID, POINT2D_IDX) pairs")
            color = [int(v) for v in fields[4:7]]
            if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                raise ValueError(f"the color {fields[4:7]} is not three values in 0..255")
            ids.append(int(fields[0]))
            xyz.append([float(v) for v in fields[1:4]])
            error.append(float(fields[7]))
        rgb.append(color)
        track_lengths.append(len(point_track) // 2)
        track.extend(point_track)
    track_array = np.array(track, dtype=np.int32).reshape(-1, 2)
    return Points3D(
        xyz=np.array(xyz, dtype=np.float64).reshape(-1, 3),
        rgb=np.array(rgb, dtype=np.uint8).reshape(-1, 3),
        error=np.array(error, dtype=np.float64),
        ids=np.array(ids, dtype=np.int64),
        track_offsets=np.concatenate([[0], np.cumsum(track_lengths, dtype=np.int64)]),
        track_image_ids=track_array[:, 0].copy(),
        track_point2D_idxs=track_array[:, 1].copy(),
    )


_READERS: dict[str, tuple[Callable, Callable, Callable]] = {
    ".bin": (_read_cameras_bin, _read_images_bin, _read_points_bin),
    ".txt": (_read_cameras_txt, _read_images_txt, _read_points_txt),
}


# --------------------------------------------------------------------------------------------------------
# Writing


def write_model(model: ColmapModel, path: PathLike, ext: str = ".bin") -> None:
    """Write cameras, images and points3D with extension ``ext`` (".bin" or ".txt") into the folder ``path``.

    The folder is created if needed. The whole model is checked and encoded before any file is written,
    and each file is replaced atomically (written to a temporary file that is then renamed), so a failed
    write leaves the files already there as they were. Other files in the folder are left alone; note that
    `read_model` prefers .bin files, so writing .txt next to an older .bin model needs ``ext=".txt"`` to
    read it back.
    """
    encoders = _ENCODERS[_check_extension(ext)]
    for image in model.images.values():
        if image.camera_id not in model.cameras:
            raise ColmapError(
                f"image {image.id} ({image.name}) refers to camera {image.camera_id}, which is not in the "
                "model"
            )
    contents = [encode(part) for encode, part in zip(encoders, (model.cameras, model.images, model.points))]
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in zip(MODEL_FILES, contents):
        write_bytes_atomically(folder / f"{name}{ext}", data)


def _checked_camera_model(camera: Camera) -> CameraModel:
    model = camera.model_info
    if len(camera.params) != model.num_params:
        raise ColmapError(
            f"camera {camera.id} ({model.name}) has {len(camera.params)} params, expected {model.num_params}"
        )
    return model


def _checked_name(image: Image) -> str:
    """The image's name, if both formats can store it (text lines are stripped; binary names end at NUL)."""
    if any(c in image.name for c in "\0\n\r") or image.name != image.name.strip():
        raise ColmapError(
            f"image {image.id}: the name {image.name!r} cannot be stored (line break, NUL, or leading or "
            f"trailing whitespace)"
        )
    return image.name


# Binary ---------------------------------------------------------------------------------------------------


def _encode_cameras_bin(cameras: dict[int, Camera]) -> bytes:
    chunks = [_U64.pack(len(cameras))]
    for camera in cameras.values():
        model = _checked_camera_model(camera)
        chunks.append(_CAMERA_HEADER.pack(camera.id, model.id, camera.width, camera.height))
        chunks.append(np.asarray(camera.params, dtype="<f8").tobytes())
    return b"".join(chunks)


def _encode_images_bin(images: dict[int, Image]) -> bytes:
    chunks = [_U64.pack(len(images))]
    for image in images.values():
        points = np.empty(len(image.point3D_ids), _POINT2D)
        points["xy"] = image.xys
        points["point3D_id"] = image.point3D_ids
        chunks.append(_IMAGE_HEADER.pack(image.id, *image.qvec, *image.tvec, image.camera_id))
        chunks.append(_checked_name(image).encode("utf-8") + b"\0")
        chunks.append(_U64.pack(len(points)))
        chunks.append(points.tobytes())
    return b"".join(chunks)


def _encode_points_bin(points: Points3D) -> bytes:
    offsets = np.asarray(points.track_offsets, dtype=np.int64)
    header = np.empty(len(points), _POINT3D)
    header["id"] = points.ids
    header["xyz"] = points.xyz
    header["rgb"] = points.rgb
    header["error"] = points.error
    header["track_length"] = np.diff(offsets)
    track = np.empty(offsets[-1], _TRACK_ELEMENT)
    track["image_id"] = points.track_image_ids
    track["point2D_idx"] = points.track_point2D_idxs
    # Each point's fixed-size header is followed by its track: interleave slices of the two byte strings.
    header_bytes, track_bytes = header.tobytes(), track.tobytes()
    size, element = _POINT3D.itemsize, _TRACK_ELEMENT.itemsize
    chunks = [_U64.pack(len(points))]
    for i in range(len(points)):
        chunks.append(header_bytes[i * size : (i + 1) * size])
        chunks.append(track_bytes[offsets[i] * element : offsets[i + 1] * element])
    return b"".join(chunks)


# Text (floats are written with repr, which reads back to the same float64) --------------------------------


def _text_file(header: list[str], lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in header + lines).encode("utf-8")


def _floats(values: np.ndarray) -> str:
    return " ".join(map(repr, np.asarray(values, dtype=np.float64).tolist()))


def _encode_cameras_txt(cameras: dict[int, Camera]) -> bytes:
    header = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cameras)}",
    ]
    lines = [
        f"{c.id} {_checked_camera_model(c).name} {c.width} {c.height} {_floats(c.params)}"
        for c in cameras.values()
    ]
    return _text_file(header, lines)


def _encode_images_txt(images: dict[int, Image]) -> bytes:
    num_observations = sum(len(image.point3D_ids) for image in images.values())
    header = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(images)}, mean observations per image: "
        f"{num_observations / max(len(images), 1)}",
    ]
    lines = []
    for image in images.values():
        name = _checked_name(image)
        lines.append(f"{image.id} {_floats(image.qvec)} {_floats(image.tvec)} {image.camera_id} {name}")
        xys = np.asarray(image.xys, dtype=np.float64).tolist()
        ids = np.asarray(image.point3D_ids, dtype=np.int64).tolist()
        lines.append(" ".join(f"{x!r} {y!r} {point3D_id}" for (x, y), point3D_id in zip(xys, ids)))
    return _text_file(header, lines)


def _encode_points_txt(points: Points3D) -> bytes:
    offsets = np.asarray(points.track_offsets, dtype=np.int64)
    header = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points)}, mean track length: {offsets[-1] / max(len(points), 1)}",
    ]
    track = np.stack([points.track_image_ids, points.track_point2D_idxs], axis=1).astype(np.int64)
    track_text = [f"{image_id} {idx}" for image_id, idx in track.tolist()]
    lines = []
    for i, (point_id, (x, y, z), (r, g, b), error) in enumerate(
        zip(points.ids.tolist(), points.xyz.tolist(), points.rgb.tolist(), points.error.tolist())
    ):
        point = f"{point_id} {x!r} {y!r} {z!r} {r} {g} {b} {error!r}"
        lines.append(" ".join([point, *track_text[offsets[i] : offsets[i + 1]]]))
    return _text_file(header, lines)


_ENCODERS: dict[str, tuple[Callable, Callable, Callable]] = {
    ".bin": (_encode_cameras_bin, _encode_images_bin, _encode_points_bin),
    ".txt": (_encode_cameras_txt, _encode_images_txt, _encode_points_txt),
}
