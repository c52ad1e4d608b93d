"""`knn_mean_distance`, the initial scale of every Gaussian: exact (equal to a float64 brute force written
here, bit for bit) on clouds that exercise its grid search (clusters and far outliers, duplicates, planes,
lines, tiny clouds), the same in any chunking, and fast enough that a model without 3D points (100,000
random Gaussians) starts at once instead of after minutes."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input import colmap_records, time_limit, write_colmap_scene

from gsplat_py import model as model_module
from gsplat_py.cli import main as cli_main
from gsplat_py.data.normalize import normalize_scene, transform_points
from gsplat_py.io.colmap import read_model
from gsplat_py.model import knn_mean_distance
from gsplat_py.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def brute_force(points: torch.Tensor, k: int = 3, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Every pair's distance in float64, the k smallest per point (itself excluded), their mean; for the
    points ``rows`` (default: all)."""
    p = points.double()
    k = min(k, len(p) - 1)
    rows = torch.arange(len(p)) if rows is None else rows
    means = []
    for block in rows.split(256):
        difference = p[block, None, :] - p[None, :, :]
        squared = (difference * difference).sum(-1)
        squared[torch.arange(len(block)), block] = math.inf
        means.append(squared.topk(k, dim=1, largest=False).values.sort(dim=1).values.sqrt().mean(dim=1))
    return torch.cat(means).float()


def old_knn_mean_distance(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """The previous implementation (float32, |a|^2 + |b|^2 - 2 a.b over every pair), for comparison."""
    pts = points.float()
    k = min(k, len(pts) - 1)
    squared_norms = (pts * pts).sum(-1)
    d2 = squared_norms[:, None] + squared_norms[None, :] - 2.0 * (pts @ pts.T)
    d2.fill_diagonal_(math.inf)
    return torch.topk(d2, k, dim=1, largest=False).values.clamp_min(0.0).sqrt().mean(dim=1)


def clouds() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    uniform = torch.rand(3000, 3, generator=g)
    return {
        "uniform": uniform,
        "clusters and far outliers": torch.cat(
            [torch.randn(2000, 3, generator=g) * 0.01, torch.randn(40, 3, generator=g) * 100.0]
        ),
        "duplicates": torch.cat([uniform[:300]] * 3 + [uniform[300:305]]),
        "a plane": torch.cat([torch.rand(1500, 2, generator=g), torch.zeros(1500, 1)], dim=1),
        "a line": torch.cat([torch.rand(500, 1, generator=g), torch.zeros(500, 2)], dim=1),
        "far from the origin": uniform[:1000] * 0.001 + 1000.0,
        "two points": uniform[:2],
        "three points": uniform[:3],
        "one point five times": torch.ones(5, 3),
        "four copies and one other": torch.cat([torch.zeros(4, 3), torch.ones(1, 3)]),
    }


@pytest.mark.parametrize("name", list(clouds()))
def test_equal_to_a_float64_brute_force(name):
    points = clouds()[name]
    assert torch.equal(knn_mean_distance(points), brute_force(points))


def test_any_chunking_gives_the_same_result(monkeypatch):
    points = clouds()["clusters and far outliers"]
    expected = knn_mean_distance(points)
    monkeypatch.setattr(model_module, "_KNN_PAIR_BUDGET", 64)
    assert torch.equal(knn_mean_distance(points), expected)


def test_other_k_and_degenerate_sizes():
    points = clouds()["uniform"][:400]
    for k in (1, 2, 5):
        assert torch.equal(knn_mean_distance(points, k=k), brute_force(points, k=k))
    assert knn_mean_distance(points[:1]).tolist() == [1.0] and knn_mean_distance(points[:0]).shape == (0,)
    with pytest.raises(ValueError, match="finite"):
        knn_mean_distance(torch.tensor([[0.0, 0.0, 0.0], [math.nan, 0.0, 0.0]]))


def test_the_bundled_scene_gets_the_exact_values_the_old_code_approximated():
    # the SfM points in the normalised frame training starts from
    model = read_model(REPO / "data" / "snowmiku" / "sparse" / "0")
    camera_to_world = np.linalg.inv(np.stack([image.world_to_camera() for image in model.images.values()]))
    normalized = transform_points(normalize_scene(camera_to_world, model.points.xyz), model.points.xyz)
    points = torch.from_numpy(normalized).float()
    rows = torch.arange(0, len(points), 7)  # a sample, for the brute force's sake
    new, old = knn_mean_distance(points)[rows], old_knn_mean_distance(points)[rows]
    exact = brute_force(points, rows=rows)
    assert torch.equal(new, exact)
    # the old values differ only by their own float32 cancellation error
    old_error = (old - exact).abs()
    assert (old_error <= 0.2 * exact + 1e-6).all() and old_error.max() > 0


def test_a_model_without_points_starts_at_once_with_a_warning(tmp_path):
    records = colmap_records()
    records["points"] = []
    scene = write_colmap_scene(tmp_path / "scene", records)
    args = ["train", "--data", scene, "--data-factor", "1", "--steps", "1", "--eval-every", "0", "--quiet"]
    args += ["--train.save_renders", "false", "--output", tmp_path / "run"]
    with time_limit(), pytest.warns(UserWarning, match="the COLMAP model has no 3D points; using random"):
        assert cli_main([str(arg) for arg in args]) == 0
    assert load_checkpoint(tmp_path / "run")["params"]["means"].shape[0] == 100_000  # the default count
