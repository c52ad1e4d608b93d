"""The .splat export: layout, sort order and round trip within its quantisation."""

import numpy as np
import pytest
import torch

from gsplat_py.io.splat import SPLAT_DTYPE, read_splat, write_splat
from gsplat_py.model import SH_C0, GaussianSplats


def random_splats(n: int = 200, seed: int = 0) -> GaussianSplats:
    g = torch.Generator().manual_seed(seed)
    return GaussianSplats(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 3.0,
        logit_opacities=torch.randn(n, generator=g) * 2.0,
        sh=torch.randn(n, 4, 3, generator=g),
    )


def test_splat_round_trip_within_quantisation(tmp_path):
    splats = random_splats()
    path = tmp_path / "scene.splat"
    write_splat(path, splats)
    assert path.stat().st_size == 32 * 200 and SPLAT_DTYPE.itemsize == 32
    decoded = read_splat(path)

    opacity = torch.sigmoid(splats.logit_opacities)
    order = torch.argsort(-torch.exp(splats.log_scales.double().sum(1)) * opacity.double(), stable=True)
    assert not torch.equal(order, torch.arange(200))  # the sort does something on this input
    assert torch.equal(decoded.means, splats.means[order])  # float32, exact, in size x opacity order
    assert decoded.sh_degree == 0
    assert torch.allclose(decoded.scales(), torch.exp(splats.log_scales[order]), rtol=1e-6)
    rgb = (0.5 + SH_C0 * splats.sh[order, 0]).clamp(0, 1)
    assert (0.5 + SH_C0 * decoded.sh[:, 0] - rgb).abs().max() <= 0.5 / 255 + 1e-6
    assert (decoded.opacities() - opacity[order]).abs().max() <= 0.5 / 255 + 1e-6
    unit = torch.nn.functional.normalize(splats.quats[order], dim=1)
    assert (decoded.quats - unit).abs().max() <= 0.5 / 128 + 1e-6


def test_splat_rejects_bad_input(tmp_path):
    bad = random_splats(3)
    bad.means[1, 0] = float("nan")
    with pytest.raises(ValueError, match="bad.splat: cannot write splats"):
        write_splat(tmp_path / "bad.splat", bad)
    assert not (tmp_path / "bad.splat").exists()
    (tmp_path / "short.splat").write_bytes(b"\0" * 40)
    with pytest.raises(ValueError, match="not a whole number of 32-byte splats"):
        read_splat(tmp_path / "short.splat")


def test_splat_byte_layout(tmp_path):
    one = GaussianSplats(
        means=torch.tensor([[1.0, 2.0, 3.0]]),
        quats=torch.tensor([[2.0, 0.0, 0.0, 0.0]]),
        log_scales=torch.log(torch.tensor([[0.5, 0.25, 2.0]])),
        logit_opacities=torch.tensor([0.0]),
        sh=torch.zeros(1, 1, 3),
    )
    write_splat(tmp_path / "one.splat", one)
    raw = (tmp_path / "one.splat").read_bytes()
    assert np.frombuffer(raw[:24], "<f4").tolist() == [1.0, 2.0, 3.0, 0.5, 0.25, 2.0]
    assert list(raw[24:28]) == [128, 128, 128, 128]  # grey 0.5 -> 127.5 rounds to 128, opacity 0.5
    assert list(raw[28:32]) == [255, 128, 128, 128]  # identity rotation: w = 1 -> 256 clamped to 255


def test_splat_files_load_as_models(tmp_path):
    """A .splat written byte by byte from the format's description (not by write_splat) loads as Gaussians of
    SH degree 0 that render its colours; opacities of 0 and 255 stay finite."""
    import struct

    from gsplat_py.tools.saved_models import load_model

    records = [
        ((0.5, -1.0, 2.0), (0.1, 0.2, 0.3), (255, 0, 51, 255), (255, 128, 128, 128)),
        ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (128, 64, 0, 0), (128, 128, 128, 128)),  # zero rotation bytes
        ((1.0, 1.0, 1.0), (0.0, 2.0, 2.0), (0, 0, 0, 191), (128, 255, 128, 128)),  # a zero scale
    ]
    data = b"".join(
        struct.pack("<3f3f4B4B", *position, *scale, *rgba, *rotation)
        for position, scale, rgba, rotation in records
    )
    (tmp_path / "model.splat").write_bytes(data)
    model = load_model(tmp_path / "model.splat")
    splats = model.splats
    splats.validate()  # all finite
    assert model.frame.name == "colmap" and model.run is None and splats.sh_degree == 0
    assert splats.means[0].tolist() == [0.5, -1.0, 2.0]
    assert torch.allclose(splats.scales()[0], torch.tensor([0.1, 0.2, 0.3]), rtol=1e-6)
    rendered_rgb = 0.5 + SH_C0 * splats.sh[:, 0]  # what the renderer shows for SH degree 0
    assert torch.allclose(rendered_rgb[0], torch.tensor([1.0, 0.0, 0.2]), atol=1e-6)
    assert torch.allclose(splats.opacities(), torch.tensor([1.0, 0.0, 191 / 255]), atol=1e-5)
    assert splats.quats[1].tolist() == [1.0, 0.0, 0.0, 0.0]  # identity for the zero quaternion
    assert torch.allclose(splats.quats[2], torch.tensor([0.0, 127 / 128, 0.0, 0.0]))
    assert load_model(tmp_path / "model.splat", "normalized").frame.name == "normalized"
