"""Helpers of the bad-input tests (tests/test_bad_*.py): the CLI's contract for a bad input, a bound on
time, snapshots of what is on disk, and writers of valid files from their specifications (not ours)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gsplat_py.cli import main as cli_main

# Generated cases: the same examples on every run (no flaky failures), no example database left behind.
GENERATED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A bound on one bad input's handling: generous (a loaded 2-core machine), but a hang cannot pass it.
TIME_LIMIT_S = 120


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S) -> Iterator[None]:
    """Fails the test (TimeoutError) if the block runs longer than ``seconds`` (a hang, not a slow run)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fresh_folder(parent: Path) -> Path:
    """A new empty folder under ``parent`` (one per generated example of a test)."""
    return Path(tempfile.mkdtemp(dir=parent))


def damaged(data: bytes, position: float, bit: int, cut: bool) -> bytes:
    """``data`` cut at ``position`` (a fraction of its length), or with bit ``bit`` of that byte flipped."""
    index = int(position * len(data))
    if cut:
        return data[:index]
    flipped = bytearray(data)
    flipped[index] ^= 1 << bit
    return bytes(flipped)


# The arguments of `damaged`, for hypothesis.
DAMAGE = dict(position=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7), cut=st.booleans())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, modification time) of every file under ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def cli_error(capsys, *args) -> str:
    """Runs ``gsplat-py ARGS`` in this process (within the time limit) and returns its error line, after
    checking the contract for a bad input: exit status 1, one line on stderr, no traceback, and an error
    that a check raised (not the catch-all for unexpected ones)."""
    capsys.readouterr()
    with time_limit():
        status = cli_main([str(arg) for arg in args])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("gsplat-py: warning:")]
    assert status == 1, (args, status, err)
    assert len(errors) == 1 and errors[0].startswith("gsplat-py: error: "), (args, err)
    assert "Traceback" not in err and "error: unexpected" not in err, (args, err)
    return errors[0]


def assert_names(message: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# --------------------------------------------------------------------------------------------------------
# Writers from the formats' specifications


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data (PNG specification, section 5.3)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, rows: bytes | None = None) -> bytes:
    """An 8-bit RGB PNG; ``rows`` (filter byte + 3 * width bytes per row) default to black, and a header
    can claim a size its data does not have."""
    if rows is None:
        rows = (b"\0" + b"\0" * 3 * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def noise_pixels(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def noise_png(width: int, height: int, seed: int) -> bytes:
    pixels = noise_pixels(width, height, seed)
    return png_bytes(width, height, b"".join(b"\0" + row.tobytes() for row in pixels))


def rotation_to_qvec(rotation: np.ndarray) -> list[float]:
    """The unit quaternion (w, x, y, z) of a rotation matrix with trace > -1."""
    w = math.sqrt(max(0.0, 1.0 + np.trace(rotation))) / 2.0
    x = (rotation[2, 1] - rotation[1, 2]) / (4.0 * w)
    y = (rotation[0, 2] - rotation[2, 0]) / (4.0 * w)
    z = (rotation[1, 0] - rotation[0, 1]) / (4.0 * w)
    return [float(w), float(x), float(y), float(z)]


def ring_poses(count: int, radius: float = 4.0) -> list[tuple[list[float], list[float]]]:
    """(qvec, tvec) world-to-camera poses of cameras on a horizontal ring, looking at the origin."""
    poses = []
    for i in range(count):
        angle = 2.0 * math.pi * i / count + 0.3
        centre = radius * np.array([math.cos(angle), math.sin(angle), 0.2])
        forward = -centre / np.linalg.norm(centre)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        poses.append((rotation_to_qvec(rotation), (-rotation @ centre).tolist()))
    return poses


# A COLMAP model as plain records: cameras (id, model name, width, height, params), images (id, qvec, tvec,
# camera id, name) without keypoints, points (id, xyz, rgb, error) without tracks.
CAMERA_MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "OPENCV": 4}


def colmap_records(count: int = 4, width: int = 32, height: int = 24) -> dict:
    points = np.random.default_rng(1).uniform(-1.0, 1.0, (20, 3)).tolist()
    return {
        "cameras": [(1, "PINHOLE", width, height, [30.0, 31.0, width / 2, height / 2])],
        "images": [(i + 1, q, t, 1, f"view_{i}.png") for i, (q, t) in enumerate(ring_poses(count))],
        "points": [(i + 1, xyz, (200, 100, 50), 0.5) for i, xyz in enumerate(points)],
    }


def colmap_binary(records: dict) -> dict[str, bytes]:
    """cameras.bin, images.bin, points3D.bin (COLMAP's src/colmap/scene/reconstruction_io.cc layout)."""
    cameras = struct.pack("<Q", len(records["cameras"]))
    for camera_id, model, width, height, params in records["cameras"]:
        cameras += struct.pack("<iiQQ", camera_id, CAMERA_MODEL_IDS[model], width, height)
        cameras += struct.pack(f"<{len(params)}d", *params)
    images = struct.pack("<Q", len(records["images"]))
    for image_id, qvec, tvec, camera_id, name in records["images"]:
        images += struct.pack("<i4d3di", image_id, *qvec, *tvec, camera_id)
        images += name.encode("utf-8") + b"\0" + struct.pack("<Q", 0)
    points = struct.pack("<Q", len(records["points"]))
    for point_id, xyz, rgb, error in records["points"]:
        points += struct.pack("<Q3d3Bd", point_id, *xyz, *rgb, error) + struct.pack("<Q", 0)
    return {"cameras.bin": cameras, "images.bin": images, "points3D.bin": points}


def colmap_text(records: dict) -> dict[str, bytes]:
    """cameras.txt, images.txt, points3D.txt (one line per camera and point, two per image)."""
    cameras = "".join(
        f"{camera_id} {model} {width} {height} {' '.join(map(repr, params))}\n"
        for camera_id, model, width, height, params in records["cameras"]
    )
    images = "".join(
        f"{image_id} {' '.join(map(repr, [*qvec, *tvec]))} {camera_id} {name}\n\n"
        for image_id, qvec, tvec, camera_id, name in records["images"]
    )
    points = "".join(
        f"{point_id} {' '.join(map(repr, xyz))} {' '.join(map(str, rgb))} {error!r}\n"
        for point_id, xyz, rgb, error in records["points"]
    )
    return {"cameras.txt": cameras.encode(), "images.txt": images.encode(), "points3D.txt": points.encode()}


def write_colmap_scene(root: Path, records: dict | None = None, binary: bool = True) -> Path:
    """A scene folder: sparse/0/ with the model, images/ with a noise PNG per image of its camera's size."""
    records = records if records is not None else colmap_records()
    model = root / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    for name, data in (colmap_binary(records) if binary else colmap_text(records)).items():
        (model / name).write_bytes(data)
    sizes = {camera[0]: (camera[2], camera[3]) for camera in records["cameras"]}
    (root / "images").mkdir(exist_ok=True)
    for seed, (_, _, _, camera_id, name) in enumerate(records["images"]):
        width, height = sizes.get(camera_id, (32, 24))
        if width > 0 and height > 0:
            (root / "images" / name).write_bytes(noise_png(width, height, seed))
    return root


def ply_bytes(columns: dict[str, np.ndarray], count: int | None = None, text: bool = False) -> bytes:
    """A PLY with one 'vertex' element of float properties (the PLY specification: header lines, then the
    rows, little-endian binary or one line each); ``count`` is what the header claims (default: the
    rows)."""
    names = list(columns)
    rows = np.stack([np.asarray(columns[name], dtype=np.float32) for name in names], axis=1)
    fmt = "ascii" if text else "binary_little_endian"
    header = ["ply", f"format {fmt} 1.0", f"element vertex {len(rows) if count is None else count}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    if text:
        return head + "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()
    return head + rows.astype("<f4").tobytes()


def inria_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The columns of n degree-0 Gaussians in the Inria layout, with valid values."""
    rng = np.random.default_rng(seed)
    columns = {name: rng.normal(size=n) for name in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity")}
    columns.update({f"scale_{i}": rng.uniform(-5.0, -2.0, n) for i in range(3)})
    columns.update({f"rot_{i}": rng.normal(size=n) + (2.0 if i == 0 else 0.0) for i in range(4)})
    return columns


def fifo(path: Path) -> Path:
    """A named pipe: reading it never ends unless a reader checks for a regular file first."""
    os.mkfifo(path)
    return path
