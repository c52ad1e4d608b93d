"""The geometry of the whole 2DGS pipeline against a known shape (issue 15): photographs of a textured unit
sphere, ray-cast analytically here, on a black background -> 2DGS training (the Trainer) -> the mesh of the
run (`mesh_model`, TSDF of the median depth of the training views) -> its Chamfer distance to the sphere."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from render_helpers import look_at

from gsplat_py.io.colmap import Camera, ColmapModel, Points3D, write_model
from gsplat_py.io.colmap import Image as ColmapImage
from gsplat_py.rendering import _backend
from gsplat_py.tools.export import frame_move
from gsplat_py.tools.frames import quaternion_from_rotation
from gsplat_py.tools.mesh import MeshOptions, mesh_model
from gsplat_py.tools.saved_models import load_model, scene_views
from gsplat_py.training.config import Config
from gsplat_py.training.trainer import Trainer

pytestmark = pytest.mark.skipif(not _backend.extension_available(), reason="C++ extension not built")

RADIUS = 1.0  # the sphere, at COLMAP's origin
SIZE, FOCAL = 64, 80.0  # square PINHOLE images; the sphere spans ~3/4 of the frame
SUPERSAMPLE = 3  # rays per pixel side: anti-aliased edges and texture
RINGS = ((-20.0, 7), (15.0, 7), (50.0, 6))  # (elevation in degrees, cameras), all 3.5 from the centre
CAMERA_DISTANCE = 3.5
INIT_POINTS = 3000
STEPS = 400
MESH_RESOLUTION = 64


def sphere_colour(points: np.ndarray) -> np.ndarray:
    """Albedo at unit vectors ``points``: stripes over longitude and latitude in different channels and a
    checkerboard, so every patch of the sphere looks unlike its neighbours."""
    longitude = np.arctan2(points[..., 1], points[..., 0])
    latitude = np.arcsin(np.clip(points[..., 2], -1.0, 1.0))
    checker = (np.floor(longitude * 8 / math.pi) + np.floor(latitude * 8 / math.pi)) % 2
    return np.stack(
        [
            0.5 + 0.4 * np.sin(5.0 * longitude),
            0.5 + 0.4 * np.sin(7.0 * latitude + 1.0),
            0.2 + 0.6 * checker,
        ],
        axis=-1,
    )


def camera_centres() -> np.ndarray:
    """The cameras' centres on RINGS (the rings above the equator turned by half a step)."""
    centres = []
    for elevation, count in RINGS:
        e = math.radians(elevation)
        for i in range(count):
            a = 2.0 * math.pi * (i + 0.5 * (elevation > 0)) / count
            centres.append(
                CAMERA_DISTANCE
                * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
            )
    return np.array(centres)


def ray_cast_sphere(centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The SIZE x SIZE RGB photograph (float, 0..1) of the sphere from a PINHOLE camera, SUPERSAMPLE^2 rays
    per pixel averaged, black where a ray misses."""
    offsets = (np.arange(SIZE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    u, v = np.meshgrid(offsets, offsets)
    directions = np.stack([(u - SIZE / 2) / FOCAL, (v - SIZE / 2) / FOCAL, np.ones_like(u)], axis=-1)
    directions = directions @ rotation.T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    # |centre + t d|^2 = r^2: t^2 + 2 b t + c = 0 with b = d.centre, c = |centre|^2 - r^2
    b = directions @ centre
    discriminant = b * b - (centre @ centre - RADIUS**2)
    hit = discriminant > 0
    t = -b - np.sqrt(np.where(hit, discriminant, 0.0))
    points = (centre + t[..., None] * directions) / RADIUS
    rgb = np.where(hit[..., None], sphere_colour(points), 0.0)
    return rgb.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE, 3).mean(axis=(1, 3))


def write_sphere_scene(root: Path, seed: int = 0) -> None:
    """The COLMAP scene in ``root``: one PINHOLE camera, a view from each of camera_centres(), and
    INIT_POINTS points on the sphere pushed off it by Gaussian noise (sigma 5% of the radius), coloured
    with the sphere's albedo (what an SfM of these photographs would give, noisier)."""
    images = {}
    (root / "images").mkdir(parents=True)
    for i, centre in enumerate(camera_centres()):
        rotation = look_at(centre, np.zeros(3))[:3, :3]
        name = f"view_{i:02d}.png"
        qvec = quaternion_from_rotation(torch.from_numpy(rotation.T)).numpy()
        images[i + 1] = ColmapImage(
            i + 1, qvec, -rotation.T @ centre, 1, name, np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        )
        pixels = np.round(ray_cast_sphere(centre, rotation) * 255.0).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / name)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(INIT_POINTS, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    xyz = directions * RADIUS * (1.0 + 0.05 * rng.normal(size=(INIT_POINTS, 1)))
    model = ColmapModel(
        cameras={1: Camera(1, "PINHOLE", SIZE, SIZE, np.array([FOCAL, FOCAL, SIZE / 2, SIZE / 2]))},
        images=images,
        points=Points3D(
            xyz=xyz,
            rgb=np.round(sphere_colour(directions) * 255.0).astype(np.uint8),
            error=np.zeros(INIT_POINTS),
            ids=np.arange(1, INIT_POINTS + 1, dtype=np.int64),
            track_offsets=np.zeros(INIT_POINTS + 1, dtype=np.int64),
            track_image_ids=np.zeros(0, dtype=np.int32),
            track_point2D_idxs=np.zeros(0, dtype=np.int32),
        ),
    )
    write_model(model, root / "sparse" / "0")


@pytest.fixture(scope="module")
def mesh_vertices(tmp_path_factory) -> np.ndarray:
    """The vertices, in COLMAP's frame, of the mesh of STEPS steps of 2DGS on the sphere's photographs
    (both surfel losses from step 30; no densification: the initial points already cover the sphere, and
    at this step count clones and splits left more vertices inside it: BENCHMARKS.md)."""
    root = tmp_path_factory.mktemp("sphere")
    write_sphere_scene(root / "scene")
    config = Config()
    config.data.path = str(root / "scene")
    config.data.data_factor = 1
    config.model.type = "2dgs"
    config.model.sh_degree = 0
    config.model.init_opacity = 0.5  # visible from the start: the surface forms within STEPS
    config.surfel.normal_start_iter = 30
    config.surfel.dist_start_iter = 30
    config.strategy.default.refine_start_iter = STEPS
    config.train.steps = STEPS
    config.train.seed = 0
    config.train.eval_every = 0
    config.train.save_renders = False
    config.train.output = str(root / "run")
    Trainer(config, progress=False).train()
    model, scene = scene_views(load_model(root / "run"))
    mesh = mesh_model(model, scene.train_views, MeshOptions(resolution=MESH_RESOLUTION, progress=False))
    change, frame = frame_move(model, "colmap")
    assert frame.name == "colmap" and change is not None
    vertices = mesh.vertices.double() @ change[:3, :3].T.double() + change[:3, 3].double()
    return vertices.numpy()


def visible_sphere_points(count: int, seed: int = 0) -> np.ndarray:
    """``count`` points spread uniformly over the part of the sphere that at least two cameras see."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(8 * count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    seen_by = (directions @ camera_centres().T > RADIUS).sum(axis=1)
    return RADIUS * directions[seen_by >= 2][:count]


def chamfer(vertices: np.ndarray, radius: float, centre=(0.0, 0.0, 0.0)) -> dict[str, float]:
    """The two sides of the Chamfer distance between ``vertices`` and the sphere of ``radius`` at
    ``centre``, relative to ``radius``: vertex -> sphere (| |v - centre| - radius |) and points on the
    sphere's visible part -> nearest vertex, each as its mean and 95th percentile."""
    centre = np.asarray(centre)
    to_surface = np.abs(np.linalg.norm(vertices - centre, axis=1) - radius) / radius
    samples = torch.from_numpy(visible_sphere_points(2000) * (radius / RADIUS) + centre)
    to_mesh = torch.cdist(samples, torch.from_numpy(vertices)).min(dim=1).values.numpy() / radius
    return {
        "vertex_mean": float(to_surface.mean()),
        "vertex_p95": float(np.percentile(to_surface, 95)),
        "surface_mean": float(to_mesh.mean()),
        "surface_p95": float(np.percentile(to_mesh, 95)),
    }


# Relative to the radius. Measured (seed 0): vertex -> sphere mean 0.017, p95 0.039; sphere -> mesh mean
# 0.016, p95 0.028 (a 64-voxel TSDF grid: a voxel is ~0.035 radii, so the nearest vertex is ~half one away);
# seeds 1 and 2 at most 0.017 / 0.036 and 0.0174 / 0.031. The limits leave ~1.45x that, and a sphere 5% off
# in radius or position fails them (test_a_wrong_sphere_is_outside_the_thresholds).
THRESHOLDS = {"vertex_mean": 0.025, "vertex_p95": 0.06, "surface_mean": 0.025, "surface_p95": 0.045}


def test_mesh_of_trained_surfels_is_the_sphere(mesh_vertices):
    distances = chamfer(mesh_vertices, RADIUS)
    assert all(distances[name] < limit for name, limit in THRESHOLDS.items()), distances


@pytest.mark.parametrize(
    "radius, centre",
    [
        (1.05 * RADIUS, (0.0, 0.0, 0.0)),
        (0.95 * RADIUS, (0.0, 0.0, 0.0)),
        (RADIUS, (0.05 * RADIUS, 0.0, 0.0)),
        (RADIUS, (0.0, 0.0, 0.05 * RADIUS)),
    ],
)
def test_a_wrong_sphere_is_outside_the_thresholds(mesh_vertices, radius, centre):
    """The same mesh against a sphere 5% larger or smaller, or moved by 5% of the radius: the limits tell."""
    distances = chamfer(mesh_vertices, radius, centre)
    assert any(distances[name] >= limit for name, limit in THRESHOLDS.items()), distances


def test_the_distances_of_the_sphere_itself_are_near_zero():
    """The measure of a dense point set on the sphere (~0.015 radii apart): exact on one side, about half
    the spacing on the other."""
    points = visible_sphere_points(50000, seed=1)
    distances = chamfer(points, RADIUS)
    assert distances["vertex_mean"] < 1e-12 and distances["vertex_p95"] < 1e-12
    assert distances["surface_mean"] < 0.01 and distances["surface_p95"] < 0.02
