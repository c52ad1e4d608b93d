"""Small scenes and models shared by the render, camera-path and export tests (plain functions)."""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsplat_py.io.colmap import Camera, ColmapModel, Points3D, write_model
from gsplat_py.io.colmap import Image as ColmapImage
from gsplat_py.model import GaussianSplats
from gsplat_py.tools.frames import quaternion_from_rotation

SCENE_WIDTH, SCENE_HEIGHT = 40, 30
SCENE_FOCAL = 36.0
# COLMAP's world is an arbitrary similarity of the canonical one (scale 2.5, a rotation, a shift), so that
# COLMAP's frame and the normalised frame differ in every respect.
CANONICAL_TO_COLMAP = np.array(
    [
        [0.0, -2.5, 0.0, 3.0],
        [1.5, 0.0, 2.0, -1.0],
        [-2.0, 0.0, 1.5, 0.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def look_at(centre: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world (OpenCV axes) of a camera at ``centre`` looking at ``target``."""
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    pose[:3, 3] = centre
    return pose


def ring_poses(count: int, radius: float = 4.0, height: float = 1.0) -> np.ndarray:
    """Canonical camera-to-world matrices on a circle at ``height``, all looking at the origin."""
    return np.stack(
        [
            look_at(np.array([radius * math.cos(a), radius * math.sin(a), height]), np.zeros(3))
            for a in (2.0 * math.pi * i / count for i in range(count))
        ]
    )


def write_ring_scene(root: Path, count: int = 9, seed: int = 0) -> None:
    """A COLMAP scene in ``root``: ``count`` PINHOLE views (SCENE_WIDTH x SCENE_HEIGHT, random pixels) on a
    ring around the origin, and a small point cloud there, all mapped into COLMAP's world by
    CANONICAL_TO_COLMAP. Every 8th view (by name) is a test view."""
    scale = np.cbrt(np.linalg.det(CANONICAL_TO_COLMAP[:3, :3]))
    images = {}
    for i, pose in enumerate(ring_poses(count)):
        pose = CANONICAL_TO_COLMAP @ pose
        rotation, centre = pose[:3, :3] / scale, pose[:3, 3]
        qvec = quaternion_from_rotation(torch.from_numpy(rotation.T)).numpy()
        images[i + 1] = ColmapImage(
            i + 1,
            qvec,
            -rotation.T @ centre,
            1,
            f"view_{i:02d}.png",
            np.zeros((0, 2)),
            np.zeros(0, dtype=np.int64),
        )
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.8, 0.8, (60, 3)) @ CANONICAL_TO_COLMAP[:3, :3].T + CANONICAL_TO_COLMAP[:3, 3]
    model = ColmapModel(
        cameras={
            1: Camera(
                1,
                "PINHOLE",
                SCENE_WIDTH,
                SCENE_HEIGHT,
                np.array([SCENE_FOCAL, SCENE_FOCAL, SCENE_WIDTH / 2, SCENE_HEIGHT / 2]),
            )
        },
        images=images,
        points=Points3D(
            xyz=points,
            rgb=rng.integers(0, 256, (60, 3), dtype=np.uint8),
            error=np.zeros(60),
            ids=np.arange(1, 61, dtype=np.int64),
            track_offsets=np.zeros(61, dtype=np.int64),
            track_image_ids=np.zeros(0, dtype=np.int32),
            track_point2D_idxs=np.zeros(0, dtype=np.int32),
        ),
    )
    write_model(model, root / "sparse" / "0")
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image in images.values():
        pixels = rng.integers(0, 256, (SCENE_HEIGHT, SCENE_WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / image.name)


def random_splats(n: int = 300, degree: int = 3, seed: int = 0, colmap_frame: bool = False) -> GaussianSplats:
    """Gaussians around the canonical origin (in COLMAP's frame of write_ring_scene if ``colmap_frame``),
    of SH degree ``degree`` with strong view-dependent colour."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 1.6
    log_scales = torch.log(0.04 + 0.12 * torch.rand(n, 3, generator=g, dtype=torch.float64))
    if colmap_frame:
        transform = torch.from_numpy(CANONICAL_TO_COLMAP)
        means = means @ transform[:3, :3].T + transform[:3, 3]
        log_scales = log_scales + math.log(2.5)
    sh = torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.3
    sh[:, 0] += 0.5
    return GaussianSplats(
        means=means.float(),
        quats=torch.randn(n, 4, generator=g),
        log_scales=log_scales.float(),
        logit_opacities=torch.randn(n, generator=g) + 1.0,
        sh=sh,
    )
