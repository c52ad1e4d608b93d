"""Tests of gsplat_py.io.colmap: reading the bundled COLMAP model, round trips through both formats,
errors."""

import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from gsplat_py.io.colmap import (
    CAMERA_MODELS,
    Camera,
    ColmapError,
    ColmapModel,
    Image,
    Points3D,
    qvec_to_rotmat,
    read_model,
    write_model,
)

REPO = Path(__file__).resolve().parents[1]
SNOWMIKU = REPO / "data" / "snowmiku"
SPARSE = SNOWMIKU / "sparse" / "0"
MODEL_FILES = ("cameras", "images", "points3D")


@pytest.fixture(scope="module")
def real_model() -> ColmapModel:
    return read_model(SPARSE)


def copy_bin_model(folder: Path) -> Path:
    """A writable copy of the bundled model's three .bin files (and nothing else) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        (folder / f"{name}.bin").write_bytes((SPARSE / f"{name}.bin").read_bytes())
    return folder


def assert_models_equal(a: ColmapModel, b: ColmapModel) -> None:
    """Exact equality of every field, dtype and the order of cameras and images."""

    def same(x, y):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)

    assert list(a.cameras) == list(b.cameras)
    for ca, cb in zip(a.cameras.values(), b.cameras.values()):
        assert (ca.id, ca.model, ca.width, ca.height) == (cb.id, cb.model, cb.width, cb.height)
        same(ca.params, cb.params)
    assert list(a.images) == list(b.images)
    for ia, ib in zip(a.images.values(), b.images.values()):
        assert (ia.id, ia.camera_id, ia.name) == (ib.id, ib.camera_id, ib.name)
        for field in ("qvec", "tvec", "xys", "point3D_ids"):
            same(getattr(ia, field), getattr(ib, field))
    for field in ("xyz", "rgb", "error", "ids", "track_offsets", "track_image_ids", "track_point2D_idxs"):
        same(getattr(a.points, field), getattr(b.points, field))


def raises(match: str):
    return pytest.raises(ColmapError, match=match)


# --------------------------------------------------------------------------------------------------------
# The bundled model


def test_real_model_matches_the_dataset(real_model):
    assert len(real_model.cameras) == 1
    camera = real_model.cameras[1]
    assert (camera.id, camera.model, camera.width, camera.height) == (1, "OPENCV", 1008, 756)
    assert camera.params.dtype == np.float64 and camera.params.shape == (8,)
    assert list(camera.distortion) == ["k1", "k2", "p1", "p2"]
    fx, fy, cx, cy = camera.params[:4]
    np.testing.assert_array_equal(camera.K(), [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])

    assert len(real_model.images) == 97
    assert all(image_id == image.id and image.camera_id == 1 for image_id, image in real_model.images.items())
    assert sorted(image.name for image in real_model.images.values()) == sorted(
        os.listdir(SNOWMIKU / "images_4")
    )
    for image in real_model.images.values():
        assert image.xys.dtype == np.float64 and image.xys.shape == (len(image.point3D_ids), 2)
        assert image.point3D_ids.dtype == np.int64 and len(image.point3D_ids) > 0

    points = real_model.points
    assert len(points) == 12_439
    assert points.xyz.shape == (12_439, 3) and points.xyz.dtype == np.float64
    assert points.rgb.shape == (12_439, 3) and points.rgb.dtype == np.uint8
    assert points.error.shape == (12_439,) and points.error.dtype == np.float64
    assert points.ids.shape == (12_439,) and points.ids.dtype == np.int64
    assert len(np.unique(points.ids)) == 12_439
    assert points.track_offsets.shape == (12_439 + 1,) and points.track_offsets[0] == 0
    assert np.all(np.diff(points.track_offsets) >= 2)  # a triangulated point is seen at least twice


def test_real_model_rotations_are_orthonormal(real_model):
    for image in real_model.images.values():
        R = image.rotation()
        np.testing.assert_allclose(R @ R.T, np.eye(3), rtol=0, atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
        matrix = image.world_to_camera()
        np.testing.assert_array_equal(matrix[:3, :3], R)
        np.testing.assert_array_equal(matrix[:3, 3], image.tvec)
        np.testing.assert_array_equal(matrix[3], [0, 0, 0, 1])


def test_real_model_tracks_match_the_image_observations(real_model):
    points = real_model.points
    point_of_track_row = np.repeat(np.arange(len(points)), np.diff(points.track_offsets))
    for image in real_model.images.values():
        rows = points.track_image_ids == image.id
        # Every observation in a track is the keypoint of that image that refers back to the point...
        np.testing.assert_array_equal(
            image.point3D_ids[points.track_point2D_idxs[rows]], points.ids[point_of_track_row[rows]]
        )
        # ...and every keypoint with a 3D point is in that point's track.
        assert np.count_nonzero(image.point3D_ids != -1) == np.count_nonzero(rows)
    image_ids, point2D_idxs = points.track(0)
    assert len(image_ids) == points.track_offsets[1] and point2D_idxs.dtype == np.int32


def test_real_model_reprojection_errors_match_the_stored_ones(real_model):
    """Projecting every point into the images that observe it (x_cam = R x_world + t, then COLMAP's OPENCV
    model) and averaging the distances to the keypoints gives back each point's stored error: the poses
    (qvec order w, x, y, z and direction), intrinsics, keypoints and tracks are all read right."""
    camera = real_model.cameras[1]
    k1, k2, p1, p2 = camera.distortion.values()
    points = real_model.points
    row_of_id = {point_id: row for row, point_id in enumerate(points.ids.tolist())}
    error_sums, counts = np.zeros(len(points)), np.zeros(len(points))
    for image in real_model.images.values():
        observed = image.point3D_ids != -1
        rows = np.array([row_of_id[point_id] for point_id in image.point3D_ids[observed].tolist()])
        world = np.concatenate([points.xyz[rows], np.ones((len(rows), 1))], axis=1)
        cam = (world @ image.world_to_camera().T)[:, :3]
        assert np.all(cam[:, 2] > 0)
        x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        pixels = np.stack([camera.fx * xd + camera.cx, camera.fy * yd + camera.cy], axis=1)
        np.add.at(error_sums, rows, np.linalg.norm(pixels - image.xys[observed], axis=1))
        np.add.at(counts, rows, 1)
    np.testing.assert_array_equal(counts, np.diff(points.track_offsets))
    np.testing.assert_allclose(error_sums / counts, points.error, rtol=0, atol=1e-9)


def test_reading_the_real_model_is_fast():
    start = time.perf_counter()
    read_model(SPARSE)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------------------------------------
# Round trips


def test_bin_rewrite_is_byte_identical(real_model, tmp_path):
    write_model(real_model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["cameras.bin", "images.bin", "points3D.bin"]
    for name in MODEL_FILES:
        assert (tmp_path / f"{name}.bin").read_bytes() == (SPARSE / f"{name}.bin").read_bytes()
    assert_models_equal(read_model(tmp_path), real_model)


def test_bin_to_txt_and_back(real_model, tmp_path):
    write_model(real_model, tmp_path / "txt", ext=".txt")
    assert sorted(os.listdir(tmp_path / "txt")) == ["cameras.txt", "images.txt", "points3D.txt"]
    from_txt = read_model(tmp_path / "txt")
    assert_models_equal(from_txt, real_model)  # floats are written with repr: exact
    write_model(from_txt, tmp_path / "bin")
    for name in MODEL_FILES:
        assert (tmp_path / "bin" / f"{name}.bin").read_bytes() == (SPARSE / f"{name}.bin").read_bytes()


def test_read_prefers_bin_and_ext_selects_the_format(tmp_path):
    model, other = synthetic_model(), synthetic_model()
    other.cameras[10].params = other.cameras[10].params * 2
    write_model(model, tmp_path, ext=".bin")
    write_model(other, tmp_path, ext=".txt")
    assert_models_equal(read_model(tmp_path), model)
    assert_models_equal(read_model(tmp_path, ext=".bin"), model)
    assert_models_equal(read_model(tmp_path, ext=".txt"), other)
    with pytest.raises(ValueError, match="ext"):
        read_model(tmp_path, ext=".json")


def synthetic_model() -> ColmapModel:
    """One camera of every model, images with 0..n keypoints (awkward names), points with 0..n-long tracks."""
    rng = np.random.default_rng(7)
    cameras = {}
    for model in CAMERA_MODELS:
        camera_id = 10 + model.id
        params = rng.normal(size=model.num_params) * 0.1
        focal = [i for i, name in enumerate(model.param_names) if name in ("f", "fx", "fy")]
        params[focal] = 500.0 + rng.uniform(size=len(focal))  # the reader refuses focal lengths <= 0
        cameras[camera_id] = Camera(camera_id, model.name, 640 + model.id, 480 - model.id, params)
    names = ["a.png", "sub dir/with space.jpg", "ünïcode/名前.png", "x"]
    images = {}
    for i, camera_id in enumerate(cameras):
        num_points = i % 4 * 3
        qvec = rng.normal(size=4)
        images[100 - i] = Image(
            id=100 - i,
            qvec=qvec / np.linalg.norm(qvec),
            tvec=rng.normal(size=3) * 10,
            camera_id=camera_id,
            name=f"{i}/{names[i % len(names)]}",
            xys=rng.uniform(0, 640, size=(num_points, 2)),
            point3D_ids=np.where(rng.random(num_points) < 0.3, -1, rng.integers(0, 2**40, num_points)),
        )
    num_points = 9
    track_lengths = np.arange(num_points) % 4
    num_track = int(track_lengths.sum())
    points = Points3D(
        xyz=rng.normal(size=(num_points, 3)) * 1e3,
        rgb=rng.integers(0, 256, size=(num_points, 3), dtype=np.uint8),
        error=rng.random(num_points),
        ids=np.arange(num_points, dtype=np.int64) * 1_000_003 + 5,
        track_offsets=np.concatenate([[0], np.cumsum(track_lengths)]).astype(np.int64),
        track_image_ids=rng.integers(0, 2**31, num_track).astype(np.int32),
        track_point2D_idxs=rng.integers(0, 2**31, num_track).astype(np.int32),
    )
    return ColmapModel(cameras, images, points)


@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_every_camera_model_round_trips(tmp_path, ext):
    model = synthetic_model()
    write_model(model, tmp_path, ext=ext)
    back = read_model(tmp_path)
    assert_models_equal(back, model)
    assert [camera.model for camera in back.cameras.values()] == [m.name for m in CAMERA_MODELS]
    write_model(back, tmp_path / "again", ext=ext)
    for name in MODEL_FILES:
        assert (tmp_path / "again" / f"{name}{ext}").read_bytes() == (tmp_path / f"{name}{ext}").read_bytes()


def test_empty_model_round_trips(tmp_path):
    empty = Points3D(
        xyz=np.zeros((0, 3)),
        rgb=np.zeros((0, 3), np.uint8),
        error=np.zeros(0),
        ids=np.zeros(0, np.int64),
        track_offsets=np.zeros(1, np.int64),
        track_image_ids=np.zeros(0, np.int32),
        track_point2D_idxs=np.zeros(0, np.int32),
    )
    model = ColmapModel({}, {}, empty)
    for ext in (".bin", ".txt"):
        write_model(model, tmp_path / ext[1:], ext=ext)
        assert_models_equal(read_model(tmp_path / ext[1:]), model)


# --------------------------------------------------------------------------------------------------------
# Cameras and poses


@pytest.mark.parametrize("model", CAMERA_MODELS, ids=lambda m: m.name)
def test_camera_accessors(model):
    params = np.arange(1.0, model.num_params + 1)
    camera = Camera(1, model.name, 100, 80, params)
    assert camera.model_info is model
    shared_focal = model.param_names[0] == "f"
    assert camera.fx == 1.0
    assert camera.fy == (1.0 if shared_focal else 2.0)
    assert (camera.cx, camera.cy) == ((2.0, 3.0) if shared_focal else (3.0, 4.0))
    np.testing.assert_array_equal(
        camera.K(), [[camera.fx, 0, camera.cx], [0, camera.fy, camera.cy], [0, 0, 1]]
    )
    num_pinhole = 3 if shared_focal else 4
    assert camera.distortion == dict(zip(model.param_names[num_pinhole:], params[num_pinhole:]))
    for name, value in zip(model.param_names, params):
        assert camera.param(name) == value
    with pytest.raises(KeyError, match="omega2"):
        camera.param("omega2")


def test_camera_model_table():
    counts = {m.name: (m.id, m.num_params) for m in CAMERA_MODELS}
    assert counts == {
        "SIMPLE_PINHOLE": (0, 3),
        "PINHOLE": (1, 4),
        "SIMPLE_RADIAL": (2, 4),
        "RADIAL": (3, 5),
        "OPENCV": (4, 8),
        "OPENCV_FISHEYE": (5, 8),
        "FULL_OPENCV": (6, 12),
        "FOV": (7, 5),
        "SIMPLE_RADIAL_FISHEYE": (8, 4),
        "RADIAL_FISHEYE": (9, 5),
        "THIN_PRISM_FISHEYE": (10, 12),
        "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16),
    }
    with raises("unknown camera model 'DOES_NOT_EXIST'"):
        Camera(1, "DOES_NOT_EXIST", 1, 1, np.zeros(3)).K()


def test_qvec_to_rotmat():
    np.testing.assert_array_equal(qvec_to_rotmat([1.0, 0, 0, 0]), np.eye(3))
    half = np.sqrt(0.5)
    # 90 degrees about +z takes +x to +y; the quaternion is normalised first.
    expected = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    np.testing.assert_allclose(qvec_to_rotmat([3 * half, 0, 0, 3 * half]), expected, atol=1e-15)
    # Against Rodrigues' formula for a random axis and angle.
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    angle = 2.1
    qvec = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    expected = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    np.testing.assert_allclose(qvec_to_rotmat(qvec), expected, atol=1e-15)


# --------------------------------------------------------------------------------------------------------
# Errors


def test_missing_folder(tmp_path):
    with raises(f"^{tmp_path / 'nope'}: no such folder$"):
        read_model(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with raises("file: not a folder$"):
        read_model(tmp_path / "file")


def test_missing_files(tmp_path):
    folder = copy_bin_model(tmp_path)
    (folder / "images.bin").unlink()
    (folder / "images.txt").write_text("")  # a partial text model does not make up for it
    expected = (
        f"^{folder}: incomplete COLMAP model: expected cameras.bin, images.bin, points3D.bin or "
        f"cameras.txt, images.txt, points3D.txt; found cameras.bin, points3D.bin, images.txt$"
    )
    with raises(expected):
        read_model(folder)
    with raises("expected cameras.txt, images.txt, points3D.txt; found images.txt$"):
        read_model(folder, ext=".txt")
    (tmp_path / "empty").mkdir()
    with raises("found none of them$"):
        read_model(tmp_path / "empty")


@pytest.mark.parametrize("name", MODEL_FILES)
def test_truncated_bin_files(tmp_path, name):
    folder = copy_bin_model(tmp_path)
    data = (SPARSE / f"{name}.bin").read_bytes()
    for size in sorted({0, 1, 7, 8, 9, 20, 40, len(data) // 3, len(data) // 2, len(data) - 9, len(data) - 1}):
        (folder / f"{name}.bin").write_bytes(data[:size])
        with raises(f"^{name}.bin: truncated"):
            read_model(folder)


def image_record_size(image: Image) -> int:
    return 64 + len(image.name.encode()) + 1 + 8 + 24 * len(image.point3D_ids)


def test_truncation_messages(real_model, tmp_path):
    folder = copy_bin_model(tmp_path)

    def cut(name, size):
        (folder / name).write_bytes((SPARSE / name).read_bytes()[:size])

    cut("cameras.bin", 90)
    with raises(r"^cameras.bin: truncated at camera 1 of 1 \(expected 6 more bytes\)$"):
        read_model(folder)
    cut("cameras.bin", 96)

    images = list(real_model.images.values())
    end_of_image_12 = 8 + sum(image_record_size(image) for image in images[:12])
    cut("images.bin", end_of_image_12 - 8)
    with raises(r"^images.bin: truncated at image 12 of 97 \(expected 8 more bytes\)$"):
        read_model(folder)
    cut("images.bin", 8 + sum(image_record_size(image) for image in images[:11]) + 64 + 3)
    with raises(r"^images.bin: truncated at image 12 of 97 \(the image name is not terminated\)$"):
        read_model(folder)
    cut("images.bin", 10**9)

    cut("points3D.bin", len((SPARSE / "points3D.bin").read_bytes()) - 1)
    with raises(r"^points3D.bin: truncated at point 12439 of 12439 \(expected 1 more byte\)$"):
        read_model(folder)
    cut("points3D.bin", 5)
    with raises(r"^points3D.bin: truncated at the points count \(expected 3 more bytes\)$"):
        read_model(folder)
    cut("points3D.bin", 100)
    with raises(r"^points3D.bin: truncated: 12439 points need at least 634389 bytes, 92 follow the count$"):
        read_model(folder)


def test_trailing_bytes(tmp_path):
    folder = copy_bin_model(tmp_path)
    (folder / "points3D.bin").write_bytes((SPARSE / "points3D.bin").read_bytes() + b"\0" * 3)
    with raises("^points3D.bin: 3 unexpected bytes after the last point$"):
        read_model(folder)


def test_unknown_camera_model_id(tmp_path):
    folder = copy_bin_model(tmp_path)
    data = bytearray((SPARSE / "cameras.bin").read_bytes())
    data[12:16] = struct.pack("<i", 99)  # after the count (8 bytes) and the camera id (4 bytes)
    (folder / "cameras.bin").write_bytes(bytes(data))
    with raises("^cameras.bin: camera 1 has unknown camera model id 99$"):
        read_model(folder)


def write_text_model(folder: Path) -> dict:
    """Writes the synthetic model as text into ``folder``; returns each file's lines (to edit, write back)."""
    write_model(synthetic_model(), folder, ext=".txt")
    return {name: (folder / f"{name}.txt").read_text().split("\n") for name in MODEL_FILES}


def replace_line(path: Path, lines: list, index: int, new_line: str) -> None:
    path.write_text("\n".join(lines[:index] + [new_line] + lines[index + 1 :]))


def test_text_camera_errors(tmp_path):
    lines = write_text_model(tmp_path)["cameras"]
    cameras_txt = tmp_path / "cameras.txt"
    i = next(i for i, line in enumerate(lines) if " OPENCV " in line)
    assert lines[i].startswith("14 OPENCV 644 476 ")

    replace_line(cameras_txt, lines, i, lines[i].replace("OPENCV", "OPENCV2"))
    with raises(f"^cameras.txt line {i + 1}: camera 14 has unknown camera model 'OPENCV2'$"):
        read_model(tmp_path)

    replace_line(cameras_txt, lines, i, lines[i].rsplit(" ", 1)[0])
    expected = r"camera 14 \(OPENCV\) has 7 params, expected 8 \(fx fy cx cy k1 k2 p1 p2\)$"
    with raises(f"^cameras.txt line {i + 1}: {expected}"):
        read_model(tmp_path)

    replace_line(cameras_txt, lines, i, lines[i].replace("644", "wide"))
    with raises(f"^cameras.txt line {i + 1}: cannot parse the camera "):
        read_model(tmp_path)

    cameras_txt.write_text("\n".join(lines + [lines[i]]))
    with raises(f"^cameras.txt line {len(lines) + 1}: duplicate camera id 14$"):
        read_model(tmp_path)


def test_text_image_errors(tmp_path):
    lines = write_text_model(tmp_path)["images"]
    images_txt = tmp_path / "images.txt"
    assert lines[6].startswith("99 ") and len(lines[7].split()) == 9  # the second image, three 2D points

    replace_line(images_txt, lines, 7, lines[7] + " 1.5")
    with raises(
        r"^images.txt line 8: cannot parse the 2D points of image 99 \(10 values, not \(X, Y, POINT3D_"
    ):
        read_model(tmp_path)
    replace_line(images_txt, lines, 7, lines[7].replace(lines[7].split()[2], "0.5"))
    with raises("^images.txt line 8: cannot parse the 2D points of image 99 "):
        read_model(tmp_path)
    replace_line(images_txt, lines, 6, lines[6].split(" ", 1)[1])
    with raises("^images.txt line 7: cannot parse the image "):
        read_model(tmp_path)

    images_txt.write_text("\n".join(lines + lines[6:8]))
    with raises(f"^images.txt line {len(lines) + 1}: duplicate image id 99$"):
        read_model(tmp_path)


def test_text_point_errors(tmp_path):
    lines = write_text_model(tmp_path)["points3D"]
    points_txt = tmp_path / "points3D.txt"
    fields = lines[4].split()

    replace_line(points_txt, lines, 4, lines[4].replace(" ", " x ", 1))
    with raises("^points3D.txt line 5: cannot parse the point "):
        read_model(tmp_path)
    replace_line(points_txt, lines, 4, " ".join(fields[:4] + ["256"] + fields[5:]))
    with raises(
        r"^points3D.txt line 5: cannot parse the point \(the color .* is not three values in 0\.\.255\)$"
    ):
        read_model(tmp_path)
    replace_line(points_txt, lines, 4, lines[4] + " 7")
    with raises(
        r"^points3D.txt line 5: cannot parse the point \(the track is not \(IMAGE_ID, POINT2D_IDX\) pairs"
    ):
        read_model(tmp_path)
    points_txt.write_bytes(b"# \xff\n")
    with raises("^points3D.txt: not UTF-8 text "):
        read_model(tmp_path)


def test_image_with_unknown_camera(tmp_path):
    first = next(iter(read_model(SPARSE).images.values()))
    folder = copy_bin_model(tmp_path / "bin")
    data = bytearray((SPARSE / "cameras.bin").read_bytes())
    data[8:12] = struct.pack("<i", 2)  # the only camera is now camera 2
    (folder / "cameras.bin").write_bytes(bytes(data))
    with raises(
        rf"^images.bin: image {first.id} \({first.name}\) refers to camera 1, which is not in cameras.bin$"
    ):
        read_model(folder)

    cameras = write_text_model(tmp_path / "txt")["cameras"]
    assert cameras[3].startswith("10 SIMPLE_PINHOLE ")
    replace_line(tmp_path / "txt" / "cameras.txt", cameras, 3, "9" + cameras[3][2:])
    with raises(r"^images.txt: image 100 \(0/a.png\) refers to camera 10, which is not in cameras.txt$"):
        read_model(tmp_path / "txt")


def test_rigs_and_frames_are_ignored(real_model, tmp_path):
    folder = copy_bin_model(tmp_path)
    for name in ("rigs.bin", "frames.bin", "rigs.txt", "frames.txt", "project.ini"):
        (folder / name).write_bytes(b"\xff garbage \x00" * 3)
    assert_models_equal(read_model(folder), real_model)


# --------------------------------------------------------------------------------------------------------
# Writing


def test_failed_write_leaves_the_folder_as_it_was(real_model, tmp_path):
    folder = copy_bin_model(tmp_path)
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    model = read_model(folder)

    model.cameras[1].model = "NOPE"
    with raises("^camera 1: unknown camera model 'NOPE'$"):
        write_model(model, folder)
    model.cameras[1].model = "PINHOLE"
    with raises(r"^camera 1 \(PINHOLE\) has 8 params, expected 4$"):
        write_model(model, folder)
    model.cameras[1].model = "OPENCV"

    image = next(iter(model.images.values()))
    image.camera_id = 5
    with raises(rf"^image {image.id} \({image.name}\) refers to camera 5, which is not in the model$"):
        write_model(model, folder, ext=".txt")
    image.camera_id = 1
    for bad_name in ("two\nlines", "nul\0", " padded"):
        image.name = bad_name
        with raises(rf"^image {image.id}: the name .* cannot be stored"):
            write_model(model, folder)

    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before


def test_write_replaces_an_existing_model(real_model, tmp_path):
    write_model(synthetic_model(), tmp_path)
    write_model(real_model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["cameras.bin", "images.bin", "points3D.bin"]  # no temporary files
    assert_models_equal(read_model(tmp_path), real_model)
