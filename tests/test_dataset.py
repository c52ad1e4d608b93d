"""Tests of gsplat_py.data: loading COLMAP scene folders (the bundled scene and small synthetic ones)."""

import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gsplat_py.data import DatasetError, SceneData, View, load_colmap_scene
from gsplat_py.data.undistort import Intrinsics, plan_undistortion
from gsplat_py.io.colmap import Camera, ColmapModel, Points3D, qvec_to_rotmat, read_model, write_model
from gsplat_py.io.colmap import Image as ColmapImage

REPO = Path(__file__).resolve().parents[1]
SNOWMIKU = REPO / "data" / "snowmiku"
SNOWMIKU_IMAGES = 97


def assert_near(actual, expected, atol: float) -> None:
    """|actual - expected| <= atol element-wise (numpy's check: torch.testing's imports sympy, about 1 s)."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=0, atol=atol
    )


# --------------------------------------------------------------------------------------------------------
# The bundled scene (copied, so that its cache lands in the temporary folder)


@pytest.fixture(scope="module")
def snowmiku_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("snowmiku")
    (root / "sparse" / "0").mkdir(parents=True)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        shutil.copy(SNOWMIKU / "sparse" / "0" / name, root / "sparse" / "0" / name)
    shutil.copytree(SNOWMIKU / "images_4", root / "images_4")
    return root


@pytest.fixture(scope="module")
def snowmiku(snowmiku_root) -> SceneData:
    return load_colmap_scene(snowmiku_root, data_factor=4)


@pytest.fixture(scope="module")
def snowmiku_model():
    return read_model(SNOWMIKU / "sparse" / "0")


def all_views(scene: SceneData) -> list[View]:
    return sorted(scene.train_views + scene.test_views, key=lambda view: view.index)


def test_split_holds_out_every_eighth_image_by_name(snowmiku, snowmiku_model, snowmiku_root):
    assert (len(snowmiku.train_views), len(snowmiku.test_views)) == (84, 13)
    views = all_views(snowmiku)
    assert [view.index for view in views] == list(range(SNOWMIKU_IMAGES))
    assert [view.name for view in views] == sorted(image.name for image in snowmiku_model.images.values())
    assert all(view.index % 8 == 0 for view in snowmiku.test_views)
    assert all(view.index % 8 != 0 for view in snowmiku.train_views)
    assert snowmiku.root == snowmiku_root and snowmiku.data_factor == 4


def test_images_are_undistorted_with_matching_intrinsics(snowmiku, snowmiku_model):
    # The OPENCV camera (1008x756) resized to images_4's 252x189, undistorted: one pinhole K for all views.
    camera = Intrinsics.from_colmap(snowmiku_model.cameras[1]).resized(252, 189)
    target = plan_undistortion(camera).target
    for view in all_views(snowmiku):
        assert view.image.dtype == torch.uint8 and view.image.shape == (target.height, target.width, 3)
        assert (view.width, view.height) == (target.width, target.height)
        assert view.K.dtype == torch.float32 and torch.equal(view.K, target.K().to(torch.float32))
        assert view.world_to_camera.dtype == torch.float32 and view.world_to_camera.shape == (4, 4)
    assert target.fx == camera.fx and target.fy == camera.fy  # the focal length is kept


def sample(image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [N, 3] of a uint8 [H, W, 3] image at pixels [N, 2] (COLMAP convention)."""
    size = torch.tensor([image.shape[1], image.shape[0]], dtype=torch.float64)
    grid = (2 * pixels / size - 1).to(torch.float32)[None, None]
    return F.grid_sample(image.permute(2, 0, 1)[None].float(), grid, align_corners=False)[0, :, 0].T


def test_views_agree_with_colmaps_keypoints(snowmiku, snowmiku_model, snowmiku_root):
    """Each SfM point, projected with the view's pose and K, lands where COLMAP observed it (undistorted,
    at 1/4 scale), and the undistorted image there shows what the original image shows at the keypoint."""
    camera = Intrinsics.from_colmap(snowmiku_model.cameras[1])
    rows = {point_id: row for row, point_id in enumerate(snowmiku_model.points.ids)}
    images = {image.name: image for image in snowmiku_model.images.values()}
    errors, color_differences, shifted_differences = [], [], []
    for view in all_views(snowmiku)[::6]:
        image = images[view.name]
        observed = image.point3D_ids >= 0
        xyz = torch.from_numpy(snowmiku_model.points.xyz[[rows[i] for i in image.point3D_ids[observed]]])
        keypoints = torch.from_numpy(image.xys[observed])
        points = (snowmiku.transform[:3, :3] @ xyz.T).T + snowmiku.transform[:3, 3]
        in_camera = points @ view.world_to_camera[:3, :3].double().T + view.world_to_camera[:3, 3].double()
        projected = in_camera @ view.K.double().T
        projected = projected[:, :2] / projected[:, 2:]
        normalized, converged = camera.camera_from_image(keypoints)
        assert bool(converged.all())
        undistorted = normalized @ view.K[:2, :2].double().T + view.K[:2, 2].double()
        errors.append((projected - undistorted).norm(dim=-1))

        original = torch.from_numpy(
            np.array(Image.open(snowmiku_root / "images_4" / view.name).convert("RGB"))
        )
        inside = ((undistorted > 2) & (undistorted < torch.tensor([view.width - 2, view.height - 2]))).all(-1)
        reference = sample(original, keypoints[inside] / 4)
        color_differences.append((sample(view.image, undistorted[inside]) - reference).abs().mean())
        shifted = undistorted[inside] + torch.tensor([1.5, 0.0], dtype=torch.float64)
        shifted_differences.append((sample(view.image, shifted) - reference).abs().mean())
    errors = torch.cat(errors)
    # COLMAP's reprojection errors are about a pixel at full resolution, a quarter of one here.
    assert errors.median() < 0.3 and errors.max() < 1.5
    # Mean absolute differences (of 255) per view: ~3 where K and the pixels agree, ~11+ 1.5 px off.
    assert max(color_differences) < 5.0 and min(shifted_differences) > 8.0


def test_normalisation_is_a_similarity_applied_to_poses_and_points(snowmiku, snowmiku_model):
    transform = snowmiku.transform
    assert transform.dtype == torch.float64 and torch.equal(transform[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    scale = torch.linalg.det(transform[:3, :3]).item() ** (1 / 3)
    rotation = transform[:3, :3] / scale
    assert_near(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12)

    xyz = torch.from_numpy(snowmiku_model.points.xyz)
    expected_points = xyz @ transform[:3, :3].T + transform[:3, 3]
    assert snowmiku.points.dtype == torch.float32 and snowmiku.points.shape == (len(xyz), 3)
    assert_near(snowmiku.points.double(), expected_points, atol=1e-5)
    colors = torch.from_numpy(snowmiku_model.points.rgb).float() / 255
    assert snowmiku.point_colors.dtype == torch.float32 and torch.equal(snowmiku.point_colors, colors)

    images = {image.name: image for image in snowmiku_model.images.values()}
    for view in all_views(snowmiku)[::10]:
        colmap_world_to_camera = torch.from_numpy(images[view.name].world_to_camera())
        colmap_centre = -colmap_world_to_camera[:3, :3].T @ colmap_world_to_camera[:3, 3]
        camera_to_world = view.camera_to_world().double()
        assert_near(
            view.world_to_camera.double() @ camera_to_world, torch.eye(4, dtype=torch.float64), atol=1e-6
        )
        assert_near(camera_to_world[:3, 3], transform[:3, :3] @ colmap_centre + transform[:3, 3], atol=1e-5)
        # A point projects to the same pixel in both worlds.
        K = view.K.double()
        original = (K @ (xyz[:50] @ colmap_world_to_camera[:3, :3].T + colmap_world_to_camera[:3, 3]).T).T
        normalised = (
            K
            @ (
                expected_points[:50] @ view.world_to_camera[:3, :3].double().T
                + view.world_to_camera[:3, 3].double()
            ).T
        ).T
        assert_near(normalised[:, :2] / normalised[:, 2:], original[:, :2] / original[:, 2:], atol=1e-3)


def test_normalised_frame_is_centred_scaled_and_aligned(snowmiku):
    # The points' principal axes are x, y, z in decreasing order of variance.
    covariance = np.cov(snowmiku.points.double().numpy(), rowvar=False)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 1e-6 * covariance.max()
    assert covariance[0, 0] > covariance[1, 1] > covariance[2, 2]
    camera_to_world = torch.stack([view.camera_to_world() for view in all_views(snowmiku)]).double()
    # z points up: the cameras' mean up direction (-y in OpenCV camera axes) has a positive z.
    assert (-camera_to_world[:, :3, 1]).mean(0)[2] > 0.5
    centres = camera_to_world[:, :3, 3]
    distances = (centres - centres.mean(0)).norm(dim=-1)
    assert snowmiku.scene_scale == pytest.approx(1.1 * distances.max().item(), abs=1e-5)
    # The median camera distance from the scene's focus is 1, so the cameras sit about 1 from the centre.
    assert 0.5 < centres.norm(dim=-1).median() < 1.5


def test_without_normalisation_the_colmap_frame_is_kept(snowmiku_root, snowmiku_model):
    scene = load_colmap_scene(snowmiku_root, data_factor=4, normalize=False, test_every=0)
    assert torch.equal(scene.transform, torch.eye(4, dtype=torch.float64))
    assert torch.equal(scene.points, torch.from_numpy(snowmiku_model.points.xyz).float())
    images = {image.name: image for image in snowmiku_model.images.values()}
    for view in scene.train_views:
        expected = torch.from_numpy(images[view.name].world_to_camera()).float()
        assert_near(view.world_to_camera, expected, atol=1e-6)
    centres = torch.stack([view.camera_to_world()[:3, 3] for view in scene.train_views]).double()
    extent = (centres - centres.mean(0)).norm(dim=-1).max().item()
    assert scene.scene_scale == pytest.approx(1.1 * extent, rel=1e-6)
    assert len(scene.train_views) == SNOWMIKU_IMAGES and scene.test_views == []


def test_full_resolution_needs_the_images_folder(snowmiku_root):
    expected = r"snowmiku0: images/ is not a folder, and the folder itself holds none of the 97 images"
    with pytest.raises(DatasetError, match=expected):
        load_colmap_scene(snowmiku_root, data_factor=1)


# --------------------------------------------------------------------------------------------------------
# Synthetic scenes


def qvec_from_rotmat(rotation: np.ndarray) -> np.ndarray:
    """The unit quaternion (w, x, y, z) of a rotation matrix, w >= 0 (Bar-Itzhack's method)."""
    (xx, yx, zx), (xy, yy, zy), (xz, yz, zz) = rotation
    k = (
        np.array(
            [
                [xx - yy - zz, 0, 0, 0],
                [yx + xy, yy - xx - zz, 0, 0],
                [zx + xz, zy + yz, zz - xx - yy, 0],
                [yz - zy, zx - xz, xy - yx, xx + yy + zz],
            ]
        )
        / 3.0
    )
    eigenvalues, eigenvectors = np.linalg.eigh(k)
    qvec = eigenvectors[[3, 0, 1, 2], np.argmax(eigenvalues)]
    return qvec if qvec[0] >= 0 else -qvec


def ring_camera_to_world(count: int, radius: float) -> np.ndarray:
    """Cameras evenly spaced on a horizontal circle around the origin, looking at it, upright (+z up)."""
    poses = []
    for i in range(count):
        angle = 2 * math.pi * i / count
        centre = radius * np.array([math.cos(angle), math.sin(angle), 0.0])
        forward = -centre / radius
        down = np.array([0.0, 0.0, -1.0])
        pose = np.eye(4)
        pose[:3, :3] = np.stack([np.cross(down, forward), down, forward], axis=1)
        pose[:3, 3] = centre
        poses.append(pose)
    return np.stack(poses)


# A symmetric grid (per-coordinate median 0) with variances x > y > z.
GRID_POINTS = np.stack(
    np.meshgrid(np.linspace(-3, 3, 7), np.linspace(-1.2, 1.2, 5), np.linspace(-0.3, 0.3, 3), indexing="ij"),
    -1,
).reshape(-1, 3)


def write_scene(
    root: Path,
    names=("view_0.png", "view_1.png", "view_2.png", "view_3.png"),
    camera=("PINHOLE", 64, 48, (60.0, 62.0, 31.5, 24.25)),
    folder: str = "images",
    image_size=None,
    mode: str = "RGB",
    camera_to_world=None,
    world_from_canonical=None,
    points=GRID_POINTS,
    sparse: str = "sparse/0",
    ext: str = ".bin",
    seed: int = 0,
) -> dict:
    """A COLMAP scene in ``root``: one camera, ``names`` as images (random PNG-exact pixels) on a ring of
    cameras, ``points`` (all mapped by the similarity ``world_from_canonical``). Returns {name: pixels}."""
    model_name, width, height, params = camera
    image_width, image_height = image_size or (width, height)
    poses = ring_camera_to_world(len(names), 4.0) if camera_to_world is None else camera_to_world
    world_from_canonical = np.eye(4) if world_from_canonical is None else world_from_canonical
    scale = np.cbrt(np.linalg.det(world_from_canonical[:3, :3]))
    images = {}
    for i, (name, pose) in enumerate(zip(names, poses)):
        pose = world_from_canonical @ pose
        rotation, centre = pose[:3, :3] / scale, pose[:3, 3]
        qvec = qvec_from_rotmat(rotation.T)
        assert np.allclose(qvec_to_rotmat(qvec), rotation.T, atol=1e-12)
        images[i + 1] = ColmapImage(
            i + 1, qvec, -rotation.T @ centre, 1, name, np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        )
    world_points = points @ world_from_canonical[:3, :3].T + world_from_canonical[:3, 3]
    count = len(world_points)
    model = ColmapModel(
        cameras={1: Camera(1, model_name, width, height, np.array(params, dtype=np.float64))},
        images=images,
        points=Points3D(
            xyz=world_points,
            rgb=np.tile(np.array([[10, 200, 30]], dtype=np.uint8), (count, 1)),
            error=np.zeros(count),
            ids=np.arange(1, count + 1, dtype=np.int64),
            track_offsets=np.zeros(count + 1, dtype=np.int64),
            track_image_ids=np.zeros(0, dtype=np.int32),
            track_point2D_idxs=np.zeros(0, dtype=np.int32),
        ),
    )
    write_model(model, root / sparse, ext=ext)
    generator = np.random.default_rng(seed)
    pixels = {}
    for name in names:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        array = generator.integers(0, 256, (image_height, image_width, channels), dtype=np.uint8)
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array[..., 0] if mode == "L" else array, mode).save(path)
        pixels[name] = array
    return pixels


def test_pinhole_images_are_loaded_unchanged(tmp_path):
    pixels = write_scene(tmp_path, names=("b.png", "a.png", "sub/c.png"))
    scene = load_colmap_scene(tmp_path, test_every=0)
    assert [view.name for view in scene.train_views] == ["a.png", "b.png", "sub/c.png"]
    K = torch.tensor([[60.0, 0.0, 31.5], [0.0, 62.0, 24.25], [0.0, 0.0, 1.0]])
    for view in scene.train_views:
        assert torch.equal(view.image, torch.from_numpy(pixels[view.name]))
        assert torch.equal(view.K, K)
    assert not (tmp_path / ".gsplat_py_cache").exists()  # nothing needed caching


@pytest.mark.parametrize("mode", ["RGBA", "L"])
def test_alpha_is_dropped_and_grayscale_expanded(tmp_path, mode):
    pixels = write_scene(tmp_path, names=("a.png",), mode=mode)
    view = load_colmap_scene(tmp_path, test_every=0).train_views[0]
    expected = pixels["a.png"][..., :3] if mode == "RGBA" else np.repeat(pixels["a.png"], 3, axis=-1)
    assert view.image.shape == (48, 64, 3) and torch.equal(view.image, torch.from_numpy(expected))


@pytest.mark.parametrize("test_every, test_indices", [(0, []), (-1, []), (3, [0, 3, 6]), (1, list(range(8)))])
def test_test_every(tmp_path, test_every, test_indices):
    write_scene(tmp_path, names=[f"{i}.png" for i in range(8)])
    scene = load_colmap_scene(tmp_path, test_every=test_every)
    assert [view.index for view in scene.test_views] == test_indices
    assert [view.index for view in scene.train_views] == [i for i in range(8) if i not in test_indices]


def test_ring_scene_normalises_exactly(tmp_path):
    # The scene's COLMAP world is a rotated, scaled copy of a canonical one in which 8 upright cameras
    # circle the origin at radius 4 and the points' principal axes are x, y, z.
    rotation = qvec_to_rotmat(np.array([0.8, 0.3, -0.4, 0.2]))
    world_from_canonical = np.eye(4)
    world_from_canonical[:3, :3] = 2.5 * rotation
    write_scene(tmp_path, names=[f"{i}.png" for i in range(8)], world_from_canonical=world_from_canonical)
    scene = load_colmap_scene(tmp_path, test_every=0)
    # Expected: the canonical frame scaled by 1/4 (camera distance 1), up to a half turn about z.
    expected = GRID_POINTS / 4.0
    flip = np.sign(scene.points[np.argmax(GRID_POINTS[:, 0]), 0].item())
    expected = expected * np.array([flip, flip, 1.0])
    np.testing.assert_allclose(scene.points.numpy(), expected, atol=1e-6)
    centres = torch.stack([view.camera_to_world()[:3, 3] for view in scene.train_views]).double()
    np.testing.assert_allclose(centres.norm(dim=-1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(centres[:, 2].numpy(), 0.0, atol=1e-6)
    assert scene.scene_scale == pytest.approx(1.1, abs=1e-6)
    ups = -torch.stack([view.camera_to_world()[:3, 1] for view in scene.train_views]).double()
    np.testing.assert_allclose(ups.numpy(), np.tile([0.0, 0.0, 1.0], (8, 1)), atol=1e-6)


def test_model_without_points_still_normalises_the_cameras(tmp_path):
    write_scene(tmp_path, names=[f"{i}.png" for i in range(6)], points=np.zeros((0, 3)))
    scene = load_colmap_scene(tmp_path, test_every=0)
    assert scene.points.shape == (0, 3) and scene.point_colors.shape == (0, 3)
    assert scene.scene_scale == pytest.approx(1.1, abs=1e-6)


def test_text_model_in_sparse_folder(tmp_path):
    write_scene(tmp_path, sparse="sparse", ext=".txt")
    scene = load_colmap_scene(tmp_path, test_every=2)
    assert (len(scene.train_views), len(scene.test_views)) == (2, 2)


def test_downscales_once_and_caches(tmp_path, monkeypatch):
    # 65x49 images downscaled by 2: round(32.5) = 32 and round(24.5) = 24 (Python rounds half to even).
    camera = ("PINHOLE", 65, 49, (60.0, 62.0, 32.5, 24.5))
    pixels = write_scene(tmp_path, camera=camera, names=("a.png", "b.png"))
    scene = load_colmap_scene(tmp_path, data_factor=2, test_every=0)
    for view in scene.train_views:
        expected = Image.fromarray(pixels[view.name]).resize((32, 24), Image.Resampling.LANCZOS)
        assert torch.equal(view.image, torch.from_numpy(np.array(expected)))
        expected_K = [[60 * 32 / 65, 0, 32.5 * 32 / 65], [0, 62 * 24 / 49, 24.5 * 24 / 49], [0, 0, 1]]
        assert_near(view.K, expected_K, atol=1e-6)
    cache = tmp_path / ".gsplat_py_cache" / "factor_2"
    entries = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    assert sorted(entries) == ["a.png.png", "b.png.png"]  # and no temporary files left behind

    def no_resizing(*args, **kwargs):
        raise AssertionError("resized again instead of reading the cache")

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "resize", no_resizing)
        again = load_colmap_scene(tmp_path, data_factor=2, test_every=0)
    for first, second in zip(scene.train_views, again.train_views):
        assert torch.equal(first.image, second.image) and torch.equal(first.K, second.K)

    # A changed source image (new content and modification time) is downscaled again; the other is not.
    source = tmp_path / "images" / "a.png"
    Image.fromarray(255 - pixels["a.png"]).save(source)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    changed = load_colmap_scene(tmp_path, data_factor=2, test_every=0)
    expected = Image.fromarray(255 - pixels["a.png"]).resize((32, 24), Image.Resampling.LANCZOS)
    assert torch.equal(changed.train_views[0].image, torch.from_numpy(np.array(expected)))
    assert (cache / "b.png.png").stat().st_mtime_ns == entries["b.png.png"]
    assert sorted(path.name for path in cache.iterdir()) == ["a.png.png", "b.png.png"]


def test_undistorted_images_are_cached_and_rebuilt_when_the_camera_changes(tmp_path, monkeypatch):
    camera = ("OPENCV", 64, 48, (60.0, 62.0, 31.5, 24.25, -0.1, 0.02, 0.001, -0.002))
    pixels = write_scene(tmp_path, camera=camera, names=("a.png", "b.png"))
    cache_dir = tmp_path / "elsewhere"
    scene = load_colmap_scene(tmp_path, test_every=0, cache_dir=cache_dir)
    undistortion = plan_undistortion(Intrinsics("OPENCV", 64, 48, *camera[3][:4], camera[3][4:]))
    for view in scene.train_views:
        assert torch.equal(view.image, undistortion.apply(torch.from_numpy(pixels[view.name])))
        assert torch.equal(view.K, undistortion.target.K().float())
    assert sorted(path.name for path in (cache_dir / "factor_1").iterdir()) == ["a.png.png", "b.png.png"]
    assert not (tmp_path / ".gsplat_py_cache").exists()

    def no_planning(*args, **kwargs):
        raise AssertionError("undistorted again instead of reading the cache")

    with monkeypatch.context() as patch:
        patch.setattr("gsplat_py.data.colmap_dataset.plan_undistortion", no_planning)
        again = load_colmap_scene(tmp_path, test_every=0, cache_dir=cache_dir)
    for first, second in zip(scene.train_views, again.train_views):
        assert torch.equal(first.image, second.image) and torch.equal(first.K, second.K)

    stronger = ("OPENCV", 64, 48, (60.0, 62.0, 31.5, 24.25, -0.2, 0.02, 0.001, -0.002))
    write_scene(tmp_path, camera=stronger, names=("a.png", "b.png"))
    changed = load_colmap_scene(tmp_path, test_every=0, cache_dir=cache_dir)
    undistortion = plan_undistortion(Intrinsics("OPENCV", 64, 48, *stronger[3][:4], stronger[3][4:]))
    assert torch.equal(changed.train_views[0].K, undistortion.target.K().float())
    assert torch.equal(changed.train_views[0].image, undistortion.apply(torch.from_numpy(pixels["a.png"])))


def test_unreadable_cache_entry_is_rebuilt(tmp_path):
    write_scene(tmp_path, camera=("PINHOLE", 64, 48, (60.0, 62.0, 31.5, 24.25)), names=("a.png",))
    first = load_colmap_scene(tmp_path, data_factor=2, test_every=0).train_views[0]
    (tmp_path / ".gsplat_py_cache" / "factor_2" / "a.png.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    second = load_colmap_scene(tmp_path, data_factor=2, test_every=0).train_views[0]
    assert torch.equal(first.image, second.image)
    third = load_colmap_scene(tmp_path, data_factor=2, test_every=0).train_views[0]
    assert torch.equal(first.image, third.image)


def test_cache_falls_back_to_the_home_folder(tmp_path, monkeypatch):
    root = tmp_path / "scene"
    write_scene(root, names=("a.png",))
    (root / ".gsplat_py_cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_colmap_scene(root, data_factor=2, test_every=0)
    folders = list((tmp_path / "home" / ".cache" / "gsplat_py").iterdir())
    assert len(folders) == 1 and (folders[0] / "factor_2" / "a.png.png").is_file()


def test_images_n_is_used_with_its_own_size(tmp_path):
    # images_3 of a 100x60 camera at 33x20 (not exactly 100/3): K scales by 33/100 and 20/60.
    pixels = write_scene(
        tmp_path,
        camera=("PINHOLE", 100, 60, (90.0, 91.0, 50.0, 30.0)),
        folder="images_3",
        image_size=(33, 20),
        names=("a.png",),
    )
    view = load_colmap_scene(tmp_path, data_factor=3, test_every=0).train_views[0]
    assert torch.equal(view.image, torch.from_numpy(pixels["a.png"]))
    expected_K = torch.tensor([[90 * 0.33, 0, 50 * 0.33], [0, 91 / 3, 10], [0, 0, 1]])
    assert_near(view.K, expected_K, atol=1e-5)
    assert not (tmp_path / ".gsplat_py_cache").exists()


def test_images_n_may_hold_pngs_of_jpegs(tmp_path):
    write_scene(tmp_path, names=("a.jpg", "b.jpg"), folder="images_2", image_size=(32, 24))
    for name in ("a", "b"):
        (tmp_path / "images_2" / f"{name}.jpg").rename(tmp_path / "images_2" / f"{name}.png")
    scene = load_colmap_scene(tmp_path, data_factor=2, test_every=0)
    assert [view.name for view in scene.train_views] == ["a.jpg", "b.jpg"]


def test_rotated_image_is_an_error(tmp_path):
    write_scene(tmp_path, names=("a.png",), image_size=(48, 64))
    expected = r"a\.png: the image is 48x64 .* camera 1 is 64x48: the aspect ratios differ"
    with pytest.raises(DatasetError, match=expected):
        load_colmap_scene(tmp_path)


# --------------------------------------------------------------------------------------------------------
# Errors and warnings


def test_missing_image_is_named(tmp_path):
    write_scene(tmp_path, names=("a.png", "b.png", "c.png"))
    (tmp_path / "images" / "b.png").unlink()
    expected = r"images/b\.png: no such file \(registered in the COLMAP model in .*sparse/0\)$"
    with pytest.raises(DatasetError, match=expected):
        load_colmap_scene(tmp_path)
    (tmp_path / "images" / "c.png").unlink()
    expected = r"images/b\.png: no such file .*sparse/0\) \(1 more registered images are missing\)$"
    with pytest.raises(DatasetError, match=expected):
        load_colmap_scene(tmp_path)


def test_unregistered_images_give_one_warning(tmp_path):
    write_scene(tmp_path, names=("a.png",))
    for i in range(4):
        Image.new("RGB", (64, 48)).save(tmp_path / "images" / f"extra_{i}.jpg")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / ".hidden.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_colmap_scene(tmp_path, test_every=0)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1, messages
    assert (
        "skipping 4 image files that the COLMAP model does not register: extra_0.jpg, extra_1.jpg, "
        "extra_2.jpg, ..." in messages[0]
    )
    assert caught[0].filename == __file__  # attributed to the caller
    assert [view.name for view in scene.train_views] == ["a.png"]


def test_unsupported_camera_model_is_named(tmp_path):
    write_scene(tmp_path, camera=("FOV", 64, 48, (60.0, 62.0, 31.5, 24.25, 0.9)))
    expected = (
        r"sparse/0/cameras\.bin: camera 1 has the unsupported model FOV \(supported: SIMPLE_PINHOLE, "
        r"PINHOLE, "
        r"SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV, OPENCV_FISHEYE\)$"
    )
    with pytest.raises(DatasetError, match=expected):
        load_colmap_scene(tmp_path)


def test_missing_or_broken_model_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: no such folder"):
        load_colmap_scene(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    expected = r"sparse: no such folder \(expected the COLMAP model in sparse/0/ or sparse/; a folder of"
    with pytest.raises(DatasetError, match=expected):
        load_colmap_scene(tmp_path)
    write_scene(tmp_path)
    cameras = tmp_path / "sparse" / "0" / "cameras.bin"
    cameras.write_bytes(cameras.read_bytes()[:-3])
    with pytest.raises(DatasetError, match=r"sparse/0: cameras\.bin: .*truncated"):
        load_colmap_scene(tmp_path)


def test_missing_image_folders_are_named(tmp_path):
    write_scene(tmp_path, folder="images_4")
    with pytest.raises(DatasetError, match=r": neither images_3/ nor images/ is a folder"):
        load_colmap_scene(tmp_path, data_factor=3)
    with pytest.raises(ValueError, match="data_factor must be a positive integer, got 0"):
        load_colmap_scene(tmp_path, data_factor=0)


def test_cache_paths_stay_inside_the_cache_folder(tmp_path):
    from gsplat_py.data.colmap_dataset import _ImageCache

    cache = _ImageCache(tmp_path / "cache")
    inside = (tmp_path / "cache").resolve()
    for name in ("a.jpg", "sub/b.jpg", "../escape.jpg", "sub/../../escape.jpg", "/abs/path.jpg"):
        path = cache.path(name).resolve()
        assert inside in path.parents, (name, path)
    assert cache.path("../x.jpg") != cache.path("../y.jpg")


def test_fisheye_images_are_kept_as_they_are_and_render_as_fisheye(tmp_path):
    coefficients = (0.05, -0.01, 0.003, -0.001)
    camera = ("OPENCV_FISHEYE", 64, 48, (60.0, 62.0, 31.5, 24.25, *coefficients))
    pixels = write_scene(tmp_path, camera=camera, names=("a.png", "b.png"))
    for attempt in ("first", "from the cache"):  # downscaled: the second load reads the cache
        scene = load_colmap_scene(tmp_path, data_factor=2, test_every=0)
        for view in scene.train_views:
            expected = Image.fromarray(pixels[view.name]).resize((32, 24), Image.Resampling.LANCZOS)
            assert torch.equal(view.image, torch.from_numpy(np.array(expected))), attempt  # not undistorted
            assert torch.equal(view.K, torch.tensor([[30.0, 0, 15.75], [0, 31.0, 12.125], [0, 0, 1]])), (
                attempt
            )
            assert view.camera_model == "fisheye", attempt
            assert torch.equal(view.radial_coeffs, torch.tensor(coefficients, dtype=torch.float32)), attempt
    full = load_colmap_scene(tmp_path, test_every=0)  # full size: no cache at all
    assert torch.equal(full.train_views[0].image, torch.from_numpy(pixels["a.png"]))
    assert full.train_views[0].camera_model == "fisheye"
