"""SOG (PlayCanvas, version 2): bundles built here from the specification (developer.playcanvas.com's SOG
format page) by an independent writer and read back, the layout our writer produces decoded independently,
round-trip bounds, the SH palette and one-line errors for bad files."""

import io
import json
import math
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from gsplat_py.io.codebooks import vector_palette
from gsplat_py.io.packing import SplatFormatError
from gsplat_py.io.sog import read_sog, read_sog_comments, write_sog
from gsplat_py.model import GaussianSplats

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------------------------------------
# An independent writer and decoder of the format, from the specification


def webp(texels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(texels.astype(np.uint8), "RGBA").save(buffer, format="WEBP", lossless=True, exact=True)
    return buffer.getvalue()


def image(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGBA image whose first len(values) texels (row-major) are the rows of ``values`` (up to 4 columns;
    alpha 255 where not given)."""
    texels = np.zeros((width * height, 4), dtype=np.uint8)
    texels[:, 3] = 255
    texels[: len(values), : values.shape[1]] = values
    return texels.reshape(height, width, 4)


def bundle(path, meta: dict, images: dict) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        for name, texels in images.items():
            archive.writestr(name, webp(texels))


def spec_decode(meta: dict, read) -> dict:
    """Decode a SOG the way the specification describes it, image by image (``read(name)`` -> RGBA)."""
    count = meta["count"]

    def texels(name):
        return read(name).reshape(-1, 4)[:count].astype(np.int64)

    low, high = (texels(name) for name in meta["means"]["files"])
    q = (low[:, :3] + 256 * high[:, :3]) / 65535.0
    mins, maxs = np.array(meta["means"]["mins"]), np.array(meta["means"]["maxs"])
    v = mins + (maxs - mins) * q
    means = np.sign(v) * (np.exp(np.abs(v)) - 1.0)
    quat_texels = texels(meta["quats"]["files"][0])
    quats = np.zeros((count, 4))
    for i, (r, g, b, a) in enumerate(quat_texels):
        others = [(c / 255.0 * 2.0 - 1.0) / SQRT2 for c in (r, g, b)]
        largest = a - 252
        rest = [j for j in range(4) if j != largest]
        quats[i, rest] = others
        quats[i, largest] = math.sqrt(max(0.0, 1.0 - sum(o * o for o in others)))
    scale_codebook = np.array(meta["scales"]["codebook"], dtype=np.float32)
    log_scales = scale_codebook[texels(meta["scales"]["files"][0])[:, :3]]
    sh0 = texels(meta["sh0"]["files"][0])
    dc = np.array(meta["sh0"]["codebook"], dtype=np.float32)[sh0[:, :3]]
    result = {"means": means, "quats": quats, "log_scales": log_scales, "dc": dc, "alpha": sh0[:, 3] / 255.0}
    if "shN" in meta:
        per_channel = {1: 3, 2: 8, 3: 15}[meta["shN"]["bands"]]
        codebook = np.array(meta["shN"]["codebook"], dtype=np.float32)
        centroids = read(meta["shN"]["files"][0])
        labels = texels(meta["shN"]["files"][1])
        rest = np.zeros((count, 3 * per_channel))
        for i in range(count):
            label = labels[i, 0] + 256 * labels[i, 1]
            row, column = label // 64, (label % 64) * per_channel
            for j in range(per_channel):
                for channel in range(3):
                    rest[i, channel * per_channel + j] = codebook[centroids[row, column + j, channel]]
        result["rest"] = rest
    return result


def check_against(splats: GaussianSplats, expected: dict) -> None:
    """``splats`` (our reader) decode as the specification says (``expected``, from :func:`spec_decode`)."""
    assert torch.allclose(splats.means.double(), torch.from_numpy(expected["means"]), rtol=1e-6, atol=1e-6)
    assert torch.allclose(splats.quats.double(), torch.from_numpy(expected["quats"]), atol=1e-6)
    assert torch.equal(splats.log_scales, torch.from_numpy(expected["log_scales"]))
    assert torch.equal(splats.sh[:, 0], torch.from_numpy(expected["dc"]))
    alpha = np.clip(expected["alpha"], 1e-6, 1 - 1e-6)
    assert torch.allclose(splats.opacities().double(), torch.from_numpy(alpha), atol=1e-6)
    if "rest" in expected:
        k = splats.sh.shape[1]
        rest = splats.sh[:, 1:].transpose(1, 2).reshape(len(splats), 3 * (k - 1))
        assert torch.equal(rest.double(), torch.from_numpy(expected["rest"]))


def spec_scene(rng, count=7, width=3, height=3, bands=2, palette=300):
    """meta.json and images of ``count`` Gaussians with arbitrary (valid) stored values."""
    per_channel = {1: 3, 2: 8, 3: 15}[bands]
    levels = rng.integers(0, 65536, (count, 3))
    tags = rng.integers(0, 4, count)
    # three stored components whose squares sum to at most 1 (a valid rotation)
    quat_bytes = rng.integers(70, 186, (count, 3))
    rows = math.ceil(palette / 64)
    meta = {
        "version": 2,
        "asset": {"generator": "a test", "comments": ["gsplat_py frame colmap"]},
        "count": count,
        "means": {
            "mins": [-2.0, -0.5, 0.0],
            "maxs": [1.5, 0.5, 3.0],
            "files": ["means_l.webp", "means_u.webp"],
        },
        "scales": {"codebook": sorted(rng.uniform(-9, 1, 256).tolist()), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": sorted(rng.uniform(-2, 2, 256).tolist()), "files": ["sh0.webp"]},
        "shN": {
            "count": palette,
            "bands": bands,
            "codebook": sorted(rng.uniform(-1, 1, 256).tolist()),
            "files": ["shN_centroids.webp", "shN_labels.webp"],
        },
    }
    labels = rng.integers(0, palette, count)
    labels[0] = palette - 1  # above 255 for palettes of 257 or more: both bytes used
    images = {
        "means_l.webp": image(levels & 0xFF, width, height),
        "means_u.webp": image(levels >> 8, width, height),
        "quats.webp": image(np.concatenate([quat_bytes, 252 + tags[:, None]], 1), width, height),
        "scales.webp": image(rng.integers(0, 256, (count, 3)), width, height),
        "sh0.webp": image(rng.integers(0, 256, (count, 4)), width, height),
        "shN_centroids.webp": rng.integers(0, 256, (rows, 64 * per_channel, 4)).astype(np.uint8),
        "shN_labels.webp": image(np.stack([labels & 0xFF, labels >> 8], 1), width, height),
    }
    images["sh0.webp"].reshape(-1, 4)[0, 3] = 0  # a transparent Gaussian keeps its colour (exact WebP)
    return meta, images


# --------------------------------------------------------------------------------------------------------
# Files built from the specification


def test_reads_a_bundle_written_from_the_specification(tmp_path):
    meta, images = spec_scene(np.random.default_rng(0))
    bundle(tmp_path / "scene.sog", meta, images)
    splats = read_sog(tmp_path / "scene.sog")
    assert splats.num_gaussians == 7 and splats.sh_degree == 2
    check_against(splats, spec_decode(meta, lambda name: images[name]))
    assert read_sog_comments(tmp_path / "scene.sog") == ["gsplat_py frame colmap"]
    with pytest.raises(AssertionError):  # the check sees a broken palette lookup
        broken = spec_decode(meta, lambda name: images[name])
        broken["rest"] = broken["rest"][::-1].copy()
        check_against(splats, broken)


def test_reads_an_unbundled_meta_json_with_its_images_beside_it(tmp_path):
    meta, images = spec_scene(np.random.default_rng(1), bands=1, palette=5)
    del meta["asset"]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    for name, texels in images.items():
        (tmp_path / name).write_bytes(webp(texels))
    splats = read_sog(tmp_path / "meta.json")
    assert splats.sh_degree == 1
    check_against(splats, spec_decode(meta, lambda name: images[name]))
    assert read_sog_comments(tmp_path / "meta.json") == []


def test_degree_0_has_no_palette(tmp_path):
    meta, images = spec_scene(np.random.default_rng(2))
    del meta["shN"]
    bundle(tmp_path / "d0.sog", meta, images)
    splats = read_sog(tmp_path / "d0.sog")
    assert splats.sh_degree == 0
    check_against(splats, spec_decode(meta, lambda name: images[name]))


# --------------------------------------------------------------------------------------------------------
# What our writer produces


def model(count: int, degree: int, seed: int = 0) -> GaussianSplats:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, generator=g) * 3.0
    logits[:5] = -30.0  # alpha 0: their colours must survive the WebP encoding
    return GaussianSplats(
        means=torch.randn(count, 3, generator=g) * torch.tensor([3.0, 0.5, 8.0]),
        quats=torch.randn(count, 4, generator=g),
        log_scales=torch.randn(count, 3, generator=g) - 4.0,
        logit_opacities=logits,
        sh=torch.randn(count, (degree + 1) ** 2, 3, generator=g) * 0.5,
    )


def matching(original: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """For each decoded position, the index of the nearest original one (the writer reorders)."""
    return torch.cdist(decoded.double(), original.double()).argmin(dim=1)


def test_written_bundle_layout_and_round_trip_bounds(tmp_path):
    splats = model(1000, 3)
    write_sog(tmp_path / "a.sog", splats, ["gsplat_py frame normalized"], generator="tests")
    with zipfile.ZipFile(tmp_path / "a.sog") as archive:
        names = archive.namelist()
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        meta = json.loads(archive.read("meta.json"))
        pixels = {
            name: np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGBA"))
            for name in names
            if name != "meta.json"
        }
    assert sorted(names) == sorted(
        ["meta.json", "means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp"]
        + ["shN_centroids.webp", "shN_labels.webp"]
    )
    assert meta["version"] == 2 and meta["count"] == 1000
    assert meta["asset"] == {"generator": "tests", "comments": ["gsplat_py frame normalized"]}
    for name in ("means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp", "shN_labels.webp"):
        assert pixels[name].shape == (32, 32, 4), name  # W = 4 ceil(sqrt(1000) / 4), H = 4 ceil(1000 / W / 4)
    assert (
        len(meta["scales"]["codebook"]) == len(meta["sh0"]["codebook"]) == len(meta["shN"]["codebook"]) == 256
    )
    assert meta["shN"]["bands"] == 3 and pixels["shN_centroids.webp"].shape[1] == 64 * 15
    assert set(np.unique(pixels["quats.webp"][..., 3]).tolist()) <= {252, 253, 254, 255}

    expected = spec_decode(meta, lambda name: pixels[name])
    back = read_sog(tmp_path / "a.sog")
    check_against(back, expected)  # our reader decodes our file as the specification says

    index = matching(splats.means, back.means)
    assert torch.equal(index.sort().values, torch.arange(1000))  # a permutation
    original = GaussianSplats(
        *(getattr(splats, f)[index] for f in ("means", "quats", "log_scales", "logit_opacities", "sh"))
    )
    # positions: 16 bits of sign(x) ln(|x| + 1) per axis
    step = (torch.tensor(meta["means"]["maxs"]) - torch.tensor(meta["means"]["mins"])) / 65535
    bound = (original.means.abs() + 1) * (torch.exp(step / 2) - 1)
    assert ((back.means - original.means).abs() <= bound + 1e-6).all()
    # log-scales and SH DC: the nearest codebook entry of each value
    for field, values, decoded in (
        ("scales", original.log_scales, back.log_scales),
        ("sh0", original.sh[:, 0], back.sh[:, 0]),
    ):
        codebook = torch.tensor(meta[field]["codebook"], dtype=torch.float32)
        nearest = (values[..., None] - codebook).abs().min(dim=-1).values
        assert torch.allclose((decoded - values).abs(), nearest, atol=1e-6), field
    assert (back.opacities() - original.opacities()).abs().max() <= 1 / 510 + 1e-6
    unit = torch.nn.functional.normalize(original.quats.double(), dim=1)
    aligned = back.quats.double() * torch.sign((back.quats.double() * unit).sum(1, keepdim=True))
    assert (aligned - unit).abs().max() <= 3 / (255 * SQRT2) + 1e-6  # 1/(255 sqrt 2) stored, 3x the largest
    # A palette as large as the model: every Gaussian is its own entry, quantised by the codebook
    assert meta["shN"]["count"] == 1000
    codebook = torch.tensor(meta["shN"]["codebook"], dtype=torch.float32)
    nearest = (original.sh[:, 1:, :, None] - codebook).abs().min(dim=-1).values
    assert torch.allclose((back.sh[:, 1:] - original.sh[:, 1:]).abs(), nearest, atol=1e-6)


def test_palette_smaller_than_the_model(tmp_path):
    """Few distinct SH vectors are found exactly by the k-means; a palette size caps the entries."""
    splats = model(3000, 1)
    distinct = torch.randn(12, 3, 3, generator=torch.Generator().manual_seed(5)).round(decimals=1)
    splats.sh[:, 1:] = distinct[torch.arange(3000) % 12]
    write_sog(tmp_path / "a.sog", splats)
    back = read_sog(tmp_path / "a.sog")
    index = matching(splats.means, back.means)
    assert torch.allclose(back.sh[:, 1:], splats.sh[index, 1:], atol=1e-6)  # <= 256 values: exact codebook
    write_sog(tmp_path / "b.sog", model(3000, 2), palette_size=100)
    with zipfile.ZipFile(tmp_path / "b.sog") as archive:
        assert json.loads(archive.read("meta.json"))["shN"]["count"] <= 100
    assert read_sog(tmp_path / "b.sog").sh_degree == 2


def test_vector_palette_puts_every_point_near_its_cluster():
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(40, 9, generator=g) * 10.0
    points = centres[torch.randint(0, 40, (2000,), generator=g)] + 0.01 * torch.randn(2000, 9, generator=g)
    palette, labels = vector_palette(points.numpy(), 256)
    assert palette.shape[0] <= 256 and labels.shape == (2000,)
    assert np.linalg.norm(palette[labels] - points.numpy(), axis=1).max() < 0.1


# --------------------------------------------------------------------------------------------------------
# Bad files


def edited(tmp_path, change) -> str:
    meta, images = spec_scene(np.random.default_rng(4))
    change(meta, images)
    bundle(tmp_path / "bad.sog", meta, images)
    return str(tmp_path / "bad.sog")


def set_field(path: str, value):
    def change(meta, images):
        *parents, key = path.split(".")
        target = meta
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[key]
        else:
            target[key] = value

    return change


def set_texel(name: str, index: int, channel: int, value: int):
    def change(meta, images):
        images[name].reshape(-1, 4)[index, channel] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (set_field("version", None), "meta.json: version: missing: SOG version 1 is not supported"),
        (set_field("version", 3), "meta.json: version: 3 is not supported (only version 2)"),
        (set_field("count", 10), "means_l.webp: 3x3 texels hold 9 Gaussians; meta.json count is 10"),
        (set_field("count", "7"), "meta.json: count: expected an integer, got '7'"),
        (set_field("means.mins", [0.0, 1.0]), "meta.json: means.mins: expected a list of 3 numbers"),
        (set_field("scales.codebook", [0.0] * 10), "scales.webp: codebook index"),
        (set_field("scales.files", None), "meta.json: scales.files: missing"),
        (
            set_texel("quats.webp", 3, 3, 17),
            "quats.webp: alpha 17 at Gaussian 3 is no component tag (252-255)",
        ),
        (set_texel("shN_labels.webp", 2, 1, 200), "shN_labels.webp: palette index"),
        (set_field("shN.bands", 4), "meta.json: shN.bands: 4; expected 1, 2 or 3"),
        (
            set_field("shN.count", 5000),
            "shN_centroids.webp: 512x5 texels; 5000 palette entries of degree 2 need",
        ),
        (
            lambda meta, images: images.update({"sh0.webp": np.zeros((4, 4, 4), np.uint8)}),
            "sh0.webp: 4x4 texels; the other images are 3x3",
        ),
        (set_field("sh0.files", ["missing.webp"]), "missing.webp: not in the bundle"),
    ],
)
def test_bad_bundles_are_one_line_errors_naming_the_file_and_field(tmp_path, change, message):
    path = edited(tmp_path, change)
    with pytest.raises(SplatFormatError) as raised:
        read_sog(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_broken_containers_are_one_line_errors(tmp_path):
    (tmp_path / "text.sog").write_text("not a zip")
    with zipfile.ZipFile(tmp_path / "empty.sog", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with zipfile.ZipFile(tmp_path / "json.sog", "w") as archive:
        archive.writestr("meta.json", "{not json")
    for name, message in [
        ("text.sog", "not a SOG bundle (a ZIP archive)"),
        ("empty.sog", "meta.json: not in the bundle"),
        ("json.sog", "meta.json: not valid JSON"),
        ("absent.sog", "cannot read file"),
    ]:
        with pytest.raises(SplatFormatError) as raised:
            read_sog(tmp_path / name)
        assert str(raised.value).startswith(f"{tmp_path / name}: ") and message in str(raised.value)


def test_writer_refuses_bad_arguments_before_writing(tmp_path):
    with pytest.raises(ValueError, match="SOG palette size 0: expected 1 to 65536"):
        write_sog(tmp_path / "a.sog", model(10, 1), palette_size=0)
    empty = model(10, 1)
    empty.means[3, 1] = float("inf")
    with pytest.raises(ValueError, match="a.sog: cannot write splats: means has a non-finite value"):
        write_sog(tmp_path / "a.sog", empty)
    assert not (tmp_path / "a.sog").exists()


def test_sh_degree_4_is_refused_before_writing(tmp_path):
    splats = model(20, 4)
    with pytest.raises(ValueError, match="SH degree 4: SOG stores degrees 0 to 3"):
        write_sog(tmp_path / "d4.sog", splats)
    assert not (tmp_path / "d4.sog").exists()
