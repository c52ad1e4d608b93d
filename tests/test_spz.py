"""SPZ: files of every version built here from the specification (github.com/nianticlabs/spz, README and
load-spz.cc) by an independent writer and read back, the bytes our writer produces, round-trip bounds, the
axis convention (RUB in the file, RDF in gsplat_py) and one-line errors for bad files."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

import gsplat_py.io.spz as spz_module
from gsplat_py.errors import MissingPackageError
from gsplat_py.io.packing import SplatFormatError
from gsplat_py.io.spz import read_spz, write_spz
from gsplat_py.model import GaussianSplats
from gsplat_py.rendering.reference import spherical_harmonics

zstandard = pytest.importorskip("zstandard", reason="SPZ version 4 needs zstandard (the test extra)")

MAGIC = 0x5053474E
FLIP = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)  # RUB <-> RDF: a half turn about x


# --------------------------------------------------------------------------------------------------------
# An independent writer of the format, from the specification


def int24_bytes(values) -> bytes:
    return b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in np.asarray(values).reshape(-1))


def smallest_three_word(xyzw) -> int:
    """The version 3+ rotation word of a unit quaternion x y z w: a 2-bit index, 3 x (sign, 9-bit size)."""
    q = np.asarray(xyzw, dtype=np.float64)
    largest = int(np.argmax(np.abs(q)))
    if q[largest] < 0:
        q = -q
    word = largest
    for i in range(4):
        if i != largest:
            magnitude = int(math.floor(511 * abs(q[i]) / math.sqrt(0.5) + 0.5))
            word = (word << 10) | (int(q[i] < 0) << 9) | magnitude
    return word


def spz_file(version, count, degree, fractional_bits, blocks, flags=0, extensions=b"", **overrides) -> bytes:
    """An SPZ file from its attribute blocks (positions, alphas, colors, scales, rotations, sh)."""
    if version >= 4:
        present = [block for block in blocks if block]
        streams = [zstandard.ZstdCompressor(level=3).compress(block) for block in present]
        header = struct.pack(
            "<IIIBBBBI12x",
            overrides.get("magic", MAGIC),
            version,
            count,
            degree,
            fractional_bits,
            flags,
            overrides.get("num_streams", len(streams)),
            overrides.get("toc_offset", 32 + len(extensions)),
        )
        sizes = overrides.get("uncompressed_sizes", [len(block) for block in present])
        toc = b"".join(struct.pack("<QQ", len(s), size) for s, size in zip(streams, sizes))
        return header + extensions + toc + b"".join(streams)
    header = struct.pack(
        "<IIIBBBB", overrides.get("magic", MAGIC), version, count, degree, fractional_bits, flags, 0
    )
    return gzip.compress(header + b"".join(blocks) + extensions)


def extension(kind: int, payload: bytes) -> bytes:
    return struct.pack("<II", kind, len(payload)) + payload


# Three Gaussians as the file stores them (RUB axes), degree 1.
POSITIONS = np.array([[1024, -2048, 5], [-(2**23), 2**23 - 1, 0], [7, 8, -9]])
ALPHAS = np.array([0, 128, 255], dtype=np.uint8)
COLORS = np.array([[0, 127, 255], [128, 128, 128], [10, 200, 30]], dtype=np.uint8)
SCALES = np.array([[0, 160, 255], [100, 101, 102], [16, 32, 48]], dtype=np.uint8)
ROTATIONS_XYZW = np.array([[0.0, 0.0, 0.6, 0.8], [0.36, -0.48, 0.0, 0.8], [0.5, 0.5, -0.5, 0.5]])
SH_DEGREE_1 = np.array(
    [
        [[0, 64, 128], [192, 255, 1], [100, 128, 156]],
        [[128] * 3] * 3,
        [[140, 120, 128], [0, 0, 0], [255] * 3],
    ],
    dtype=np.uint8,
)  # [N, coefficient, channel]


def blocks_for(version: int, degree: int = 1, sh=SH_DEGREE_1) -> list[bytes]:
    if version == 1:
        positions = (POSITIONS / 1024.0).astype("<f2").tobytes()
    else:
        positions = int24_bytes(POSITIONS)
    if version >= 3:
        rotations = np.array([smallest_three_word(q) for q in ROTATIONS_XYZW], dtype="<u4").tobytes()
    else:
        xyz = np.where(ROTATIONS_XYZW[:, 3:] < 0, -1.0, 1.0) * ROTATIONS_XYZW[:, :3]  # w made >= 0
        rotations = np.clip(np.round(xyz * 127.5 + 127.5), 0, 255).astype(np.uint8).tobytes()
    sh_block = sh.tobytes() if degree else b""
    return [positions, ALPHAS.tobytes(), COLORS.tobytes(), SCALES.tobytes(), rotations, sh_block]


def quaternion_matrix(q) -> torch.Tensor:
    w, x, y, z = torch.nn.functional.normalize(torch.as_tensor(q, dtype=torch.float64), dim=-1).unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def check_decoded(splats: GaussianSplats, version: int, fractional_bits: int, axes=FLIP) -> None:
    """The spec's decoding of the Gaussians above, with the stored axes times ``axes`` (RUB -> RDF)."""
    if version == 1:
        stored_means = torch.from_numpy(POSITIONS / 1024.0)
    else:
        stored_means = torch.from_numpy(POSITIONS * 2.0**-fractional_bits)
    assert torch.allclose(splats.means.double(), stored_means * axes, rtol=1e-3 if version == 1 else 1e-7)
    assert torch.allclose(splats.log_scales.double(), torch.from_numpy(SCALES / 16.0 - 10.0), atol=1e-6)
    expected_opacity = torch.from_numpy(np.clip(ALPHAS / 255.0, 1e-6, 1 - 1e-6))
    assert torch.allclose(splats.opacities().double(), expected_opacity, atol=1e-6)
    assert torch.allclose(
        splats.sh[:, 0].double(), torch.from_numpy((COLORS / 255.0 - 0.5) / 0.15), atol=1e-5
    )
    # Rotations: the covariance axes move with the flip F, R -> F R F (8-bit xyz in v1-2: ~1/128)
    stored = torch.from_numpy(ROTATIONS_XYZW[:, [3, 0, 1, 2]])
    flip = torch.diag(axes)
    expected = flip @ quaternion_matrix(stored) @ flip
    tolerance = 5e-3 if version >= 3 else 3e-2
    assert (quaternion_matrix(splats.quats.double()) - expected).abs().max() < tolerance
    # View-dependent colour: seen along d in RDF as the file's SH along F d (in the file's axes)
    stored_sh = torch.cat([splats.sh[:, :1].double(), torch.from_numpy((SH_DEGREE_1 - 128.0) / 128.0)], 1)
    directions = torch.nn.functional.normalize(
        torch.randn(3, 3, generator=torch.Generator().manual_seed(0)), dim=1
    )
    assert torch.allclose(
        spherical_harmonics(1, directions.double(), splats.sh.double()),
        spherical_harmonics(1, directions.double() * axes, stored_sh),
        atol=1e-6,
    )


# --------------------------------------------------------------------------------------------------------
# Files of every version


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_reads_every_version_written_from_the_specification(tmp_path, version):
    path = tmp_path / f"v{version}.spz"
    path.write_bytes(spz_file(version, 3, 1, 10, blocks_for(version)))
    splats = read_spz(path)
    assert splats.num_gaussians == 3 and splats.sh_degree == 1
    check_decoded(splats, version, 10)
    with pytest.raises(AssertionError):  # the check sees a reader that would not convert the axes
        check_decoded(splats, version, 10, axes=torch.ones(3, dtype=torch.float64))


def test_version_4_degree_0_has_five_streams_and_extensions_are_honoured(tmp_path):
    blocks = blocks_for(4, degree=0)
    rdf = extension(0xADBE0003, struct.pack("<I", 6))  # Adobe's coordinate system: RDF, no conversion
    path = tmp_path / "rdf.spz"
    path.write_bytes(spz_file(4, 3, 0, 10, blocks, flags=0x2, extensions=extension(0x12340001, b"abc") + rdf))
    with pytest.warns(UserWarning, match="unknown SPZ extension 0x12340001 skipped"):
        splats = read_spz(path)
    assert splats.sh_degree == 0
    assert torch.allclose(splats.means.double(), torch.from_numpy(POSITIONS * 2.0**-10))  # no flip
    # Flags 0x2 in a legacy file: the records follow the data; LUF flips x and y
    luf = extension(0xADBE0003, struct.pack("<I", 7))
    path.write_bytes(spz_file(3, 3, 0, 10, blocks, flags=0x2, extensions=luf))
    flipped = read_spz(path)
    assert torch.allclose(
        flipped.means.double(), torch.from_numpy(POSITIONS * 2.0**-10) * torch.tensor([-1.0, -1.0, 1.0])
    )


def test_degree_4_is_cut_to_3(tmp_path):
    sh = np.random.default_rng(0).integers(0, 256, (3, 24, 3), dtype=np.uint8)
    blocks = blocks_for(3, degree=4, sh=sh)
    path = tmp_path / "d4.spz"
    path.write_bytes(spz_file(3, 3, 4, 10, blocks))
    with pytest.warns(UserWarning, match="SH degree 4 cut to 3"):
        splats = read_spz(path)
    assert splats.sh_degree == 3
    # coefficient 9 (degree 3, y(3x^2 - y^2)) is odd in y: flipped sign
    assert torch.allclose(splats.sh[:, 9].double(), -torch.from_numpy((sh[:, 8] - 128.0) / 128.0))


# --------------------------------------------------------------------------------------------------------
# The bytes our writer produces


def one_gaussian_model() -> GaussianSplats:
    return GaussianSplats(
        means=torch.tensor([[1.5, -3.0, 0.25], [0.0, 0.5, 2.0]]),
        quats=torch.tensor([[0.8, 0.0, 0.0, 0.6], [2.0, 0.0, 0.0, 0.0]]),  # w x y z, any norm
        log_scales=torch.tensor([[-2.0, -3.5, 0.0], [-10.0, 5.9375, -4.0]]),
        logit_opacities=torch.tensor([0.0, 2.0]),
        sh=torch.tensor(
            [
                [[0.5, -1.0, 2.0], [0.25, -0.125, 0.0], [0.5, 0.5, -0.5], [1.0, -1.0, 0.03125]],
                [[0.0, 0.0, 0.0], [0.1, 0.2, 0.3], [-0.1, -0.2, -0.3], [0.0, 0.0, 0.0]],
            ]
        ),
    )


def test_version_4_bytes_follow_the_specification(tmp_path):
    splats = one_gaussian_model()
    write_spz(tmp_path / "a.spz", splats)
    data = (tmp_path / "a.spz").read_bytes()
    magic, version, count, degree, bits, flags, streams, toc = struct.unpack_from("<IIIBBBBI", data)
    assert (magic, version, count, degree, flags, streams, toc) == (MAGIC, 4, 2, 1, 0, 6, 32)
    assert data[:4] == b"NGSP" and data[20:32] == bytes(12)
    assert bits == 14  # the largest coordinate, 3, kept within 2^16 steps: 3 * 2^14 <= 65536 < 3 * 2^15
    entries = [struct.unpack_from("<QQ", data, 32 + 16 * i) for i in range(6)]
    assert [size for _, size in entries] == [18, 2, 6, 6, 8, 18]
    assert 32 + 6 * 16 + sum(compressed for compressed, _ in entries) == len(data)
    offset, blocks = 32 + 6 * 16, []
    for compressed, size in entries:
        blocks.append(
            zstandard.ZstdDecompressor().decompress(data[offset : offset + compressed], max_output_size=size)
        )
        offset += compressed
    positions, alphas, colors, scales, rotations, sh = blocks
    rub = splats.means.double() * FLIP
    assert positions == int24_bytes(torch.round(rub * 2.0**14).long().numpy())
    assert list(alphas) == [128, round(255 / (1 + math.exp(-2.0)))]
    assert list(colors) == [round(x * 0.15 * 255 + 127.5) for x in (0.5, -1.0, 2.0, 0.0, 0.0, 0.0)]
    assert list(scales) == [128, 104, 160, 0, 255, 96]
    # (0.8, 0, 0, 0.6) w x y z -> RUB (0.8, 0, 0, -0.6) -> x y z w (0, 0, -0.6, 0.8): w largest, z = -0.6
    # identity -> w largest, the rest 0
    assert struct.unpack("<II", rotations) == (3 << 30 | (512 | 434), 3 << 30)
    # degree 1 (y, z, x): RUB flips the y and z coefficients; kept to multiples of 4 around 128
    assert list(sh[:9]) == [96, 144, 128, 64, 64, 192, 255, 0, 132]


def test_version_3_is_one_gzip_stream_of_the_legacy_layout(tmp_path):
    write_spz(tmp_path / "a.spz", one_gaussian_model(), version=3)
    raw = gzip.decompress((tmp_path / "a.spz").read_bytes())
    assert struct.unpack_from("<IIIBBBB", raw) == (MAGIC, 3, 2, 1, 14, 0, 0)
    assert len(raw) == 16 + 2 * (9 + 1 + 3 + 3 + 4 + 9)
    assert read_spz(tmp_path / "a.spz").num_gaussians == 2


# --------------------------------------------------------------------------------------------------------
# Round trips


def random_in_range(n: int, degree: int, seed: int = 0) -> GaussianSplats:
    g = torch.Generator().manual_seed(seed)
    return GaussianSplats(
        means=(torch.rand(n, 3, generator=g) - 0.5) * 20.0,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.rand(n, 3, generator=g) * 15.0 - 9.5,
        logit_opacities=torch.randn(n, generator=g) * 3.0,
        sh=torch.cat(
            [
                (torch.rand(n, 1, 3, generator=g) - 0.5) * 6.0,
                (torch.rand(n, (degree + 1) ** 2 - 1, 3, generator=g) - 0.5) * 1.9,
            ],
            1,
        ),
    )


@pytest.mark.parametrize("version", [3, 4])
def test_round_trip_within_the_quantisation_step(tmp_path, version):
    splats = random_in_range(500, 3)
    write_spz(tmp_path / "a.spz", splats, version)
    back = read_spz(tmp_path / "a.spz")
    bits = math.floor(math.log2(65536 / splats.means.abs().max().item()))
    assert (back.means - splats.means).abs().max() <= 2.0 ** -(bits + 1) + 1e-6
    assert (back.log_scales - splats.log_scales).abs().max() <= 1 / 32 + 1e-5
    assert (back.opacities() - splats.opacities()).abs().max() <= 1 / 510 + 1e-6
    assert (back.sh[:, 0] - splats.sh[:, 0]).abs().max() <= 1 / (2 * 0.15 * 255) + 1e-5
    assert (back.sh[:, 1:4] - splats.sh[:, 1:4]).abs().max() <= 1 / 64 + 1e-6
    assert (back.sh[:, 4:] - splats.sh[:, 4:]).abs().max() <= 1 / 32 + 1e-6
    unit = torch.nn.functional.normalize(splats.quats.double(), dim=1)
    aligned = back.quats.double() * torch.sign((back.quats.double() * unit).sum(1, keepdim=True))
    step = math.sqrt(0.5) / 1022  # per stored component; the largest, rebuilt, within 3 steps
    assert (aligned - unit).abs().max() <= 3 * step + 1e-6


def test_flip_between_rdf_and_rub_keeps_the_colour_seen_from_each_direction():
    """SH_SIGNS_RDF_RUB against the renderer's own basis: coefficients times the signs, seen along d, give the
    colour the original ones give along (x, -y, -z)."""
    g = torch.Generator().manual_seed(1)
    sh = torch.randn(20, 16, 3, generator=g, dtype=torch.float64)
    flipped = sh.clone()
    flipped[:, 1:] *= torch.from_numpy(spz_module.SH_SIGNS_RDF_RUB[:15])[:, None]
    directions = torch.nn.functional.normalize(torch.randn(20, 3, generator=g, dtype=torch.float64), dim=1)
    assert torch.allclose(
        spherical_harmonics(3, directions, flipped), spherical_harmonics(3, directions * FLIP, sh)
    )
    assert not torch.allclose(
        spherical_harmonics(3, directions, sh), spherical_harmonics(3, directions * FLIP, sh)
    )


def test_writing_without_zstandard_names_the_package_and_version_3_still_works(tmp_path, monkeypatch):
    def missing(purpose):
        raise MissingPackageError(f"{purpose} needs the zstandard package: {spz_module.SPZ_INSTALL_HINT}")

    monkeypatch.setattr(spz_module, "_zstandard", missing)
    with pytest.raises(
        MissingPackageError, match="writing SPZ version 4 needs the zstandard package: pip install"
    ):
        write_spz(tmp_path / "a.spz", one_gaussian_model())
    assert not (tmp_path / "a.spz").exists()
    write_spz(tmp_path / "a.spz", one_gaussian_model(), version=3)
    assert read_spz(tmp_path / "a.spz").num_gaussians == 2


# --------------------------------------------------------------------------------------------------------
# Bad files


def v4_bytes(**overrides) -> bytes:
    return spz_file(4, 3, 1, 10, blocks_for(4), **overrides)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "header: 0 bytes, expected at least 16"),
        (b"PK\x03\x04" + bytes(40), "magic: 50 4b 03 04, expected 4e 47 53 50 ('NGSP') or a gzip stream"),
        (spz_file(5, 3, 1, 10, blocks_for(3)), "version: 5 is not supported (gsplat_py reads 1 to 4)"),
        (v4_bytes()[:-7], "sh stream: runs past the end of the file (truncated?)"),
        (v4_bytes()[:30], "header: 30 bytes, expected 32"),
        (
            gzip.compress(gzip.decompress(spz_file(3, 3, 1, 10, blocks_for(3)))[:60]),
            "scales: 5 bytes left, expected 9",
        ),
        (spz_file(3, 3, 1, 10, blocks_for(3))[:-5], "gzip stream"),
        (spz_file(3, 4, 1, 10, blocks_for(3)), "sh: 7 bytes left, expected 36 for numPoints 4 (truncated?)"),
        (spz_file(4, 5, 1, 10, blocks_for(4)), "positions stream: 27 bytes, expected 45 for numPoints 5"),
        (v4_bytes(num_streams=5), "numStreams: 5; expected 6 for shDegree 1"),
        (v4_bytes(toc_offset=4000), "tocByteOffset: 4000 is outside the file"),
        (v4_bytes() + b"junk", "4 bytes after the last stream"),
        (
            gzip.compress(gzip.decompress(spz_file(3, 3, 1, 10, blocks_for(3))) + b"xx"),
            "2 bytes after the data numPoints 3 describes",
        ),
        (spz_file(4, 0, 1, 10, [b""] * 6), "numPoints: 0; expected at least 1"),
        (spz_file(3, 3, 5, 10, blocks_for(3)), "shDegree: 5; expected 0 to 4"),
        (gzip.compress(v4_bytes()), "version: 4 in a gzip-compressed file"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file_and_field(tmp_path, data, message):
    path = tmp_path / "bad.spz"
    path.write_bytes(data)
    with pytest.raises(SplatFormatError) as raised:
        read_spz(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_unwritable_models_are_refused_before_writing(tmp_path):
    too_far = one_gaussian_model()
    too_far.means[0, 0] = 9e6
    with pytest.raises(
        ValueError, match="far.spz: coordinates up to 9e\\+06 do not fit SPZ's 24-bit positions"
    ):
        write_spz(tmp_path / "far.spz", too_far)
    empty = random_in_range(0, 0)
    with pytest.raises(ValueError, match="empty.spz: cannot write splats: the model has no Gaussians"):
        write_spz(tmp_path / "empty.spz", empty)
    assert list(tmp_path.iterdir()) == []
