"""Degenerate inputs of `rasterization`, on both backends: focal lengths so large that the 2D covariances
overflow float32, zero quaternions, singular world-to-camera matrices. No NaN image, no NaN gradient, no
error from deep inside torch: the background where nothing can be drawn, a culled Gaussian where it has no
rotation, a ValueError naming `viewmats` where a camera has no position."""

import pytest
import torch
from conftest import rasterization_unpacked as rasterization  # these tests read the [C, N] meta

from gsplat_py.rendering import _backend

W, H = 32, 24
BACKENDS = ["reference"] + (["cpp"] if _backend.extension_available() else [])


def scene(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(3)
    means = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    means[0] = torch.tensor([0.0, 0.0, 3.0])  # on the optical axis: projects inside any image
    return dict(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.full((n, 3), 0.05),
        opacities=torch.full((n,), 0.8),
        colors=torch.rand(n, 3, generator=g),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor([[[30.0, 0.0, W / 2], [0.0, 30.0, H / 2], [0.0, 0.0, 1.0]]]),
    )


def with_grad(inputs: dict) -> dict:
    return {key: value.clone().requires_grad_(True) for key, value in inputs.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("focal", [1e20, 1e30, 3e38])
def test_a_huge_focal_length_renders_the_background_with_finite_zero_gradients(backend, focal):
    inputs = with_grad(scene())
    inputs["Ks"] = torch.tensor(
        [[[focal, 0.0, W / 2], [0.0, focal, H / 2], [0.0, 0.0, 1.0]]], requires_grad=True
    )
    background = torch.tensor([[0.2, 0.4, 0.6]])
    colors, alphas, _ = rasterization(**inputs, width=W, height=H, backgrounds=background, backend=backend)
    assert torch.equal(colors.detach(), background[:, None, None, :].expand(1, H, W, 3))
    assert torch.equal(alphas.detach(), torch.zeros(1, H, W, 1))
    colors.sum().backward()
    for name, value in inputs.items():
        assert torch.equal(value.grad, torch.zeros_like(value)), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_quaternion_culls_its_gaussian_without_nan(backend):
    inputs = scene()
    inputs["quats"][2] = 0.0
    inputs = with_grad(inputs)
    colors, _, meta = rasterization(**inputs, width=W, height=H, backend=backend)
    assert meta["radii"][0, 2].tolist() == [0, 0] and (meta["radii"][0, :2] > 0).all()
    colors.sum().backward()
    for name, value in inputs.items():
        assert torch.isfinite(value.grad).all(), name
    assert torch.equal(inputs["quats"].grad[2], torch.zeros(4))
    # the same image as without that Gaussian
    kept = {
        key: torch.cat([value[:2], value[3:]]) if value.shape[0] == 6 else value
        for key, value in scene().items()
    }
    expected, _, _ = rasterization(**kept, width=W, height=H, backend=backend)
    assert torch.allclose(colors.detach(), expected, atol=1e-6)


def test_both_backends_cull_a_zero_quaternion_alike():
    if len(BACKENDS) < 2:
        pytest.skip("C++ extension not built")
    inputs = scene()
    inputs["quats"][1] = 0.0
    renders = [rasterization(**inputs, width=W, height=H, backend=backend) for backend in BACKENDS]
    assert torch.allclose(renders[0][0], renders[1][0], atol=1e-6)
    assert torch.equal(renders[0][2]["radii"], renders[1][2]["radii"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_singular_world_to_camera_matrix_with_sh_is_a_value_error_naming_viewmats(backend):
    inputs = scene()
    inputs["colors"] = torch.rand(6, 4, 3)
    inputs["viewmats"] = torch.cat([torch.eye(4)[None], torch.zeros(1, 4, 4)])
    inputs["Ks"] = inputs["Ks"].expand(2, 3, 3)
    with pytest.raises(ValueError, match=r"viewmats: camera 1 has a singular world-to-camera matrix"):
        rasterization(**inputs, width=W, height=H, sh_degree=1, backend=backend)
