"""Moving Gaussians between world frames (SH rotation included) and `gsplat-py export`."""

import math

import numpy as np
import pytest
import torch
from render_helpers import look_at, random_splats

from gsplat_py.cli import main as cli_main
from gsplat_py.data.geometry import invert_similarity
from gsplat_py.data.world_frame import WorldFrame, frame_comments
from gsplat_py.io.ply import read_ply_comments, write_ply
from gsplat_py.io.splat import read_splat
from gsplat_py.model import SH_C0, GaussianSplats
from gsplat_py.rendering import rasterization
from gsplat_py.rendering.reference import spherical_harmonics
from gsplat_py.tools.frames import frame_change, rotate_sh, transform_cameras, transform_splats
from gsplat_py.tools.saved_models import load_model


def random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q if torch.linalg.det(q) > 0 else -q


def similarity(scale: float, seed: int, translation=(0.4, -1.3, 2.2)) -> torch.Tensor:
    transform = torch.eye(4, dtype=torch.float64)
    transform[:3, :3] = scale * random_rotation(seed)
    transform[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return transform


def cameras_around_origin(count: int = 3):
    poses = [
        look_at(np.array([3.0 * math.cos(a), 3.0 * math.sin(a), 1.0 + 0.3 * a]), np.zeros(3))
        for a in (0.3, 2.0, 4.1)[:count]
    ]
    viewmats = torch.linalg.inv(torch.from_numpy(np.stack(poses)))
    Ks = torch.tensor([[40.0, 0.0, 24.0], [0.0, 40.0, 18.0], [0.0, 0.0, 1.0]], dtype=torch.float64).repeat(
        count, 1, 1
    )
    return viewmats, Ks


def render(splats, viewmats, Ks):
    dtype = splats.means.dtype
    colors, alphas, _ = rasterization(
        splats.means,
        splats.quats,
        splats.scales(),
        splats.opacities(),
        splats.sh,
        viewmats.to(dtype),
        Ks.to(dtype),
        48,
        36,
        sh_degree=splats.sh_degree,
        render_mode="RGB+ED",
    )
    return colors, alphas


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_rotated_sh_seen_along_rotated_directions_is_unchanged(degree):
    g = torch.Generator().manual_seed(degree)
    sh = torch.randn(7, (degree + 1) ** 2, 3, generator=g, dtype=torch.float64)
    rotation = random_rotation(degree)
    dirs = torch.randn(7, 3, generator=g, dtype=torch.float64)
    expected = spherical_harmonics(degree, dirs, sh)
    assert torch.allclose(
        spherical_harmonics(degree, dirs @ rotation.T, rotate_sh(sh, rotation)), expected, atol=1e-12
    )
    assert not torch.allclose(spherical_harmonics(degree, dirs @ rotation.T, sh), expected, atol=1e-3)


def as_double(splats):
    return GaussianSplats(
        splats.means.double(),
        splats.quats.double(),
        splats.log_scales.double(),
        splats.logit_opacities.double(),
        splats.sh.double(),
    )


def test_moving_model_and_cameras_together_renders_the_same_image():
    # In float64, so that no Gaussian near a threshold (alpha 1/255, a depth tie) flips between the two.
    splats = as_double(random_splats(400, degree=3))
    viewmats, Ks = cameras_around_origin()
    transform = similarity(0.37, seed=5)
    colors, alphas = render(splats, viewmats, Ks)
    moved_colors, moved_alphas = render(
        transform_splats(splats, transform), transform_cameras(viewmats, transform), Ks
    )
    assert float(alphas.mean()) > 0.3  # the model fills a good part of the images
    assert (moved_colors[..., :3] - colors[..., :3]).abs().max() < 1e-9
    assert (moved_alphas - alphas).abs().max() < 1e-9
    depth_ratio = moved_colors[..., 3][alphas[..., 0] > 0.5] / colors[..., 3][alphas[..., 0] > 0.5]
    assert torch.allclose(
        depth_ratio, torch.full_like(depth_ratio, 0.37), rtol=1e-9
    )  # depths scale with the world
    # Without the SH rotation the view-dependent colour would be wrong.
    unrotated = transform_splats(splats, transform)
    unrotated.sh = splats.sh
    wrong, _ = render(unrotated, transform_cameras(viewmats, transform), Ks)
    assert (wrong[..., :3] - colors[..., :3]).abs().max() > 0.05


def test_transform_and_its_inverse_give_back_the_model():
    splats = random_splats(50, degree=2)
    transform = similarity(2.5, seed=1)
    back = transform_splats(transform_splats(splats, transform), invert_similarity(transform))
    assert torch.allclose(back.means, splats.means, atol=1e-5)
    assert torch.allclose(back.log_scales, splats.log_scales, atol=1e-5)
    assert torch.allclose(back.sh, splats.sh, atol=1e-5)
    assert torch.allclose(back.logit_opacities, splats.logit_opacities)
    assert torch.allclose(
        torch.nn.functional.normalize(back.quats, dim=1)
        * torch.sign(back.quats[:, :1] * splats.quats[:, :1]),
        torch.nn.functional.normalize(splats.quats, dim=1),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="not a scaled rotation"):
        transform_splats(splats, torch.diag(torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64)))


def test_frame_change_between_frames():
    transform = similarity(0.5, seed=2)
    normalized = WorldFrame.normalized(transform)
    assert frame_change(WorldFrame.colmap(), WorldFrame.colmap(), "x") is None
    assert frame_change(normalized, WorldFrame.normalized(None), "x") is None
    assert torch.allclose(frame_change(WorldFrame.colmap(), normalized, "x"), transform)
    assert torch.allclose(
        frame_change(normalized, WorldFrame.colmap(), "x") @ transform, torch.eye(4, dtype=torch.float64)
    )
    with pytest.raises(
        ValueError, match="cams.json: cannot convert from the normalized frame to the colmap frame"
    ):
        frame_change(WorldFrame.normalized(None), WorldFrame.colmap(), "cams.json")


# --------------------------------------------------------------------------------------------------------
# gsplat-py export


def test_export_splat_decodes_to_the_positions_and_colours(tmp_path, capsys):
    splats = random_splats(200, degree=1)
    write_ply(tmp_path / "scene.ply", splats)
    assert cli_main(["export", "--model", str(tmp_path / "scene.ply"), "--format", "splat"]) == 0
    assert "scene_colmap.splat" in capsys.readouterr().out
    decoded = read_splat(tmp_path / "scene_colmap.splat")
    order = torch.argsort(
        -torch.exp(splats.log_scales.double().sum(1)) * splats.opacities().double(), stable=True
    )
    assert torch.equal(decoded.means, splats.means[order])
    rgb = (0.5 + SH_C0 * splats.sh[order, 0]).clamp(0.0, 1.0)
    assert (0.5 + SH_C0 * decoded.sh[:, 0] - rgb).abs().max() <= 0.5 / 255 + 1e-6
    assert (decoded.opacities() - splats.opacities()[order]).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(decoded.scales(), splats.scales()[order], rtol=1e-6)


def test_export_to_another_frame_renders_the_same_from_the_moved_cameras(tmp_path):
    splats = random_splats(300, degree=3)
    transform = similarity(0.6, seed=3)
    normalized = WorldFrame.normalized(transform)
    write_ply(tmp_path / "model.ply", splats, frame_comments(normalized))
    assert (
        cli_main(
            [
                "export",
                "--model",
                str(tmp_path / "model.ply"),
                "--frame",
                "colmap",
                "--output",
                str(tmp_path / "out.ply"),
            ]
        )
        == 0
    )
    assert read_ply_comments(tmp_path / "out.ply") == ["gsplat_py frame colmap"]
    exported = load_model(tmp_path / "out.ply")
    assert exported.frame.name == "colmap" and exported.sh_degree == 3
    viewmats, Ks = cameras_around_origin()
    colors, alphas = render(splats, viewmats, Ks)
    moved, _ = render(exported.splats, transform_cameras(viewmats, invert_similarity(transform)), Ks)
    assert float(alphas.mean()) > 0.3
    # float32 through a similarity: all but (at most) a pixel or two where a Gaussian sits on a threshold
    assert float(((moved[..., :3] - colors[..., :3]).abs() > 1e-4).float().mean()) < 1e-3


def test_export_model_frame_round_trip_keeps_the_file(tmp_path):
    splats = random_splats(30, degree=2)
    frame = WorldFrame.normalized(similarity(1.7, seed=4))
    write_ply(tmp_path / "a.ply", splats, frame_comments(frame))
    assert cli_main(["export", "--model", str(tmp_path / "a.ply"), "--output", str(tmp_path / "b.ply")]) == 0
    again = load_model(tmp_path / "b.ply")
    assert torch.equal(again.frame.from_colmap, frame.from_colmap)
    assert torch.equal(again.splats.sh, splats.sh) and torch.equal(again.splats.means, splats.means)


def test_export_errors_are_one_line(tmp_path, capsys):
    write_ply(tmp_path / "a.ply", random_splats(5, degree=0))
    model = str(tmp_path / "a.ply")
    assert cli_main(["export", "--model", model]) == 1
    assert "--format: give one of ply, compressed-ply, spz, sog, splat (or an --output ending in" in (
        capsys.readouterr().err
    )
    assert cli_main(["export", "--model", model, "--format", "ply"]) == 0
    assert cli_main(["export", "--model", model, "--format", "ply"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("gsplat-py: error: --output ")
        and "a_colmap.ply: the file exists" in err
        and err.count("\n") == 1
    )
    assert cli_main(["export", "--model", model, "--format", "ply", "--overwrite"]) == 0
    assert (
        cli_main(["export", "--model", model, "--frame", "normalized", "--output", str(tmp_path / "n.splat")])
        == 1
    )
    assert (
        "exporting in the normalized frame needs the scene the model was trained on: give it with --data"
        in capsys.readouterr().err
    )
    assert cli_main(["export", "--model", str(tmp_path / "missing.ply"), "--format", "ply"]) == 1
    assert "missing.ply: no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "comments, message",
    [
        (
            ["gsplat_py frame world"],
            "header comment 'gsplat_py frame world': expected one of colmap, normalized",
        ),
        (
            ["gsplat_py frame normalized", "gsplat_py from_colmap 1 2 3"],
            "header comment 'gsplat_py from_colmap': expected 16 finite numbers",
        ),
        (
            ["gsplat_py frame normalized", "gsplat_py from_colmap 1 0 0 0 0 2 0 0 0 0 1 0 0 0 0 1"],
            "header comment 'gsplat_py from_colmap': the 3x3 part is not a scaled rotation",
        ),
    ],
)
def test_bad_frame_comments_are_named(tmp_path, comments, message):
    write_ply(tmp_path / "a.ply", random_splats(3, degree=0), comments)
    with pytest.raises(ValueError, match=message):
        load_model(tmp_path / "a.ply")
