"""Bad camera files (`render --cameras`), generated here: nesting 100,000 deep, numbers of 5,000 digits,
values beyond float32, text that is not UTF-8, pipes, huge files, truncations and bit flips. Each is a
CameraFileError naming the file (and field), checked before parsing where parsing itself would fail
(Python's JSON parser recurses per level and converts numbers of any length)."""

import json
import os

import numpy as np
import pytest
import torch
from bad_input import (
    DAMAGE,
    GENERATED,
    assert_names,
    cli_error,
    damaged,
    fifo,
    fresh_folder,
    snapshot,
    time_limit,
)
from hypothesis import given

from gsplat_py.io.ply import write_ply
from gsplat_py.model import GaussianSplats
from gsplat_py.tools.camera_paths import MAX_CAMERA_FILE_BYTES, CameraFileError, read_cameras_json

CAMERA = {
    "name": "a",
    "width": 16,
    "height": 12,
    "fx": 20.0,
    "fy": 20.0,
    "world_to_camera": np.eye(4).tolist(),
}
GOOD = json.dumps({"frame": "colmap", "cameras": [CAMERA, {**CAMERA, "name": "b", "cx": 7.5}]})


def camera_file(**changes) -> str:
    return json.dumps({"cameras": [{**CAMERA, **changes}]})


BAD_FILES = {
    "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, ["nested more than 16 levels"]),
    "a 5,000-digit integer": (GOOD.replace('"width": 16', '"width": ' + "1" * 5000, 1), ["5000 characters"]),
    "a 5,000-digit fraction": (GOOD.replace('"fx": 20.0', '"fx": 0.' + "3" * 5000, 1), ["5002 characters"]),
    "an infinite focal length": (camera_file(fx=1e999), ["cameras[0].fx", "finite"]),
    "beyond float32": (camera_file(fy=1e300), ["cameras[0].fy", "float32"]),
    "NaN in the pose": (camera_file(world_to_camera="NaN"), ["cameras[0].world_to_camera"]),
    "zero width": (camera_file(width=0), ["cameras[0].width", "positive integer"]),
    "zero focal length": (camera_file(fx=0), ["cameras[0].fx", "positive"]),
    "not UTF-8": (b"\xff\xfe{", ["not a JSON file"]),
    "not JSON": ("cameras: [a, b]", ["not a JSON file"]),
    "truncated": (GOOD[:-3], ["not a JSON file"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_camera_file_is_an_error_naming_it(tmp_path, case):
    text, fragments = BAD_FILES[case]
    path = tmp_path / "cams.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with time_limit(), pytest.raises(CameraFileError) as info:
        read_cameras_json(path)
    assert_names(str(info.value), str(path), *fragments)


def test_the_good_file_is_read(tmp_path):
    (tmp_path / "cams.json").write_text(GOOD)
    cameras = read_cameras_json(tmp_path / "cams.json").cameras
    assert [camera.name for camera in cameras] == ["a", "b"] and float(cameras[1].K[0, 2]) == 7.5


def test_a_pipe_or_a_huge_file_is_not_read(tmp_path):
    with time_limit(), pytest.raises(CameraFileError, match="not a regular file"):
        read_cameras_json(fifo(tmp_path / "pipe.json"))
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as file:  # sparse: no disk space used
        file.truncate(MAX_CAMERA_FILE_BYTES + 1)
    with time_limit(), pytest.raises(CameraFileError, match="more than the"):
        read_cameras_json(huge)


@GENERATED
@given(**DAMAGE)
def test_a_damaged_file_is_read_or_an_error_naming_it(tmp_path, position, bit, cut):
    path = fresh_folder(tmp_path) / "cams.json"
    path.write_bytes(damaged(GOOD.encode(), position, bit, cut))
    with time_limit():
        try:
            cameras = read_cameras_json(path).cameras
        except CameraFileError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            return
    for camera in cameras:
        assert camera.width >= 1 and camera.height >= 1 and bool(camera.K.float().isfinite().all())


def test_rendering_with_a_bad_camera_file_is_a_one_line_error_that_writes_nothing(tmp_path, capsys):
    splats = GaussianSplats(
        torch.zeros(3, 3), torch.ones(3, 4), torch.full((3, 3), -3.0), torch.zeros(3), torch.zeros(3, 1, 3)
    )
    write_ply(tmp_path / "m.ply", splats)
    (tmp_path / "cams.json").write_text(BAD_FILES["nested 100,000 deep"][0])
    before = snapshot(tmp_path)
    message = cli_error(capsys, "render", "--model", tmp_path / "m.ply", "--cameras", tmp_path / "cams.json")
    assert_names(message, "cams.json", "nested more than 16 levels")
    assert snapshot(tmp_path) == before
    assert not os.path.exists(tmp_path / "m_renders")
