"""TSDF fusion + marching tetrahedra on ray-cast depth maps of known shapes, the mesh PLY writer, and the 2DGS
losses on hand-computed inputs."""

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData
from render_helpers import look_at

from gsplat_py.errors import ParameterError
from gsplat_py.io.mesh_ply import write_mesh_ply
from gsplat_py.tools.tsdf import marching_tetrahedra, mesh_from_depth_maps
from gsplat_py.training.surfels import (
    SurfelConfig,
    distortion_loss,
    normal_consistency_loss,
    surfel_regularisation,
)

WIDTH, HEIGHT, FOCAL = 64, 48, 60.0
K = torch.tensor([[FOCAL, 0.0, WIDTH / 2], [0.0, FOCAL, HEIGHT / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
SPHERE_CENTRE, SPHERE_RADIUS = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64), 0.6
BOX_LOW = torch.tensor([-0.5, -0.3, -0.4], dtype=torch.float64)
BOX_HIGH = torch.tensor([0.4, 0.5, 0.3], dtype=torch.float64)
VOXEL = 0.02


def camera_ring() -> torch.Tensor:
    """world-to-camera [16, 4, 4]: two rings of 8 cameras (above and below the equator) at distance ~2.5,
    looking at the origin."""
    poses = [
        look_at(np.array([2.4 * math.cos(a), 2.4 * math.sin(a), height]), np.zeros(3))
        for height in (0.8, -0.8)
        for a in (2.0 * math.pi * (i + 0.5 * (height < 0)) / 8 for i in range(8))
    ]
    return torch.linalg.inv(torch.tensor(np.stack(poses)))


def rays(world_to_camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel centre's ray: (origin [3], direction [H, W, 3]) in world units, scaled so that the
    parameter along the ray is the camera-space z-depth."""
    rows, columns = torch.meshgrid(
        torch.arange(HEIGHT, dtype=torch.float64) + 0.5,
        torch.arange(WIDTH, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    camera_dirs = torch.stack(
        [(columns - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], torch.ones_like(rows)], -1
    )
    rotation, translation = world_to_camera[:3, :3], world_to_camera[:3, 3]
    return -rotation.T @ translation, camera_dirs @ rotation  # R^T d


def sphere_depth(world_to_camera: torch.Tensor) -> torch.Tensor:
    origin, direction = rays(world_to_camera)
    offset = origin - SPHERE_CENTRE
    a = (direction * direction).sum(-1)
    b = 2.0 * (direction * offset).sum(-1)
    c = float(offset @ offset) - SPHERE_RADIUS**2
    disc = b * b - 4 * a * c
    t = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
    return torch.where(disc > 0, t, 0.0)


def box_depth(world_to_camera: torch.Tensor) -> torch.Tensor:
    origin, direction = rays(world_to_camera)
    safe = torch.where(direction.abs() < 1e-12, 1e-12, direction)
    t1, t2 = (BOX_LOW - origin) / safe, (BOX_HIGH - origin) / safe
    near = torch.minimum(t1, t2).amax(-1)
    far = torch.maximum(t1, t2).amin(-1)
    return torch.where((far > near) & (near > 0), near, 0.0)


def sphere_distance(points: torch.Tensor) -> torch.Tensor:
    return ((points - SPHERE_CENTRE).norm(dim=-1) - SPHERE_RADIUS).abs()


def box_distance(points: torch.Tensor) -> torch.Tensor:
    """Unsigned distance to the box's surface (inside too)."""
    centre, half = (BOX_LOW + BOX_HIGH) / 2, (BOX_HIGH - BOX_LOW) / 2
    q = (points - centre).abs() - half
    outside = q.clamp(min=0).norm(dim=-1)
    inside = q.amax(-1).clamp(max=0)
    return (outside + inside).abs()


def sphere_samples(count: int) -> torch.Tensor:
    direction = torch.randn(count, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return SPHERE_CENTRE + SPHERE_RADIUS * direction / direction.norm(dim=-1, keepdim=True)


def box_samples(count: int) -> torch.Tensor:
    per_face = count // 6
    generator = torch.Generator().manual_seed(1)
    faces = []
    for axis in range(3):
        for end in (BOX_LOW, BOX_HIGH):
            u = torch.rand(per_face, 3, generator=generator, dtype=torch.float64)
            points = BOX_LOW + u * (BOX_HIGH - BOX_LOW)
            points[:, axis] = end[axis]
            faces.append(points)
    return torch.cat(faces)


def chamfer(vertices: torch.Tensor, distance_to_surface, surface_samples: torch.Tensor) -> float:
    """Mean of (mesh vertices -> true surface, exact) and (true surface samples -> nearest mesh vertex)."""
    if len(vertices) == 0:
        return math.inf
    accuracy = distance_to_surface(vertices).mean()
    completeness = torch.cat(
        [torch.cdist(block, vertices).amin(dim=1) for block in surface_samples.split(128)]
    )
    return float((accuracy + completeness.mean()) / 2)


def mesh_of(depth_of, world_to_cameras: torch.Tensor, **options):
    depths = [depth_of(matrix) for matrix in world_to_cameras]
    Ks = K.expand(len(world_to_cameras), 3, 3)
    return mesh_from_depth_maps(depths, world_to_cameras, Ks, depth_trunc=5.0, voxel_size=VOXEL, **options)


@pytest.mark.parametrize(
    "depth_of, distance, samples",
    [(sphere_depth, sphere_distance, sphere_samples), (box_depth, box_distance, box_samples)],
    ids=["sphere", "box"],
)
def test_tsdf_mesh_of_ray_cast_depth_is_within_a_voxel_of_the_true_surface(depth_of, distance, samples):
    cameras = camera_ring()
    depths = [depth_of(matrix) for matrix in cameras]
    Ks = K.expand(len(cameras), 3, 3)
    mesh = mesh_from_depth_maps(depths, cameras, Ks, depth_trunc=5.0, voxel_size=VOXEL)
    assert len(mesh.faces) > 1000
    # Measured 0.27 (sphere) and 0.32 (box) voxels: 64 x 48 pixels at ~2 units, a pixel is ~2 voxels.
    assert chamfer(mesh.vertices, distance, samples(1000)) < 0.5 * VOXEL
    # Mutation: the poses given as camera-to-world (the classic convention slip) do not make the shape.
    inverted = mesh_from_depth_maps(depths, torch.linalg.inv(cameras), Ks, depth_trunc=5.0, voxel_size=VOXEL)
    assert chamfer(inverted.vertices, distance, samples(1000)) > 5 * VOXEL


def test_tsdf_mesh_shows_one_wrong_camera_pose():
    cameras = camera_ring()
    depths = [sphere_depth(matrix) for matrix in cameras]
    Ks = K.expand(len(cameras), 3, 3)
    mesh = mesh_from_depth_maps(depths, cameras, Ks, depth_trunc=5.0, voxel_size=VOXEL)
    assert float(sphere_distance(mesh.vertices).max()) < 2 * VOXEL  # every vertex within 2 voxels
    # One of the 16 cameras 0.1 units (5 voxels) off: its depth carves into the sphere beside its view.
    wrong = cameras.clone()
    wrong[3, 0, 3] += 0.1
    bad = mesh_from_depth_maps(depths, wrong, Ks, depth_trunc=5.0, voxel_size=VOXEL)
    assert float(sphere_distance(bad.vertices).max()) > 3 * VOXEL


def test_sphere_mesh_is_closed_outward_and_of_the_right_volume():
    # with a camera above and one below, every part of the sphere is seen: the mesh has no boundary
    poles = [look_at(np.array([0.0, 0.0, z]), np.zeros(3), up=(1.0, 0.0, 0.0)) for z in (2.4, -2.4)]
    cameras = torch.cat([camera_ring(), torch.linalg.inv(torch.tensor(np.stack(poles)))])
    mesh = mesh_of(sphere_depth, cameras)
    faces = mesh.faces
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, undirected = torch.unique(edges.sort(dim=1).values, dim=0, return_counts=True)
    _, directed = torch.unique(edges, dim=0, return_counts=True)
    assert bool((undirected == 2).all()) and bool((directed == 1).all())  # closed, consistently oriented
    a, b, c = (mesh.vertices[faces[:, i]] - SPHERE_CENTRE for i in range(3))
    volume = float((a * torch.linalg.cross(b, c)).sum() / 6)  # positive: normals point out
    assert volume == pytest.approx(4 / 3 * math.pi * SPHERE_RADIUS**3, rel=0.02)


def test_mesh_colours_come_from_the_views():
    cameras = camera_ring()
    colours = [torch.tensor([0.2, 0.6, 0.9]).expand(HEIGHT, WIDTH, 3) for _ in cameras]
    mesh = mesh_of(sphere_depth, cameras, colors=colours)
    assert mesh.colors is not None and torch.allclose(
        mesh.colors, torch.tensor([0.2, 0.6, 0.9]).double(), atol=1e-6
    )


def test_marching_tetrahedra_exact_on_a_plane():
    # values = x - 2.25 on a 6^3 grid: every vertex lies on the plane x = 2.25, normals along +x
    values = torch.arange(6.0)[:, None, None].expand(6, 6, 6) - 2.25
    vertices, faces, _ = marching_tetrahedra(values, torch.ones(6, 6, 6, dtype=torch.bool))
    assert torch.allclose(vertices[:, 0], torch.full((len(vertices),), 2.25, dtype=torch.float64))
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    normals = torch.linalg.cross(b - a, c - a)
    assert bool((normals[:, 0] > 0).all()) and float(normals[:, 0].sum()) / 2 == pytest.approx(25.0)
    # an invalid voxel removes the cubes around it
    valid = torch.ones(6, 6, 6, dtype=torch.bool)
    valid[2, 2, 2] = False
    _, fewer, _ = marching_tetrahedra(values, valid)
    assert len(fewer) < len(faces)


def test_bad_mesh_parameters_are_named():
    cameras = camera_ring()[:2]
    depths = [sphere_depth(matrix) for matrix in cameras]
    Ks = K.expand(2, 3, 3)
    with pytest.raises(ParameterError, match="^voxel_size: .*more than"):
        mesh_from_depth_maps(depths, cameras, Ks, depth_trunc=5.0, voxel_size=1e-4)
    with pytest.raises(ParameterError, match="^sdf_trunc: expected a positive distance"):
        mesh_from_depth_maps(depths, cameras, Ks, depth_trunc=5.0, sdf_trunc=0.0)
    with pytest.raises(ValueError, match="no view has a depth within depth_trunc"):
        mesh_from_depth_maps(depths, cameras, Ks, depth_trunc=0.5)


def test_mesh_ply_reads_back_with_plyfile(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
    path = tmp_path / "mesh.ply"
    write_mesh_ply(path, vertices, faces, colors, comments=["gsplat_py frame colmap"])
    ply = PlyData.read(str(path))
    vertex = ply["vertex"]
    assert np.array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1), vertices)
    assert np.array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1), colors)
    assert np.array_equal(np.stack(ply["face"]["vertex_indices"]), faces)
    assert ply.comments == ["gsplat_py frame colmap"]
    with pytest.raises(ValueError, match="faces: expected vertex indices in"):
        write_mesh_ply(tmp_path / "bad.ply", vertices, faces + 1)
    assert not (tmp_path / "bad.ply").exists()


# ----------------------------------------------------------------------------------------- the 2DGS losses


def test_normal_consistency_loss_by_hand():
    # two pixels: agreeing normals with alpha 1 (loss 0), opposite normals with alpha 0.5 (1 + 0.5)
    rendered = torch.tensor([[[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]], requires_grad=True)
    surface = torch.tensor([[[[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]]])
    alphas = torch.tensor([[[[1.0], [0.5]]]], requires_grad=True)
    loss = normal_consistency_loss(rendered, surface, alphas)
    assert float(loss.detach()) == pytest.approx((0.0 + 1.5) / 2)
    loss.backward()
    assert alphas.grad is None  # the alphas weight, they are not trained by this loss
    assert torch.allclose(rendered.grad, -(surface * torch.tensor([1.0, 0.5])[None, None, :, None]) / 2)


def test_distortion_loss_and_schedule_by_hand():
    assert float(distortion_loss(torch.tensor([[[[0.25], [0.75]], [[1.0], [2.0]]]]))) == pytest.approx(1.0)
    config = SurfelConfig(normal_lambda=0.5, normal_start_iter=10, dist_lambda=2.0, dist_start_iter=3)
    assert [config.normal_weight(s) for s in (10, 11)] == [0.0, 0.5]
    assert [config.distortion_weight(s) for s in (3, 4)] == [0.0, 2.0]
    meta = {
        "render_normals": torch.tensor([[[[0.0, 0.0, 1.0]]]]),
        "surf_normals": torch.tensor([[[[0.0, 1.0, 0.0]]]]),
        "render_distort": torch.tensor([[[[0.125]]]]),
    }
    alphas = torch.ones(1, 1, 1, 1)
    assert surfel_regularisation(config, 3, alphas, meta) is None
    assert float(surfel_regularisation(config, 4, alphas, meta)) == pytest.approx(2.0 * 0.125)
    assert float(surfel_regularisation(config, 11, alphas, meta)) == pytest.approx(0.5 * 1.0 + 2.0 * 0.125)
