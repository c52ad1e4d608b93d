"""The compressed PLY (SuperSplat / PlayCanvas): files built here from the layout (PlayCanvas's
splat-transform reader and writer describe it) by an independent writer and read back, the bytes our writer
produces decoded independently, round-trip bounds and one-line errors for bad files."""

import math

import numpy as np
import pytest
import torch

from gsplat_py.io.compressed_ply import is_compressed_ply, read_compressed_ply, write_compressed_ply
from gsplat_py.io.packing import SplatFormatError
from gsplat_py.io.ply import read_ply_comments, write_ply
from gsplat_py.model import SH_C0, GaussianSplats

CHUNK_NAMES = [
    "min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
    "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
    "min_r", "min_g", "min_b", "max_r", "max_g", "max_b",
]  # fmt: skip
PACKED_NAMES = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]


# --------------------------------------------------------------------------------------------------------
# An independent writer and decoder of the layout


def compressed_ply(
    chunks, packed, sh=None, chunk_names=CHUNK_NAMES, comments=(), packed_type="uint"
) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments)]
    lines += [f"element chunk {len(chunks)}", *(f"property float {n}" for n in chunk_names)]
    lines += [f"element vertex {len(packed)}", *(f"property {packed_type} {n}" for n in PACKED_NAMES)]
    if sh is not None:
        lines += [f"element sh {len(sh)}", *(f"property uchar f_rest_{i}" for i in range(sh.shape[1]))]
    data = (
        np.asarray(chunks, "<f4").tobytes()
        + np.asarray(packed, "<u4" if packed_type == "uint" else "<f4").tobytes()
    )
    if sh is not None:
        data += np.asarray(sh, np.uint8).tobytes()
    return ("\n".join(lines) + "\nend_header\n").encode() + data


def unorm(value, bits):
    return (value & ((1 << bits) - 1)) / ((1 << bits) - 1)


def spec_decode(chunks: np.ndarray, packed: np.ndarray, sh: np.ndarray | None) -> dict:
    """The layout's decoding, Gaussian by Gaussian."""
    out = {k: [] for k in ("means", "log_scales", "colors", "alpha", "quats")}
    for i, (position, rotation, scale, color) in enumerate(packed.astype(np.int64)):
        c = chunks[i // 256].astype(np.float64)

        def lerp(low, high, t):
            return low * (1 - t) + high * t

        def triple(word, base, c=c):
            t = (unorm(word >> 21, 11), unorm(word >> 11, 10), unorm(word, 11))
            return [lerp(c[base + k], c[base + 3 + k], t[k]) for k in range(3)]

        out["means"].append(triple(position, 0))
        out["log_scales"].append(triple(scale, 6))
        out["colors"].append([lerp(c[12 + k], c[15 + k], unorm(color >> (24 - 8 * k), 8)) for k in range(3)])
        out["alpha"].append(unorm(color, 8))
        others = [(unorm(rotation >> shift, 10) - 0.5) * math.sqrt(2.0) for shift in (20, 10, 0)]
        largest = rotation >> 30
        quat = others[:largest] + [math.sqrt(max(0.0, 1 - sum(o * o for o in others)))] + others[largest:]
        out["quats"].append(quat)
    result = {k: np.array(v) for k, v in out.items()}
    if sh is not None:
        n = np.where(sh == 0, 0.0, np.where(sh == 255, 1.0, (sh + 0.5) / 256))
        result["rest"] = (n - 0.5) * 8
    return result


def check_against(splats: GaussianSplats, expected: dict) -> None:
    assert torch.allclose(splats.means.double(), torch.from_numpy(expected["means"]), rtol=1e-6, atol=1e-6)
    assert torch.allclose(splats.log_scales.double(), torch.from_numpy(expected["log_scales"]), atol=1e-5)
    colors = 0.5 + SH_C0 * splats.sh[:, 0].double()
    assert torch.allclose(colors, torch.from_numpy(expected["colors"]), atol=1e-6)
    alpha = np.clip(expected["alpha"], 1e-6, 1 - 1e-6)
    assert torch.allclose(splats.opacities().double(), torch.from_numpy(alpha), atol=1e-6)
    assert torch.allclose(splats.quats.double(), torch.from_numpy(expected["quats"]), atol=1e-6)
    if "rest" in expected:
        k = splats.sh.shape[1]
        rest = splats.sh[:, 1:].transpose(1, 2).reshape(len(splats), 3 * (k - 1))
        assert torch.allclose(rest.double(), torch.from_numpy(expected["rest"]), atol=1e-6)


def random_layout(rng, count: int, rest: int):
    chunks = rng.uniform(-3, 3, (math.ceil(count / 256), 18)).astype(np.float32)
    chunks[:, 3:6] = chunks[:, 0:3] + rng.uniform(0.1, 2, (len(chunks), 3))  # max > min
    chunks[:, 15:18] = chunks[:, 12:15] + 1.0
    packed = rng.integers(0, 2**32, (count, 4), dtype=np.uint64).astype(np.uint32)
    packed[:, 1] = (packed[:, 1] & 0xC0000000) | (rng.integers(300, 724, (count, 3)) << [20, 10, 0]).sum(1)
    sh = rng.integers(0, 256, (count, rest)).astype(np.uint8) if rest else None
    return chunks, packed, sh


# --------------------------------------------------------------------------------------------------------
# Files built from the layout


@pytest.mark.parametrize("rest", [0, 9, 45])
def test_reads_files_written_from_the_layout(tmp_path, rest):
    rng = np.random.default_rng(rest)
    chunks, packed, sh = random_layout(rng, 300, rest)  # two chunks, the second short
    path = tmp_path / "scene.ply"
    path.write_bytes(compressed_ply(chunks, packed, sh, comments=["made by a test"]))
    assert is_compressed_ply(path) and read_ply_comments(path) == ["made by a test"]
    splats = read_compressed_ply(path)
    assert splats.num_gaussians == 300 and splats.sh_degree == {0: 0, 9: 1, 45: 3}[rest]
    check_against(splats, spec_decode(chunks, packed, sh))


def test_reads_chunks_without_colour_bounds(tmp_path):
    chunks, packed, _ = random_layout(np.random.default_rng(7), 20, 0)
    path = tmp_path / "old.ply"
    path.write_bytes(compressed_ply(chunks[:, :12], packed, chunk_names=CHUNK_NAMES[:12]))
    splats = read_compressed_ply(path)
    expected = spec_decode(
        np.concatenate([chunks[:, :12], np.zeros((1, 3)), np.ones((1, 3))], 1), packed, None
    )
    check_against(splats, expected)  # colours stored directly, as bounds 0 and 1 would


# --------------------------------------------------------------------------------------------------------
# What our writer produces


def model(count: int, degree: int, seed: int = 0) -> GaussianSplats:
    g = torch.Generator().manual_seed(seed)
    return GaussianSplats(
        means=torch.randn(count, 3, generator=g) * 2.0,
        quats=torch.randn(count, 4, generator=g),
        log_scales=torch.randn(count, 3, generator=g) - 4.0,
        logit_opacities=torch.randn(count, generator=g) * 3.0,
        sh=torch.randn(count, (degree + 1) ** 2, 3, generator=g) * 0.8,
    )


def parse(path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode().splitlines()
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith("element")}
    chunks = np.frombuffer(data, "<f4", counts["chunk"] * 18, end).reshape(-1, 18)
    start = end + chunks.nbytes
    packed = np.frombuffer(data, "<u4", counts["vertex"] * 4, start).reshape(-1, 4)
    start += packed.nbytes
    rest = sum(1 for line in header if line.startswith("property uchar f_rest_"))
    sh = np.frombuffer(data, np.uint8, counts.get("sh", 0) * rest, start).reshape(-1, rest) if rest else None
    assert len(data) == start + (sh.nbytes if sh is not None else 0)
    return header, chunks, packed, sh


def test_written_layout_and_round_trip_bounds(tmp_path):
    splats = model(600, 3)
    write_compressed_ply(tmp_path / "a.compressed.ply", splats, ["gsplat_py frame colmap"])
    header, chunks, packed, sh = parse(tmp_path / "a.compressed.ply")
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "comment gsplat_py frame colmap"]
    assert header[3] == "element chunk 3" and header[4:22] == [f"property float {n}" for n in CHUNK_NAMES]
    assert header[22] == "element vertex 600" and header[23:27] == [
        f"property uint {n}" for n in PACKED_NAMES
    ]
    assert header[27] == "element sh 600" and header[28:] == [
        f"property uchar f_rest_{i}" for i in range(45)
    ] + ["end_header"]
    expected = spec_decode(chunks, packed, sh)
    back = read_compressed_ply(tmp_path / "a.compressed.ply")
    check_against(back, expected)

    index = torch.cdist(back.means.double(), splats.means.double()).argmin(1)
    assert torch.equal(index.sort().values, torch.arange(600))
    original = GaussianSplats(
        *(getattr(splats, f)[index] for f in ("means", "quats", "log_scales", "logit_opacities", "sh"))
    )
    chunk = torch.arange(600) // 256
    bounds = torch.from_numpy(chunks.astype(np.float64))[chunk]
    steps = torch.tensor([2047.0, 1023.0, 2047.0], dtype=torch.float64)
    for field, column in (("means", 0), ("log_scales", 6)):
        extent = bounds[:, column + 3 : column + 6] - bounds[:, column : column + 3]
        error = (getattr(back, field).double() - getattr(original, field).double()).abs()
        assert (error <= extent / steps / 2 + 1e-5).all(), field
    colour_extent = bounds[:, 15:18] - bounds[:, 12:15]
    colour_error = (SH_C0 * (back.sh[:, 0] - original.sh[:, 0])).double().abs()
    assert (colour_error <= colour_extent / 255 / 2 + 1e-6).all()
    assert (back.opacities() - original.opacities()).abs().max() <= 1 / 510 + 1e-6
    unit = torch.nn.functional.normalize(original.quats.double(), dim=1)
    aligned = back.quats.double() * torch.sign((back.quats.double() * unit).sum(1, keepdim=True))
    assert (aligned - unit).abs().max() <= 3 / (1023 * math.sqrt(2.0)) + 1e-6
    rest_error = (back.sh[:, 1:] - original.sh[:, 1:].clamp(-4, 4)).abs()
    assert rest_error.max() <= 1 / 32 + 1e-6
    inside = original.sh[:, 1:].abs() < 4 - 1 / 32
    assert rest_error[inside].max() <= 1 / 64 + 1e-6


def test_written_file_keeps_degree_0_without_an_sh_element(tmp_path):
    write_compressed_ply(tmp_path / "a.ply", model(10, 0))
    header, *_ = parse(tmp_path / "a.ply")
    assert not any(line.startswith("element sh") for line in header)
    assert read_compressed_ply(tmp_path / "a.ply").sh_degree == 0
    write_ply(tmp_path / "plain.ply", model(10, 0))
    assert is_compressed_ply(tmp_path / "a.ply") and not is_compressed_ply(tmp_path / "plain.ply")


# --------------------------------------------------------------------------------------------------------
# Bad files


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda c, p, s: compressed_ply(c[:1], p, s),
            "element chunk: 1 chunks; 300 vertices need 2 (256 a chunk)",
        ),
        (lambda c, p, s: compressed_ply(c, p, s[:10]), "element sh: 10 rows; element vertex has 300"),
        (lambda c, p, s: compressed_ply(c, p, s[:, :7]), "element sh: 7 properties; expected 9, 24 or 45"),
        (
            lambda c, p, s: compressed_ply(c, p, s, packed_type="float"),
            "element 'vertex': property 'packed_position' is float; expected uint",
        ),
        (
            lambda c, p, s: compressed_ply(c[:, :17], p, s, chunk_names=CHUNK_NAMES[:17]),
            "element 'chunk': missing property 'max_b'",
        ),
        (lambda c, p, s: compressed_ply(c, p, s)[:-100], "not a valid PLY file"),
        (lambda c, p, s: compressed_ply(c, p[:0], s[:0]), "element vertex: 0 Gaussians; expected at least 1"),
        (
            lambda c, p, s: compressed_ply(np.where(np.arange(18) == 4, np.nan, c), p, s),
            "element chunk: non-finite value at row 0",
        ),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file_and_element(tmp_path, build, message):
    chunks, packed, sh = random_layout(np.random.default_rng(0), 300, 9)
    path = tmp_path / "bad.ply"
    path.write_bytes(build(chunks, packed, sh))
    with pytest.raises(SplatFormatError) as raised:
        read_compressed_ply(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_sh_degree_4_is_refused_before_writing(tmp_path):
    splats = GaussianSplats(
        means=torch.zeros(3, 3),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(3, 4).clone(),
        log_scales=torch.zeros(3, 3),
        logit_opacities=torch.zeros(3),
        sh=torch.zeros(3, 25, 3),
    )
    with pytest.raises(ValueError, match="SH degree 4: the compressed PLY stores degrees 0 to 3"):
        write_compressed_ply(tmp_path / "d4.ply", splats)
    assert not (tmp_path / "d4.ply").exists()
