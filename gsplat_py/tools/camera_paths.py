"""Cameras to render: a scene's views, paths generated around its training cameras, and camera files.

Every camera is a pinhole camera in OpenCV axes (x right, y down, z forward) with its own image size.
The generated paths work in any world frame: "up" is the training cameras' mean up direction (their -y
axis) and the scene centre is the point nearest to all their optical axes (least squares).

- :func:`ellipse_path`: around the vertical axis through the scene centre, at the cameras' mean height,
  on the ellipse through the 90th percentiles of their horizontal offsets (along the principal directions
  of those offsets), starting at the first camera's azimuth and turning counter-clockwise about up, every
  frame looking at the centre with the centre at the image centre. For captures that go around an object
  (gsplat's ``ellipse`` trajectory).
- :func:`spiral_path`: two turns of a spiral around the mean camera position, in the plane of the mean
  camera, with radii from the 90th percentiles of the cameras' offsets from it (depth oscillating half as
  fast), looking at the scene centre. For forward-facing captures (the LLFF spiral).
- :func:`interpolated_path`: a Catmull-Rom spline through the training cameras in order (positions and
  viewing directions); frames are spread evenly over the segments, and ``(n - 1) m + 1`` frames pass
  exactly through every camera.

Generated cameras get the principal point at the image centre, the size of the first training camera
(or ``width``/``height``; one alone keeps its aspect ratio) and its focal lengths in pixels per image
width/height, times ``focal_scale``.

Camera files (JSON, :func:`read_cameras_json` / :func:`write_cameras_json`)::

    {
      "frame": "normalized",                  optional: "colmap" or "normalized" (see gsplat_py.frames)
      "from_colmap": [[...], ..., [...]],     optional: the 4x4 similarity COLMAP -> "normalized" frame
      "cameras": [
        {"name": "frame_00000",               optional (default frame_NNNNN), names the output files
         "width": 252, "height": 189,         image size in pixels
         "fx": 207.0, "fy": 206.6,            focal lengths in pixels
         "cx": 126.0, "cy": 94.5,             optional principal point (default: the image centre);
                                              pixel centres at (i + 0.5, j + 0.5), COLMAP's convention
         "world_to_camera": [[r00, r01, r02, t0], [r10, r11, r12, t1], [r20, r21, r22, t2], [0, 0, 0, 1]]
                                              or "camera_to_world": its inverse (exactly one of the two)
        }, ...
      ]
    }

Matrices are rigid (a rotation, determinant +1, within 1e-4, and a translation) in OpenCV axes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import View
from ..data.geometry import rigid_inverse, split_similarity
from ..data.world_frame import FRAME_NAMES, WorldFrame
from ..io.atomic import write_text_atomically
from ..io.paths import PathLike, input_file_problem

__all__ = [
    "Camera",
    "CameraFile",
    "CameraFileError",
    "PATH_KINDS",
    "cameras_from_views",
    "resize_cameras",
    "scene_centre",
    "up_direction",
    "ellipse_path",
    "spiral_path",
    "interpolated_path",
    "generate_path",
    "read_cameras_json",
    "write_cameras_json",
]

PATH_KINDS = ("ellipse", "spiral", "interpolate")
# Limits a camera file is checked against before it is parsed: 100,000 cameras take ~40 MB.
MAX_CAMERA_FILE_BYTES = 256 << 20
MAX_JSON_DEPTH = 16
MAX_JSON_NUMBER_CHARACTERS = 64
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# Strings (skipped as a whole, brackets inside them included), brackets, and numbers.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]|-?[0-9][0-9.eE+-]*')
RIGID_TOLERANCE = 1e-4  # JSON files written by hand or rounded to a few digits still pass
SPIRAL_TURNS = 2
_PERCENTILE = 0.9
# A one-sided capture: its cameras' directions from the centre leave a gap wider than both of these.
ARC_GAP_DEGREES = 90.0
ARC_GAP_TO_MEDIAN = 3.0


class CameraFileError(ValueError):
    """A camera JSON file that cannot be used; the message names the file and the field."""


@dataclass(eq=False)
class Camera:
    """A pinhole camera: ``world_to_camera`` float64 [4, 4] (rigid, OpenCV axes), ``K`` float64 [3, 3]."""

    name: str
    world_to_camera: Tensor
    K: Tensor
    width: int
    height: int

    def camera_to_world(self) -> Tensor:
        return rigid_inverse(self.world_to_camera.double())


def cameras_from_views(views: Sequence[View]) -> list[Camera]:
    return [
        Camera(view.name, view.world_to_camera.double(), view.K.double(), view.width, view.height)
        for view in views
    ]


def _output_size(width: int, height: int, new_width: int | None, new_height: int | None) -> tuple[int, int]:
    if new_width is not None and new_height is None:
        return new_width, max(1, round(new_width * height / width))
    if new_width is None and new_height is not None:
        return max(1, round(new_height * width / height)), new_height
    if new_width is None or new_height is None:
        return width, height
    return new_width, new_height


def resize_cameras(
    cameras: Sequence[Camera],
    width: int | None = None,
    height: int | None = None,
    focal_scale: float = 1.0,
) -> list[Camera]:
    """The same cameras rendering ``width`` x ``height`` images (one alone keeps each camera's aspect ratio)
    of the same field of view, with focal lengths times ``focal_scale`` (a zoom about the principal point)."""
    resized = []
    for camera in cameras:
        new_width, new_height = _output_size(camera.width, camera.height, width, height)
        sx, sy = new_width / camera.width, new_height / camera.height
        K = camera.K.clone()
        K[0, 0] *= sx * focal_scale
        K[1, 1] *= sy * focal_scale
        K[0, 2] *= sx
        K[1, 2] *= sy
        resized.append(Camera(camera.name, camera.world_to_camera, K, new_width, new_height))
    return resized


# --------------------------------------------------------------------------------------------------------
# Generated paths


def up_direction(camera_to_world: Tensor) -> Tensor:
    """The cameras' mean up direction (unit, float64): the mean of their -y axes."""
    up = -camera_to_world[:, :3, 1].double().mean(dim=0)
    norm = float(up.norm())
    if norm < 1e-9:
        raise ValueError("the training cameras' up directions cancel out; cannot tell which way is up")
    return up / norm


def scene_centre(camera_to_world: Tensor) -> Tensor:
    """The point nearest to all the cameras' optical axes (least squares; float64 [3])."""
    centres = camera_to_world[:, :3, 3].double()
    forwards = torch.nn.functional.normalize(camera_to_world[:, :3, 2].double(), dim=-1)
    # Sum over cameras of (I - f fᵀ)(x - c) = 0: the normal equations of the distances to the axes.
    projectors = torch.eye(3, dtype=torch.float64) - forwards[:, :, None] * forwards[:, None, :]
    lhs = projectors.sum(dim=0)
    rhs = (projectors @ centres[..., None]).sum(dim=0)
    if float(torch.linalg.cond(lhs)) > 1e8:
        raise ValueError(
            "the training cameras' optical axes are (nearly) parallel, so they look at no centre: "
            "try the interpolate path or a camera file"
        )
    return torch.linalg.solve(lhs, rhs)[:, 0]


def _look_at(position: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """World-to-camera (OpenCV axes) of a camera at ``position`` looking at ``target``, ``up`` upwards."""
    forward = torch.nn.functional.normalize(target - position, dim=0)
    right = torch.linalg.cross(forward, up)
    if float(right.norm()) < 1e-9:
        raise ValueError("a path camera looks straight up or down; cannot orient it")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    camera_to_world = torch.eye(4, dtype=torch.float64)
    camera_to_world[:3, 0], camera_to_world[:3, 1], camera_to_world[:3, 2] = right, down, forward
    camera_to_world[:3, 3] = position
    return rigid_inverse(camera_to_world)


def _path_intrinsics(cameras: Sequence[Camera], width: int | None, height: int | None, focal_scale: float):
    first = cameras[0]
    out_width, out_height = _output_size(first.width, first.height, width, height)
    K = torch.eye(3, dtype=torch.float64)
    K[0, 0] = first.K[0, 0] / first.width * out_width * focal_scale
    K[1, 1] = first.K[1, 1] / first.height * out_height * focal_scale
    K[0, 2], K[1, 2] = out_width / 2.0, out_height / 2.0
    return K, out_width, out_height


def _stack_camera_to_world(cameras: Sequence[Camera], kind: str, minimum: int) -> Tensor:
    if len(cameras) < minimum:
        raise ValueError(f"the {kind} path needs at least {minimum} training cameras, got {len(cameras)}")
    return torch.stack([camera.camera_to_world() for camera in cameras])


def _make_cameras(world_to_cameras: list[Tensor], K: Tensor, width: int, height: int) -> list[Camera]:
    return [Camera(f"frame_{i:05d}", w2c, K.clone(), width, height) for i, w2c in enumerate(world_to_cameras)]


def _percentile(values: Tensor) -> float:
    return float(torch.quantile(values.abs(), _PERCENTILE))


def _covered_arc(angles: list[float]) -> tuple[float, float]:
    """(start, sweep) of the path's angles: the full turn from the first camera's angle when the cameras
    surround the centre, else the arc they cover, from its end nearer the first camera to the other.

    The cameras leave a side unseen when the largest gap between their sorted angles exceeds
    ARC_GAP_DEGREES and ARC_GAP_TO_MEDIAN times the median gap (evenly spread cameras, even few, surround)."""
    turn = 2.0 * math.pi
    ordered = sorted(angle % turn for angle in angles)
    gaps = [(ordered[(i + 1) % len(ordered)] - ordered[i]) % turn for i in range(len(ordered))]
    widest = max(range(len(gaps)), key=lambda i: gaps[i])
    median_gap = sorted(gaps)[len(gaps) // 2]
    if gaps[widest] <= max(math.radians(ARC_GAP_DEGREES), ARC_GAP_TO_MEDIAN * median_gap):
        return angles[0], turn
    arc_start = ordered[(widest + 1) % len(ordered)]  # counter-clockwise from here to the gap
    sweep = turn - gaps[widest]
    first = angles[0] % turn
    if (first - arc_start) % turn <= sweep / 2.0:
        return arc_start, sweep
    return arc_start + sweep, -sweep


def ellipse_path(
    cameras: Sequence[Camera],
    frames: int,
    width: int | None = None,
    height: int | None = None,
    focal_scale: float = 1.0,
) -> list[Camera]:
    """``frames`` cameras on an ellipse around the scene centre, looking at it (module docstring)."""
    camera_to_world = _stack_camera_to_world(cameras, "ellipse", 2)
    up, centre = up_direction(camera_to_world), scene_centre(camera_to_world)
    offsets = camera_to_world[:, :3, 3] - centre
    heights = offsets @ up
    horizontal = offsets - heights[:, None] * up
    # Principal directions of the horizontal offsets: the ellipse follows the spread of the capture.
    eigenvalues, eigenvectors = torch.linalg.eigh(horizontal.T @ horizontal)
    major = eigenvectors[:, 2]
    minor = torch.linalg.cross(up, major)
    radius_major, radius_minor = _percentile(horizontal @ major), _percentile(horizontal @ minor)
    if min(radius_major, radius_minor) < 1e-9:
        raise ValueError(
            "the training cameras do not spread around the scene centre; try the spiral or interpolate path"
        )
    lift = float(heights.mean()) * up
    # Ellipse parameters (angles about up, counter-clockwise) of the cameras' directions from the centre.
    angles = [
        math.atan2(float(offset @ minor) / radius_minor, float(offset @ major) / radius_major)
        for offset in horizontal
    ]
    # Start at the first camera's angle (which also makes the path independent of the eigenvector's sign);
    # around the whole ellipse, or along the arc the cameras cover when they leave a side unseen.
    start, sweep = _covered_arc(angles)
    K, out_width, out_height = _path_intrinsics(cameras, width, height, focal_scale)
    poses = []
    for i in range(frames):
        step = i / frames if sweep == 2.0 * math.pi else i / max(frames - 1, 1)
        angle = start + sweep * step
        position = (
            centre + lift + radius_major * math.cos(angle) * major + radius_minor * math.sin(angle) * minor
        )
        poses.append(_look_at(position, centre, up))
    return _make_cameras(poses, K, out_width, out_height)


def spiral_path(
    cameras: Sequence[Camera],
    frames: int,
    width: int | None = None,
    height: int | None = None,
    focal_scale: float = 1.0,
) -> list[Camera]:
    """``frames`` cameras on a spiral around the mean camera, looking at the scene centre (module
    docstring)."""
    camera_to_world = _stack_camera_to_world(cameras, "spiral", 2)
    up, centre = up_direction(camera_to_world), scene_centre(camera_to_world)
    positions = camera_to_world[:, :3, 3]
    mean_position = positions.mean(dim=0)
    forward = torch.nn.functional.normalize(camera_to_world[:, :3, 2].mean(dim=0), dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    offsets = positions - mean_position
    radii = [_percentile(offsets @ axis) for axis in (right, down, forward)]
    if max(radii[:2]) < 1e-9:
        raise ValueError("the training cameras do not spread around their mean position; cannot fit a spiral")
    K, out_width, out_height = _path_intrinsics(cameras, width, height, focal_scale)
    poses = []
    for i in range(frames):
        angle = 2.0 * math.pi * SPIRAL_TURNS * i / frames
        position = (
            mean_position
            + radii[0] * math.cos(angle) * right
            - radii[1] * math.sin(angle) * down
            - radii[2] * math.sin(0.5 * angle) * forward
        )
        poses.append(_look_at(position, centre, up))
    return _make_cameras(poses, K, out_width, out_height)


def _catmull_rom(points: Tensor, segment: int, t: float) -> Tensor:
    """The uniform Catmull-Rom spline through ``points`` [P, D] at parameter ``t`` in [0, 1] of
    ``segment``."""
    last = points.shape[0] - 1
    p0, p1, p2, p3 = (points[min(max(segment + offset, 0), last)] for offset in (-1, 0, 1, 2))
    t2, t3 = t * t, t * t * t
    return 0.5 * (
        2.0 * p1
        + (p2 - p0) * t
        + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * t2
        + (3.0 * p1 - p0 - 3.0 * p2 + p3) * t3
    )


def interpolated_path(
    cameras: Sequence[Camera],
    frames: int,
    width: int | None = None,
    height: int | None = None,
    focal_scale: float = 1.0,
) -> list[Camera]:
    """``frames`` cameras on a smooth path through ``cameras`` in order (module docstring)."""
    camera_to_world = _stack_camera_to_world(cameras, "interpolate", 2)
    if frames < 2:
        raise ValueError(f"the interpolate path needs at least 2 frames, got {frames}")
    # Position, forward and down vectors through the same spline; the frame is re-orthonormalised after.
    keys = torch.cat([camera_to_world[:, :3, 3], camera_to_world[:, :3, 2], camera_to_world[:, :3, 1]], dim=1)
    K, out_width, out_height = _path_intrinsics(cameras, width, height, focal_scale)
    segments = len(cameras) - 1
    poses = []
    for i in range(frames):
        u = i * segments / (frames - 1)
        segment = min(int(u), segments - 1)
        value = _catmull_rom(keys, segment, u - segment)
        forward = torch.nn.functional.normalize(value[3:6], dim=0)
        right = torch.nn.functional.normalize(torch.linalg.cross(value[6:9], forward), dim=0)
        down = torch.linalg.cross(forward, right)
        camera_to_world_i = torch.eye(4, dtype=torch.float64)
        camera_to_world_i[:3, 0], camera_to_world_i[:3, 1], camera_to_world_i[:3, 2] = right, down, forward
        camera_to_world_i[:3, 3] = value[:3]
        poses.append(rigid_inverse(camera_to_world_i.double()))
    return _make_cameras(poses, K, out_width, out_height)


def generate_path(
    kind: str,
    cameras: Sequence[Camera],
    frames: int,
    width: int | None = None,
    height: int | None = None,
    focal_scale: float = 1.0,
) -> list[Camera]:
    """The path ``kind`` (one of PATH_KINDS) fitted to the training ``cameras``."""
    makers = {"ellipse": ellipse_path, "spiral": spiral_path, "interpolate": interpolated_path}
    if kind not in makers:
        raise ValueError(f"path must be one of {', '.join(PATH_KINDS)}, got {kind!r}")
    if frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames}")
    return makers[kind](cameras, frames, width, height, focal_scale)


# --------------------------------------------------------------------------------------------------------
# Camera files


@dataclass
class CameraFile:
    """The cameras of a JSON file and the world frame it declares (None: the model's frame)."""

    cameras: list[Camera]
    frame: WorldFrame | None


def write_cameras_json(path: PathLike, cameras: Sequence[Camera], frame: WorldFrame | None = None) -> None:
    """Write ``cameras`` (and their ``frame``) in the documented JSON format, one camera a line,
    atomically."""
    header = []
    if frame is not None:
        header.append(f' "frame": {json.dumps(frame.name)}')
        if frame.name == "normalized" and frame.from_colmap is not None:
            header.append(f' "from_colmap": {json.dumps(frame.from_colmap.tolist())}')
    entries = [
        {
            "name": camera.name,
            "width": camera.width,
            "height": camera.height,
            "fx": float(camera.K[0, 0]),
            "fy": float(camera.K[1, 1]),
            "cx": float(camera.K[0, 2]),
            "cy": float(camera.K[1, 2]),
            "world_to_camera": camera.world_to_camera.tolist(),
        }
        for camera in cameras
    ]
    body = ",\n".join(f"  {json.dumps(entry)}" for entry in entries)
    text = "{\n" + "".join(line + ",\n" for line in header) + f' "cameras": [\n{body}\n ]\n}}\n'
    write_text_atomically(path, text)


def _number(where: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CameraFileError(f"{where}: expected a finite number, got {value!r}")
    if abs(value) > _FLOAT32_MAX:
        raise CameraFileError(f"{where}: {value!r} is beyond float32's range (the renderer's)")
    if positive and not value > 0:
        raise CameraFileError(f"{where}: expected a positive number of pixels, got {value!r}")
    return float(value)


def _size(where: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CameraFileError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _matrix(where: str, value, rows: int) -> Tensor:
    if (
        not isinstance(value, list)
        or len(value) != rows
        or any(not isinstance(r, list) or len(r) != 4 for r in value)
    ):
        raise CameraFileError(f"{where}: expected a {rows}x4 matrix (a list of {rows} rows of 4 numbers)")
    return torch.tensor([[_number(where, v) for v in row] for row in value], dtype=torch.float64)


def _rigid(where: str, value) -> Tensor:
    matrix = _matrix(where, value, 4)
    if not torch.equal(matrix[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
        raise CameraFileError(f"{where}: the last row must be [0, 0, 0, 1], got {matrix[3].tolist()}")
    rotation = matrix[:3, :3]
    error = float((rotation @ rotation.T - torch.eye(3, dtype=torch.float64)).abs().max())
    determinant = float(torch.linalg.det(rotation))
    if error > RIGID_TOLERANCE or abs(determinant - 1.0) > RIGID_TOLERANCE:
        raise CameraFileError(
            f"{where}: not a rigid transform: the 3x3 part must be a rotation (orthonormal, determinant +1), "
            f"but |R Rᵀ - I| = {error:.3g} and det R = {determinant:.6g}"
        )
    return matrix


def _camera(path: str, index: int, entry) -> Camera:
    where = f"{path}: cameras[{index}]"
    if not isinstance(entry, dict):
        raise CameraFileError(f"{where}: expected an object, got {type(entry).__name__}")
    known = {"name", "width", "height", "fx", "fy", "cx", "cy", "world_to_camera", "camera_to_world"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise CameraFileError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(known))})")
    for field in ("width", "height", "fx", "fy"):
        if field not in entry:
            raise CameraFileError(f"{where}: missing field {field!r}")
    width, height = _size(f"{where}.width", entry["width"]), _size(f"{where}.height", entry["height"])
    K = torch.eye(3, dtype=torch.float64)
    K[0, 0] = _number(f"{where}.fx", entry["fx"], positive=True)
    K[1, 1] = _number(f"{where}.fy", entry["fy"], positive=True)
    K[0, 2] = _number(f"{where}.cx", entry.get("cx", width / 2.0))
    K[1, 2] = _number(f"{where}.cy", entry.get("cy", height / 2.0))
    poses = [key for key in ("world_to_camera", "camera_to_world") if key in entry]
    if len(poses) != 1:
        raise CameraFileError(f"{where}: expected exactly one of 'world_to_camera' and 'camera_to_world'")
    matrix = _rigid(f"{where}.{poses[0]}", entry[poses[0]])
    world_to_camera = matrix if poses[0] == "world_to_camera" else rigid_inverse(matrix.double())
    name = entry.get("name", f"frame_{index:05d}")
    if not isinstance(name, str) or not name.strip():
        raise CameraFileError(f"{where}.name: expected a non-empty string, got {name!r}")
    return Camera(name, world_to_camera, K, width, height)


def _check_json_limits(path: str, text: str) -> None:
    """CameraFileError for a document deeper or with longer numbers than a camera file has, before
    parsing (Python's parser recurses per level and converts numbers of any length)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise CameraFileError(
                    f"{path}: nested more than {MAX_JSON_DEPTH} levels deep at character {match.start()} (a "
                    "camera file has 4)"
                )
        elif token in "]}":
            depth -= 1
        elif token[0] != '"' and len(token) > MAX_JSON_NUMBER_CHARACTERS:
            raise CameraFileError(
                f"{path}: a number of {len(token)} characters at character {match.start()} (at most "
                f"{MAX_JSON_NUMBER_CHARACTERS})"
            )


def read_cameras_json(path: PathLike) -> CameraFile:
    """Read and check a camera file (format in the module docstring); CameraFileError names the field."""
    path = os.fspath(path)
    problem = input_file_problem(path, MAX_CAMERA_FILE_BYTES)
    if problem is not None:
        raise CameraFileError(f"{path}: cannot read the camera file: {problem}")
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        _check_json_limits(path, text)
        document = json.loads(text)
    except OSError as error:
        raise CameraFileError(f"{path}: cannot read the camera file: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CameraFileError(f"{path}: not a JSON file: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("cameras"), list):
        raise CameraFileError(f"{path}: expected an object with a list 'cameras'")
    if not document["cameras"]:
        raise CameraFileError(f"{path}: 'cameras' is empty")
    cameras = [_camera(path, index, entry) for index, entry in enumerate(document["cameras"])]
    names = [camera.name for camera in cameras]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CameraFileError(
            f"{path}: camera name {duplicates[0]!r} is used more than once (names name the output files)"
        )
    frame = None
    if "frame" in document:
        if document["frame"] not in FRAME_NAMES:
            raise CameraFileError(
                f"{path}: frame: expected one of {', '.join(FRAME_NAMES)}, got {document['frame']!r}"
            )
        if document["frame"] == "colmap":
            frame = WorldFrame.colmap()
        else:
            from_colmap = None
            if "from_colmap" in document:
                from_colmap = _matrix(f"{path}: from_colmap", document["from_colmap"], 4)
                try:
                    split_similarity(from_colmap)
                except ValueError as error:
                    raise CameraFileError(f"{path}: from_colmap: {error}") from None
            frame = WorldFrame.normalized(from_colmap)
    return CameraFile(cameras, frame)
