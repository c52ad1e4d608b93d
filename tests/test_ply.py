"""Tests for gsplat_py.io.ply: Inria 3DGS PLY reader/writer."""

import math
import os

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from gsplat_py.io import ply as ply_module
from gsplat_py.io.ply import (
    VALID_F_REST_COUNTS,
    PlyFormatError,
    ply_property_names,
    read_ply,
    read_ply_comments,
    write_ply,
)
from gsplat_py.model import GaussianSplats


def random_splats(n: int, degree: int, seed: int = 0) -> GaussianSplats:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return GaussianSplats(
        means=torch.randn(n, 3, generator=g) * 3.0,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 3.0,
        logit_opacities=torch.randn(n, generator=g) * 2.0,
        sh=torch.randn(n, k, 3, generator=g) * 0.5,
    )


def assert_splats_equal(a: GaussianSplats, b: GaussianSplats) -> None:
    for name in ("means", "quats", "log_scales", "logit_opacities", "sh"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == torch.float32 and y.dtype == torch.float32, name
        assert x.device.type == "cpu", name
        assert x.shape == y.shape, (name, x.shape, y.shape)
        assert torch.equal(x, y), name


def inria_dtype(degree: int, float_type: str = "f4"):
    return [(name, float_type) for name in ply_property_names(degree)]


def write_with_plyfile(path, columns: dict, n: int, text: bool = False, types=None) -> None:
    """Write a vertex element with exactly the given columns (dict order), using plyfile."""
    types = types or {}
    dtype = [(name, types.get(name, "f8")) for name in columns]
    arr = np.empty(n, dtype=dtype)
    for name, values in columns.items():
        arr[name] = values
    PlyData([PlyElement.describe(arr, "vertex")], text=text).write(str(path))


def valid_columns(n: int, degree: int = 0) -> dict:
    """Plain valid Inria columns (float64 values) for hand-made files."""
    rng = np.random.default_rng(1)
    return {name: rng.standard_normal(n) for name in ply_property_names(degree)}


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_bit_exact(tmp_path, degree):
    splats = random_splats(257, degree, seed=degree)
    # Awkward float32 values must survive bit-exactly too.
    splats.means[0] = torch.tensor([-0.0, 1e-45, 3.4028235e38])  # -0, smallest subnormal, float32 max
    splats.sh[1, 0] = torch.tensor([float.fromhex("0x1.000002p0"), -1e-40, 0.0])
    path = tmp_path / f"scene_deg{degree}.ply"
    write_ply(path, splats)
    back = read_ply(path)
    assert back.sh_degree == degree
    assert back.sh.shape == (257, (degree + 1) ** 2, 3)
    assert_splats_equal(back, splats)
    assert torch.equal(back.means[0].view(torch.int32), splats.means[0].view(torch.int32))  # keeps -0.0


@pytest.mark.parametrize("degree", [0, 3])
def test_round_trip_empty(tmp_path, degree):
    splats = random_splats(0, degree)
    path = tmp_path / "empty.ply"
    write_ply(path, splats)
    back = read_ply(path)
    assert back.sh_degree == degree
    assert back.means.shape == (0, 3)
    assert back.quats.shape == (0, 4)
    assert back.log_scales.shape == (0, 3)
    assert back.logit_opacities.shape == (0,)
    assert back.sh.shape == (0, (degree + 1) ** 2, 3)
    assert len(back) == 0


def test_written_file_layout(tmp_path):
    """The exact header and byte layout, checked with plyfile and by size."""
    degree, n = 2, 5
    splats = random_splats(n, degree)
    path = tmp_path / "layout.ply"
    write_ply(path, splats)

    data = PlyData.read(str(path))
    assert not data.text and data.byte_order == "<"
    assert [el.name for el in data.elements] == ["vertex"]
    vertex = data["vertex"]
    names = [p.name for p in vertex.properties]
    expected = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(24)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )
    assert names == expected
    assert all(p.val_dtype in ("f4", "float", "float32") for p in vertex.properties)
    assert vertex.data.dtype == np.dtype([(name, "<f4") for name in expected])
    assert len(vertex.data) == n

    header = path.read_bytes().split(b"end_header\n")[0] + b"end_header\n"
    assert header.startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\n")
    assert path.stat().st_size == len(header) + n * len(expected) * 4

    for name in ("nx", "ny", "nz"):
        assert np.array_equal(vertex.data[name], np.zeros(n, dtype=np.float32))
    # Channel-major f_rest, DC, opacity, scales and wxyz quats as documented.
    sh = splats.sh.numpy()
    for c in range(3):
        assert np.array_equal(vertex.data[f"f_dc_{c}"], sh[:, 0, c])
        for k in range(1, 9):
            assert np.array_equal(vertex.data[f"f_rest_{c * 8 + (k - 1)}"], sh[:, k, c])
    assert np.array_equal(vertex.data["opacity"], splats.logit_opacities.numpy())
    for i in range(3):
        assert np.array_equal(vertex.data[f"scale_{i}"], splats.log_scales.numpy()[:, i])
    for i in range(4):
        assert np.array_equal(vertex.data[f"rot_{i}"], splats.quats.numpy()[:, i])


# --------------------------------------------------------------------------------------------------
# Files written by someone else
# --------------------------------------------------------------------------------------------------


def test_read_foreign_file_shuffled_float64_with_extras(tmp_path):
    """SH degree 1, float64, properties in an unusual order, extra properties, extra element."""
    n = 4
    cols = {}
    # Distinct value per (row, channel, coefficient): 1000*row + 100*channel + k.
    row = np.arange(n, dtype=np.float64)
    cols["red"] = np.array([255, 0, 10, 20], dtype=np.uint8)
    for i in reversed(range(9)):  # f_rest_8 .. f_rest_0
        c, k = divmod(i, 3)  # channel-major: i = c*(K-1) + (k-1), K-1 = 3
        cols[f"f_rest_{i}"] = 1000 * row + 100 * c + (k + 1)
    cols["rot_3"] = row + 0.4
    cols["opacity"] = -row - 0.5
    cols["scale_2"] = row * 0.01 - 2.0
    cols["z"] = row + 0.3
    cols["f_dc_2"] = 1000 * row + 200
    cols["nx"] = np.full(n, 7.0)
    cols["rot_0"] = row + 0.1
    cols["y"] = row + 0.2
    cols["f_dc_0"] = 1000 * row + 0
    cols["scale_0"] = row * 0.01 - 4.0
    cols["rot_2"] = row + 0.3
    cols["f_dc_1"] = 1000 * row + 100
    cols["x"] = row + 0.1
    cols["scale_1"] = row * 0.01 - 3.0
    cols["green"] = np.array([1, 2, 3, 4], dtype=np.uint8)
    cols["rot_1"] = row + 0.2
    cols["blue"] = np.array([5, 6, 7, 8], dtype=np.uint8)
    cols["f_dc_3"] = np.full(n, 99.0)  # unknown, ignored
    types = {"red": "u1", "green": "u1", "blue": "u1"}
    path = tmp_path / "foreign.ply"
    dtype = [(name, types.get(name, "f8")) for name in cols]
    arr = np.empty(n, dtype=dtype)
    for name, values in cols.items():
        arr[name] = values
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(arr, "vertex"), PlyElement.describe(faces, "face")], byte_order=">").write(
        str(path)
    )

    s = read_ply(path)
    assert s.sh_degree == 1
    assert s.sh.shape == (n, 4, 3)
    f32 = torch.float32
    t_row = torch.arange(n, dtype=torch.float64)
    expected_sh = torch.empty(n, 4, 3, dtype=torch.float64)
    for c in range(3):
        expected_sh[:, 0, c] = 1000 * t_row + 100 * c
        for k in range(1, 4):
            expected_sh[:, k, c] = 1000 * t_row + 100 * c + k
    assert torch.equal(s.sh, expected_sh.to(f32))
    # Spot-check the mapping by hand: row 2, green channel (c=1), coefficient k=3 is f_rest_{1*3+2}=f_rest_5.
    assert s.sh[2, 3, 1].item() == 2000 + 100 + 3
    assert s.sh[3, 1, 2].item() == 3000 + 200 + 1  # blue, k=1 -> f_rest_6
    assert torch.equal(s.means, torch.stack([t_row + 0.1, t_row + 0.2, t_row + 0.3], -1).to(f32))
    assert torch.equal(s.quats, torch.stack([t_row + 0.1, t_row + 0.2, t_row + 0.3, t_row + 0.4], -1).to(f32))
    assert torch.equal(
        s.log_scales, torch.stack([t_row * 0.01 - 4, t_row * 0.01 - 3, t_row * 0.01 - 2], -1).to(f32)
    )
    assert torch.equal(s.logit_opacities, (-t_row - 0.5).to(f32))
    for name in ("means", "quats", "log_scales", "logit_opacities", "sh"):
        assert getattr(s, name).dtype == torch.float32
    # Activations.
    assert torch.equal(s.scales(), torch.exp(s.log_scales))
    assert torch.equal(s.opacities(), torch.sigmoid(s.logit_opacities))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_read_ascii(tmp_path, degree):
    n = 3
    cols = valid_columns(n, degree)
    path = tmp_path / "ascii.ply"
    write_with_plyfile(path, cols, n, text=True, types={name: "f4" for name in cols})
    s = read_ply(path)
    assert s.sh_degree == degree
    k = (degree + 1) ** 2
    expected = np.stack([cols["f_dc_0"], cols["f_dc_1"], cols["f_dc_2"]], -1).astype(np.float32)
    assert torch.equal(s.sh[:, 0], torch.from_numpy(expected))
    for c in range(3):
        for kk in range(1, k):
            col = cols[f"f_rest_{c * (k - 1) + kk - 1}"].astype(np.float32)
            assert torch.equal(s.sh[:, kk, c], torch.from_numpy(col))


def test_read_ascii_empty(tmp_path):
    path = tmp_path / "empty_ascii.ply"
    write_with_plyfile(path, valid_columns(0, 1), 0, text=True)
    s = read_ply(path)
    assert s.sh.shape == (0, 4, 3)
    assert s.means.shape == (0, 3)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def expect_error(path, *fragments):
    with pytest.raises(PlyFormatError) as info:
        read_ply(path)
    message = str(info.value)
    assert path.name in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(info.value, ValueError)
    return message


def test_error_not_a_ply(tmp_path):
    path = tmp_path / "garbage.ply"
    path.write_bytes(b"hello, this is not a ply file\n\x00\xff")
    expect_error(path, "not a valid PLY file")


def test_error_empty_file(tmp_path):
    path = tmp_path / "zero_bytes.ply"
    path.write_bytes(b"")
    expect_error(path, "not a valid PLY file")


def test_error_truncated(tmp_path):
    path = tmp_path / "truncated.ply"
    write_ply(path, random_splats(10, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    expect_error(path, "truncated: the header declares 10 'vertex' rows")


def test_error_missing_file(tmp_path):
    path = tmp_path / "does_not_exist.ply"
    expect_error(path, "cannot read file: no such file")


def test_error_directory(tmp_path):
    path = tmp_path / "a_directory.ply"
    path.mkdir()
    expect_error(path, "cannot read file")


def test_error_no_vertex_element(tmp_path):
    path = tmp_path / "points.ply"
    arr = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(arr, "point")]).write(str(path))
    expect_error(path, "no 'vertex' element", "point")


@pytest.mark.parametrize("missing", ["x", "z", "f_dc_1", "opacity", "scale_2", "rot_0", "rot_3"])
def test_error_missing_property(tmp_path, missing):
    path = tmp_path / "scene.ply"
    cols = valid_columns(5, 1)
    del cols[missing]
    write_with_plyfile(path, cols, 5)
    message = expect_error(path, f"missing property '{missing}'")
    assert message == f"{path}: missing property '{missing}'"


@pytest.mark.parametrize("count", [1, 3, 8, 10, 23, 30, 46, 48])
def test_error_f_rest_count(tmp_path, count):
    path = tmp_path / "sh_count.ply"
    cols = valid_columns(2, 0)
    for i in range(count):
        cols[f"f_rest_{i}"] = np.zeros(2)
    write_with_plyfile(path, cols, 2)
    message = expect_error(
        path,
        f"{count} f_rest_* properties match no SH degree",
        "0 (degree 0)",
        "9 (degree 1)",
        "24 (degree 2)",
        "45 (degree 3)",
        "72 (degree 4)",
    )
    assert sorted(VALID_F_REST_COUNTS) == [0, 9, 24, 45, 72]
    assert "valid counts" in message


def test_error_f_rest_not_contiguous(tmp_path):
    path = tmp_path / "gappy.ply"
    cols = valid_columns(3, 1)  # f_rest_0 .. f_rest_8
    del cols["f_rest_5"]
    write_with_plyfile(path, cols, 3)
    expect_error(path, "f_rest indices are not contiguous", "f_rest_0..f_rest_8", "missing (f_rest_5)")


def test_error_f_rest_not_starting_at_zero(tmp_path):
    path = tmp_path / "shifted.ply"
    cols = valid_columns(3, 0)
    for i in range(1, 10):  # f_rest_1 .. f_rest_9: nine properties, but f_rest_0 is missing
        cols[f"f_rest_{i}"] = np.zeros(3)
    write_with_plyfile(path, cols, 3)
    expect_error(path, "not contiguous", "missing (f_rest_0)")


def test_error_f_rest_leading_zero(tmp_path):
    path = tmp_path / "leading_zero.ply"
    cols = valid_columns(3, 0)
    cols["f_rest_05"] = np.zeros(3)
    write_with_plyfile(path, cols, 3)
    expect_error(path, "malformed property name 'f_rest_05'")


@pytest.mark.parametrize(
    "prop,row,value,float_type",
    [
        ("opacity", 3, float("nan"), "f4"),
        ("scale_1", 0, float("inf"), "f8"),
        ("f_rest_7", 6, float("-inf"), "f4"),
        ("x", 6, float("nan"), "f8"),
    ],
)
def test_error_non_finite(tmp_path, prop, row, value, float_type):
    path = tmp_path / "nonfinite.ply"
    n = 7
    cols = valid_columns(n, 1)
    cols[prop] = cols[prop].copy()
    cols[prop][row] = value
    cols[prop][n - 1] = value  # a later bad row too (the same one when row == n - 1): the first is reported
    write_with_plyfile(path, cols, n, types={name: float_type for name in cols})
    expect_error(path, f"property '{prop}'", f"non-finite value ({value}) at row {row}")


def test_error_double_overflows_float32(tmp_path):
    path = tmp_path / "overflow.ply"
    cols = valid_columns(4, 0)
    cols["scale_0"] = cols["scale_0"].copy()
    cols["scale_0"][2] = 1e300
    write_with_plyfile(path, cols, 4)
    expect_error(path, "property 'scale_0'", "row 2", "overflows float32")


def test_error_integer_property(tmp_path):
    path = tmp_path / "ints.ply"
    cols = valid_columns(4, 0)
    write_with_plyfile(path, cols, 4, types={"opacity": "i4"})
    expect_error(path, "property 'opacity'", "expected float or double")


def test_error_list_property(tmp_path):
    path = tmp_path / "lists.ply"
    n = 2
    cols = valid_columns(n, 0)
    del cols["rot_1"]
    dtype = [(name, "f4") for name in cols] + [("rot_1", "O")]
    arr = np.empty(n, dtype=dtype)
    for name, values in cols.items():
        arr[name] = values
    arr["rot_1"] = [np.array([1.0, 2.0], dtype=np.float32)] * n
    PlyData([PlyElement.describe(arr, "vertex", val_types={"rot_1": "f4"})]).write(str(path))
    expect_error(path, "property 'rot_1' is a list property")


def test_read_ignores_unrelated_list_property(tmp_path):
    path = tmp_path / "extra_list.ply"
    n = 2
    cols = valid_columns(n, 0)
    dtype = [(name, "f4") for name in cols] + [("neighbours", "O")]
    arr = np.empty(n, dtype=dtype)
    for name, values in cols.items():
        arr[name] = values
    arr["neighbours"] = [np.array([1, 2, 3], dtype=np.int32)] * n
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))
    s = read_ply(path)
    assert torch.equal(s.logit_opacities, torch.from_numpy(cols["opacity"].astype(np.float32)))


def test_error_message_uses_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cols = valid_columns(2, 0)
    del cols["scale_2"]
    write_with_plyfile(tmp_path / "scene.ply", cols, 2)
    with pytest.raises(PlyFormatError) as info:
        read_ply("scene.ply")
    assert str(info.value) == "scene.ply: missing property 'scale_2'"


# --------------------------------------------------------------------------------------------------
# Atomic writes and writer validation
# --------------------------------------------------------------------------------------------------


def dir_listing(folder):
    return sorted(os.listdir(folder))


def test_atomic_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "out.ply"
    write_ply(path, random_splats(20, 1))
    assert dir_listing(tmp_path) == ["out.ply"]
    # Overwriting an existing file replaces it completely (also with a smaller one).
    write_ply(path, random_splats(3, 0, seed=5))
    assert dir_listing(tmp_path) == ["out.ply"]
    assert_splats_equal(read_ply(path), random_splats(3, 0, seed=5))


def test_write_accepts_str_path_and_other_dtypes(tmp_path):
    s64 = random_splats(6, 2)
    s64 = GaussianSplats(
        **{k: getattr(s64, k).double() for k in ("means", "quats", "log_scales", "logit_opacities", "sh")}
    )
    path = str(tmp_path / "f64.ply")
    write_ply(path, s64)
    assert_splats_equal(read_ply(path), random_splats(6, 2))  # float32 -> float64 -> float32 is exact


@pytest.mark.parametrize(
    "field,bad_value,fragment",
    [
        ("quats", torch.zeros(9, 4), "quats has shape [9, 4]; expected [N, 4] with N=10"),
        ("log_scales", torch.zeros(10, 2), "log_scales has shape [10, 2]"),
        ("logit_opacities", torch.zeros(10, 1), "logit_opacities has shape [10, 1]; expected [N]"),
        ("sh", torch.zeros(11, 4, 3), "sh has shape [11, 4, 3]"),
        ("sh", torch.zeros(10, 5, 3), "K in [1, 4, 9, 16, 25]"),
        ("sh", torch.zeros(10, 36, 3), "K in [1, 4, 9, 16, 25]"),
        ("means", torch.zeros(10, 3, dtype=torch.int32), "means must have a floating-point dtype"),
    ],
)
def test_failed_write_keeps_old_file(tmp_path, field, bad_value, fragment):
    path = tmp_path / "keep.ply"
    good = random_splats(10, 1)
    write_ply(path, good)
    before = path.read_bytes()

    bad = random_splats(10, 1, seed=3)
    setattr(bad, field, bad_value)
    with pytest.raises(ValueError) as info:
        write_ply(path, bad)
    assert fragment in str(info.value), str(info.value)
    assert "keep.ply" in str(info.value)
    assert path.read_bytes() == before
    assert dir_listing(tmp_path) == ["keep.ply"]
    assert_splats_equal(read_ply(path), good)


def test_write_rejects_non_finite(tmp_path):
    path = tmp_path / "nan.ply"
    bad = random_splats(10, 0)
    bad.logit_opacities[4] = float("nan")
    with pytest.raises(ValueError, match=r"logit_opacities has a non-finite value \(NaN or inf\) at row 4"):
        write_ply(path, bad)
    bad = random_splats(10, 2)
    bad.sh[7, 5, 2] = float("inf")
    with pytest.raises(ValueError, match="sh has a non-finite value .* at row 7"):
        write_ply(path, bad)
    assert dir_listing(tmp_path) == []


def test_write_rejects_non_tensor(tmp_path):
    bad = random_splats(4, 0)
    bad.means = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="means must be a torch.Tensor"):
        write_ply(tmp_path / "x.ply", bad)
    assert dir_listing(tmp_path) == []


def test_failure_during_write_cleans_up(tmp_path, monkeypatch):
    """A failure after the temp file exists (here: in os.replace) removes it and keeps the old file."""
    path = tmp_path / "scene.ply"
    good = random_splats(8, 3)
    write_ply(path, good)
    before = path.read_bytes()

    def failing_replace(src, dst):
        assert os.path.dirname(os.fspath(src)) == os.path.dirname(os.fspath(dst))  # same folder
        assert os.path.getsize(src) > 0
        raise OSError("simulated failure")

    monkeypatch.setattr(ply_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated failure"):
        write_ply(path, random_splats(8, 3, seed=9))
    monkeypatch.undo()
    assert dir_listing(tmp_path) == ["scene.ply"]
    assert path.read_bytes() == before


def test_write_into_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_ply(tmp_path / "no_such_dir" / "a.ply", random_splats(2, 0))
    assert dir_listing(tmp_path) == []


def test_written_file_permissions_follow_umask(tmp_path):
    path = tmp_path / "perm.ply"
    old = os.umask(0o022)
    try:
        write_ply(path, random_splats(2, 0))
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


# --------------------------------------------------------------------------------------------------
# Dataclass helpers
# --------------------------------------------------------------------------------------------------


def test_dataclass_helpers():
    s = random_splats(5, 2)
    assert s.sh_degree == 2
    assert len(s) == 5 and s.num_gaussians == 5
    assert torch.equal(s.scales(), torch.exp(s.log_scales))
    assert torch.equal(s.opacities(), torch.sigmoid(s.logit_opacities))
    assert torch.all((s.opacities() > 0) & (s.opacities() < 1))
    s.sh = torch.zeros(5, 7, 3)
    with pytest.raises(ValueError, match="K in"):
        _ = s.sh_degree
    assert ply_property_names(0)[-8:] == [
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    assert len(ply_property_names(3)) == 17 + 45
    assert len(ply_property_names(4)) == 17 + 72  # gsplat's degree 4
    with pytest.raises(ValueError):
        ply_property_names(5)
    assert math.isclose(
        s.opacities()[0].item(), 1 / (1 + math.exp(-s.logit_opacities[0].item())), rel_tol=1e-6
    )


def test_comments_are_written_in_the_header_and_read_back(tmp_path):
    splats = random_splats(4, 1)
    write_ply(tmp_path / "a.ply", splats, ["gsplat_py frame colmap", "made by a test"])
    assert read_ply_comments(tmp_path / "a.ply") == ["gsplat_py frame colmap", "made by a test"]
    assert_splats_equal(read_ply(tmp_path / "a.ply"), splats)  # plyfile reads the file as before
    with pytest.raises(ValueError, match="b.ply: PLY comment 'two.*lines' is not one line of ASCII"):
        write_ply(tmp_path / "b.ply", splats, ["two\nlines"])
    assert not (tmp_path / "b.ply").exists()
    (tmp_path / "c.ply").write_bytes(b"not a ply")
    with pytest.raises(PlyFormatError, match="c.ply: not a valid PLY file"):
        read_ply_comments(tmp_path / "c.ply")
