"""Camera paths fitted to training cameras, and the camera JSON format."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from render_helpers import look_at

from gsplat_py.data.world_frame import WorldFrame
from gsplat_py.tools.camera_paths import (
    Camera,
    CameraFileError,
    ellipse_path,
    generate_path,
    interpolated_path,
    read_cameras_json,
    resize_cameras,
    scene_centre,
    spiral_path,
    up_direction,
    write_cameras_json,
)
from gsplat_py.tools.frames import transform_cameras

WIDTH, HEIGHT = 64, 48
K = torch.tensor([[50.0, 0.0, 31.0], [0.0, 52.0, 25.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
# Where the training cameras of these tests look, and their world's up direction (not an axis).
TARGET = np.array([0.7, -1.2, 2.0])
UP = np.array([0.3, 0.2, 0.9]) / np.linalg.norm([0.3, 0.2, 0.9])


def training_cameras(count: int = 12, full_ring: bool = False) -> list[Camera]:
    """An uneven half ring (or a whole ring) around TARGET in the plane perpendicular to UP, at varying
    heights, all looking at TARGET: the fitted centre must be TARGET and the fitted up UP (up to the
    heights' tilt)."""
    side = np.cross(UP, [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    other = np.cross(UP, side)
    cameras = []
    for i in range(count):
        angle = 2.0 * math.pi * i / count if full_ring else math.pi * i / (count - 1)
        centre = (
            TARGET + 3.0 * math.cos(angle) * side + 2.0 * math.sin(angle) * other + (0.8 + 0.1 * (i % 3)) * UP
        )
        camera_to_world = torch.from_numpy(look_at(centre, TARGET, UP))
        cameras.append(
            Camera(f"img_{i:02d}.jpg", torch.linalg.inv(camera_to_world), K.clone(), WIDTH, HEIGHT)
        )
    return cameras


def project(camera: Camera, point: np.ndarray) -> np.ndarray:
    in_camera = camera.world_to_camera[:3, :3] @ torch.from_numpy(point) + camera.world_to_camera[:3, 3]
    assert in_camera[2] > 0  # in front of the camera
    pixel = camera.K @ (in_camera / in_camera[2])
    return pixel[:2].numpy()


def assert_rigid(camera: Camera) -> None:
    rotation = camera.world_to_camera[:3, :3]
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert abs(float(torch.linalg.det(rotation)) - 1.0) < 1e-12
    assert torch.equal(camera.world_to_camera[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))


def test_scene_centre_and_up_of_cameras_looking_at_one_point():
    camera_to_world = torch.stack([camera.camera_to_world() for camera in training_cameras()])
    assert np.allclose(scene_centre(camera_to_world).numpy(), TARGET, atol=1e-9)
    # Each camera's up is UP tilted towards the target; their mean stays within a few degrees of UP.
    assert float(up_direction(camera_to_world) @ torch.from_numpy(UP)) > math.cos(math.radians(20))


def test_ellipse_path_keeps_the_scene_centre_at_the_image_centre():
    path = ellipse_path(training_cameras(), frames=10, width=80)
    assert [camera.name for camera in path] == [f"frame_{i:05d}" for i in range(10)]
    up = up_direction(torch.stack([camera.camera_to_world() for camera in training_cameras()])).numpy()
    heights = []
    for camera in path:
        assert (camera.width, camera.height) == (80, 60)  # the training aspect ratio
        assert np.allclose(project(camera, TARGET), [40.0, 30.0], atol=1e-9)
        assert camera.K[0, 0] == pytest.approx(50.0 * 80 / 64) and camera.K[1, 1] == pytest.approx(
            52.0 * 60 / 48
        )
        assert_rigid(camera)
        heights.append(float((camera.camera_to_world()[:3, 3].numpy() - TARGET) @ up))
        assert float(-camera.camera_to_world()[:3, 1].numpy() @ up) > 0  # upright
    assert np.ptp(heights) < 1e-9  # a level ellipse
    horizontal = [
        offset - (offset @ up) * up
        for offset in (
            path[0].camera_to_world()[:3, 3].numpy() - TARGET,
            training_cameras()[0].camera_to_world()[:3, 3].numpy() - TARGET,
        )
    ]
    assert (
        np.allclose(np.cross(*horizontal), 0.0, atol=1e-9) and horizontal[0] @ horizontal[1] > 0
    )  # starts there
    centres = np.stack([camera.camera_to_world()[:3, 3].numpy() for camera in path])
    assert len(np.unique(centres.round(6), axis=0)) == 10  # no two frames at one place


def _azimuths(cameras: list[Camera]) -> np.ndarray:
    """Angles (degrees, counter-clockwise about UP) of the cameras' directions from TARGET."""
    side = np.cross(UP, [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    other = np.cross(UP, side)
    offsets = np.stack([camera.camera_to_world()[:3, 3].numpy() - TARGET for camera in cameras])
    return np.degrees(np.arctan2(offsets @ other, offsets @ side))


def test_ellipse_path_stays_on_the_side_a_one_sided_capture_saw():
    # training_cameras() span azimuths 0..180 degrees: the path must sweep that arc, end to end, and never
    # fly round to the unseen half (where the model has nothing to show).
    training = _azimuths(training_cameras())
    azimuths = _azimuths(ellipse_path(training_cameras(), frames=25))
    assert training.min() > -1e-6 and training.max() < 180.0 + 1e-6
    assert azimuths.min() > -1.0 and azimuths.max() < 181.0
    # (the ellipse's parameter is not exactly the azimuth: its radii differ)
    assert azimuths[0] == pytest.approx(training[0], abs=2.0) and azimuths[-1] == pytest.approx(
        180.0, abs=2.0
    )
    assert np.all(np.diff(azimuths) > 0)  # one sweep, evenly on, no turning back


def test_ellipse_path_goes_all_round_cameras_that_surround_the_scene():
    azimuths = np.sort(_azimuths(ellipse_path(training_cameras(24, full_ring=True), frames=36)) % 360.0)
    gaps = np.diff(np.concatenate([azimuths, azimuths[:1] + 360.0]))
    assert gaps.max() < 15.0  # 36 frames all round: 10 degrees apart, give or take the ellipse's shape


def test_spiral_path_looks_at_the_scene_centre():
    path = spiral_path(training_cameras(), frames=16, focal_scale=2.0)
    centres = np.stack([camera.camera_to_world()[:3, 3].numpy() for camera in path])
    for camera in path:
        assert np.allclose(project(camera, TARGET), [32.0, 24.0], atol=1e-9)
        assert camera.K[0, 0] == pytest.approx(100.0)
        assert_rigid(camera)
    assert np.ptp(centres, axis=0).max() > 0.5  # it moves


def test_interpolated_path_passes_through_the_cameras_smoothly():
    cameras = training_cameras(5)
    path = interpolated_path(cameras, frames=4 * 4 + 1)
    for i, camera in enumerate(cameras):
        assert torch.allclose(path[4 * i].world_to_camera, camera.world_to_camera, atol=1e-12)
    centres = np.stack([camera.camera_to_world()[:3, 3].numpy() for camera in path])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 2.0 * steps.min()  # no jumps
    for camera in path:
        assert_rigid(camera)


@pytest.mark.parametrize("kind", ["ellipse", "spiral", "interpolate"])
def test_paths_do_not_depend_on_the_world_frame(kind):
    # Fitting in a moved world gives the moved path: nothing assumes an axis is up (COLMAP's frames vary).
    transform = torch.tensor(
        [[0.0, -2.0, 0.0, 1.0], [1.2, 0.0, 1.6, -3.0], [-1.6, 0.0, 1.2, 0.5], [0, 0, 0, 1]],
        dtype=torch.float64,
    )
    cameras = training_cameras()
    moved = [
        replace(camera, world_to_camera=matrix)
        for camera, matrix in zip(
            cameras, transform_cameras(torch.stack([c.world_to_camera for c in cameras]), transform)
        )
    ]
    expected = transform_cameras(
        torch.stack([c.world_to_camera for c in generate_path(kind, cameras, 9)]), transform
    )
    actual = torch.stack([c.world_to_camera for c in generate_path(kind, moved, 9)])
    assert torch.allclose(actual, expected, atol=1e-9)


def test_generate_path_rejects_bad_requests():
    with pytest.raises(ValueError, match="path must be one of"):
        generate_path("circle", training_cameras(), 10)
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        generate_path("ellipse", training_cameras(), 0)
    with pytest.raises(ValueError, match="needs at least 2 training cameras"):
        generate_path("spiral", training_cameras()[:1], 10)


def test_resize_cameras_keeps_the_field_of_view():
    camera = training_cameras(2)[0]
    (resized,) = resize_cameras([camera], height=96, focal_scale=1.5)
    assert (resized.width, resized.height) == (128, 96)
    assert torch.allclose(
        resized.K, torch.tensor([[150.0, 0, 62.0], [0, 156.0, 50.0], [0, 0, 1]], dtype=torch.float64)
    )
    assert resized.world_to_camera is camera.world_to_camera


# --------------------------------------------------------------------------------------------------------
# Camera files


def test_camera_json_round_trip_is_exact(tmp_path):
    cameras = ellipse_path(training_cameras(), frames=3)
    frame = WorldFrame.normalized(torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64)))
    write_cameras_json(tmp_path / "cams.json", cameras, frame)
    loaded = read_cameras_json(tmp_path / "cams.json")
    assert loaded.frame.name == "normalized" and torch.equal(loaded.frame.from_colmap, frame.from_colmap)
    for a, b in zip(cameras, loaded.cameras):
        assert (a.name, a.width, a.height) == (b.name, b.width, b.height)
        assert torch.equal(a.world_to_camera, b.world_to_camera) and torch.equal(a.K, b.K)


def test_camera_json_camera_to_world_and_defaults(tmp_path):
    pose = look_at(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    (tmp_path / "c.json").write_text(
        json.dumps(
            {"cameras": [{"width": 20, "height": 10, "fx": 30, "fy": 31, "camera_to_world": pose.tolist()}]}
        )
    )
    loaded = read_cameras_json(tmp_path / "c.json")
    (camera,) = loaded.cameras
    assert loaded.frame is None and camera.name == "frame_00000"
    assert torch.allclose(camera.camera_to_world(), torch.from_numpy(pose), atol=1e-12)
    assert camera.K.tolist() == [[30.0, 0.0, 10.0], [0.0, 31.0, 5.0], [0.0, 0.0, 1.0]]


IDENTITY = np.eye(4).tolist()
SCALED = (np.diag([2.0, 2.0, 2.0, 1.0])).tolist()
SHEARED = [[1.0, 0.3, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
MIRRORED = np.diag([1.0, 1.0, -1.0, 1.0]).tolist()
BAD_LAST_ROW = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 1.0]]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"world_to_camera": SCALED}, r"\.world_to_camera: not a rigid transform"),
        ({"world_to_camera": SHEARED}, r"\.world_to_camera: not a rigid transform"),
        ({"world_to_camera": MIRRORED}, r"\.world_to_camera: not a rigid transform.*det R = -1"),
        ({"world_to_camera": BAD_LAST_ROW}, r"\.world_to_camera: the last row must be \[0, 0, 0, 1\]"),
        ({"world_to_camera": [[1, 0, 0, 0]]}, r"\.world_to_camera: expected a 4x4 matrix"),
        ({"fx": 0}, r"\.fx: expected a positive number of pixels, got 0"),
        ({"fy": -3.0}, r"\.fy: expected a positive number of pixels"),
        ({"cx": float("nan")}, r"\.cx: expected a finite number"),
        ({"width": 0}, r"\.width: expected a positive integer"),
        ({"height": 2.5}, r"\.height: expected a positive integer"),
        ({"fx": None}, r"\.fx: expected a finite number"),
        ({"camera_to_world": IDENTITY}, r": expected exactly one of 'world_to_camera' and 'camera_to_world'"),
        ({"focal": 3}, r": unknown field 'focal'"),
        ({"name": ""}, r"\.name: expected a non-empty string"),
    ],
)
def test_camera_json_errors_name_the_field(tmp_path, change, message):
    entry = {"width": 20, "height": 10, "fx": 30.0, "fy": 30.0, "world_to_camera": IDENTITY, **change}
    path = tmp_path / "cams.json"
    path.write_text(json.dumps({"cameras": [entry]}))
    with pytest.raises(CameraFileError, match=r"cams.json: cameras\[0\]" + message):
        read_cameras_json(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not a JSON file"),
        ('{"cameras": []}', "'cameras' is empty"),
        ("[1, 2]", "expected an object with a list 'cameras'"),
        ('{"frame": "world", "cameras": [{}]}', "missing field 'width'"),
        (
            '{"frame": "normalized", "from_colmap": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, '
            '1]], "cameras": '
            '[{"width": 2, "height": 2, "fx": 1, "fy": 1, "world_to_camera": [[1, 0, 0, 0], [0, 1, 0, 0], '
            "[0, 0, 1, 0], "
            "[0, 0, 0, 1]]}]}",
            "from_colmap: the similarity has determinant -1.0",
        ),
    ],
)
def test_camera_json_file_errors(tmp_path, text, message):
    path = tmp_path / "cams.json"
    path.write_text(text)
    with pytest.raises(CameraFileError, match=message):
        read_cameras_json(path)


def test_camera_json_rejects_duplicate_names_and_unknown_frames(tmp_path):
    entry = {"name": "a", "width": 20, "height": 10, "fx": 30.0, "fy": 30.0, "world_to_camera": IDENTITY}
    (tmp_path / "dup.json").write_text(json.dumps({"cameras": [entry, entry]}))
    with pytest.raises(CameraFileError, match="camera name 'a' is used more than once"):
        read_cameras_json(tmp_path / "dup.json")
    (tmp_path / "frame.json").write_text(json.dumps({"frame": "world", "cameras": [entry]}))
    with pytest.raises(CameraFileError, match="frame: expected one of colmap, normalized, got 'world'"):
        read_cameras_json(tmp_path / "frame.json")
    with pytest.raises(CameraFileError, match="cannot read the camera file"):
        read_cameras_json(tmp_path / "missing.json")
