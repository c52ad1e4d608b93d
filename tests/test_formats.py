"""Every splat format through the tools: `load_model` reads each (and its world frame), `gsplat-py export`
writes each (size, ratio, SH degree, the frame note), and the bundled scene's trained model renders from each
format as from its PLY (PSNR between the renders, per format). Also Morton order and the scalar codebook."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from render_helpers import random_splats

from gsplat_py.cli import main as cli_main
from gsplat_py.data.scenes import bundled_scene
from gsplat_py.data.world_frame import WorldFrame, frame_comments
from gsplat_py.io.codebooks import scalar_codebook
from gsplat_py.io.compressed_ply import write_compressed_ply
from gsplat_py.io.formats import format_of_name, read_splat_file
from gsplat_py.io.packing import morton_order
from gsplat_py.io.ply import ply_file_size, write_ply
from gsplat_py.io.sog import write_sog
from gsplat_py.io.splat import write_splat
from gsplat_py.io.spz import write_spz
from gsplat_py.tools.novel_views import render_cameras, select_cameras
from gsplat_py.tools.saved_models import load_model
from gsplat_py.training.metrics import psnr

pytest.importorskip("zstandard", reason="SPZ version 4 needs zstandard (the test extra)")

FORMATS = ["ply", "compressed-ply", "spz", "sog", "splat"]
SUFFIXES = {
    "ply": ".ply",
    "compressed-ply": ".compressed.ply",
    "spz": ".spz",
    "sog": ".sog",
    "splat": ".splat",
}


def random_model(count=200, degree=2, seed=0):
    return random_splats(count, degree=degree, seed=seed)


def render_cli(*args) -> int:
    return cli_main(["render", "--quiet", *map(str, args)])


# --------------------------------------------------------------------------------------------------------
# Shared pieces


def test_morton_order_follows_the_z_curve():
    # The 8 corners of a cube: Morton code = x | y << 1 | z << 2 over their cells.
    corners = np.array([[x, y, z] for z in (1, 0) for y in (0, 1) for x in (1, 0)], dtype=np.float64)
    order = morton_order(corners)
    codes = [int(c[0]) | int(c[1]) << 1 | int(c[2]) << 2 for c in corners[order]]
    assert codes == list(range(8))
    rng = np.random.default_rng(0)
    points = rng.uniform(-5, 5, (5000, 3))
    ordered = points[morton_order(points)]
    random_steps = np.linalg.norm(np.diff(points, axis=0), axis=1).mean()
    assert np.linalg.norm(np.diff(ordered, axis=0), axis=1).mean() < random_steps / 5  # neighbours


def test_scalar_codebook_is_exact_for_few_values_and_nearest_otherwise():
    values = np.repeat(np.linspace(-3, 2, 40), 25).reshape(100, 10)
    codebook, indices = scalar_codebook(values, 256)
    assert len(codebook) == 40 and np.array_equal(codebook[indices], values.astype(np.float32))
    wide = np.random.default_rng(1).normal(0, 1, 30_000)
    codebook, indices = scalar_codebook(wide, 256)
    assert len(codebook) == 256 and np.all(np.diff(codebook) > 0)
    errors = np.abs(codebook[indices] - wide)
    assert np.allclose(errors, np.abs(wide[:, None] - codebook[None, :]).min(axis=1))  # the nearest entry
    # the tails get entries too (plain k-means leaves 0.40 here, and an RMS of 0.0137)
    assert errors.max() < 0.35 and np.sqrt(np.mean(errors**2)) < 0.012


def test_format_of_name():
    assert [format_of_name(f"a/b{suffix}") for suffix in SUFFIXES.values()] == FORMATS
    assert format_of_name("scene/META.JSON") == "sog" and format_of_name("x.txt") is None


# --------------------------------------------------------------------------------------------------------
# load_model: every format, and its world frame


def test_load_model_reads_every_format_and_the_frames_they_record(tmp_path):
    splats = random_model()
    frame = WorldFrame.normalized(torch.diag(torch.tensor([0.5, 0.5, 0.5, 1.0], dtype=torch.float64)))
    comments = frame_comments(frame)
    write_ply(tmp_path / "a.ply", splats, comments)
    write_compressed_ply(tmp_path / "a.compressed.ply", splats, comments)
    write_sog(tmp_path / "a.sog", splats, comments)
    write_spz(tmp_path / "a.spz", splats)
    write_splat(tmp_path / "a.splat", splats)
    for name in ("a.ply", "a.compressed.ply", "a.sog"):
        model = load_model(tmp_path / name)
        assert model.frame.name == "normalized" and torch.equal(model.frame.from_colmap, frame.from_colmap)
        assert model.splats.num_gaussians == 200 and model.sh_degree == 2
        with pytest.raises(
            ValueError, match="is in the normalized frame \\(as the file records\\), not the colmap"
        ):
            load_model(tmp_path / name, "colmap")
    # SPZ and .splat record no frame: COLMAP's, unless declared
    assert load_model(tmp_path / "a.spz").frame.name == "colmap"
    assert load_model(tmp_path / "a.splat", "normalized").frame.name == "normalized"
    assert load_model(tmp_path / "a.splat").sh_degree == 0
    loaded = read_splat_file(tmp_path / "a.compressed.ply")
    assert loaded.file_format == "compressed-ply" and loaded.comments == comments
    assert read_splat_file(tmp_path / "a.spz").comments is None
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(ValueError, match="a.txt: not a model .*\\.spz, \\.sog, \\.splat, meta.json"):
        load_model(tmp_path / "a.txt")


def test_ply_file_size_is_the_written_size(tmp_path):
    splats = random_model(37, degree=1)
    write_ply(tmp_path / "a.ply", splats, ["one comment"])
    assert ply_file_size(37, 1, ["one comment"]) == (tmp_path / "a.ply").stat().st_size


# --------------------------------------------------------------------------------------------------------
# The bundled scene's trained model, through every format


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """300 steps on the bundled scene, SH degree 3 from step 180, densified from step 100."""
    from gsplat_py.training.config import Config
    from gsplat_py.training.trainer import Trainer

    config = Config()
    config.train.output = str(tmp_path_factory.mktemp("formats") / "run")
    config.train.steps = 300
    config.train.eval_every = 0
    config.train.save_renders = False
    config.model.sh_degree_interval = 60
    config.strategy.default.refine_start_iter = 100
    Trainer(config, progress=False).train()
    return config.train.output


# Re-render PSNR against the PLY on the test views, per format. Seen on this model (15k Gaussians): compressed
# PLY 41.3 dB, SPZ 41.1, SOG 41.0 (a palette of 1,024 entries), .splat 63.8 (against SH degree 0); the
# field's figures are SPZ >= 40 dB and SOG >= 35 dB. Moving every Gaussian by 1% of the scene's size: 32.2.
MIN_PSNR = {"compressed-ply": 40.0, "spz": 40.0, "sog": 35.0, "splat": 40.0}


def test_every_format_renders_the_trained_model_as_its_ply(trained_run, capsys):
    run = Path(trained_run)
    model = load_model(run)
    assert model.sh_degree == 3 and model.splats.num_gaussians > 500
    cameras = select_cameras(model, "test").cameras

    def renders(splats):
        return [frame.rgb for frame in render_cameras(splats, cameras)]

    def mean_psnr(images, references):
        return sum(float(psnr(a, b)) for a, b in zip(images, references)) / len(images)

    reference, reference_dc = renders(model.splats), renders(model.splats.with_sh_degree(0))
    for file_format in FORMATS[1:]:
        assert cli_main(["export", "--model", str(run), "--format", file_format]) == 0
        out = capsys.readouterr().out
        path = run / f"point_cloud_normalized{SUFFIXES[file_format]}"
        size = path.stat().st_size
        assert f"{size / 1e6:.1f} MB" in out or f"{size / 1e3:.1f} kB" in out
        assert "x smaller than the PLY" in out and "note:" not in out  # a run's own frame: no note
        exported = load_model(path)  # in the run folder: the run's frame and scene
        assert exported.frame.name == "normalized" and exported.run == run
        against = reference_dc if file_format == "splat" else reference
        value = mean_psnr(renders(exported.splats), against)
        assert value >= MIN_PSNR[file_format], (file_format, value)
    # the check sees an error of 1% of the scene's size
    shifted = replace(model.splats, means=model.splats.means + 0.01 * model.splats.means.std())
    assert mean_psnr(renders(shifted), reference) < min(MIN_PSNR.values())


def test_render_reads_every_format_outside_its_run(trained_run, tmp_path):
    """A file moved out of its run folder: the frame it records (SOG) or the one declared (SPZ, .splat), and
    the scene given with --data; its test PSNR against the photos is the checkpoint's, within the format's
    loss."""
    run = Path(trained_run)
    scene = bundled_scene()
    assert render_cli("--model", run, "--split", "test", "--output", tmp_path / "checkpoint") == 0
    expected = json.loads((tmp_path / "checkpoint" / "metrics.json").read_text())["psnr"]
    normalized = ["--model-frame", "normalized"]
    # (a wrong frame or scene loses more than 5 dB; SPZ's SH quantisation costs this model 0.35 dB)
    for file_format, declared, loss in (
        ("sog", [], 1.0),
        ("spz", normalized, 1.0),
        ("splat", normalized, 3.0),
    ):
        path = tmp_path / f"m{SUFFIXES[file_format]}"
        assert cli_main(["export", "--model", str(run), "--output", str(path)]) == 0
        output = tmp_path / file_format
        assert (
            render_cli("--model", path, *declared, "--data", scene, "--split", "test", "--output", output)
            == 0
        )
        value = json.loads((output / "metrics.json").read_text())["psnr"]
        assert expected - loss < value < expected + 0.1, (file_format, value, expected)


# --------------------------------------------------------------------------------------------------------
# gsplat-py export


def test_export_options_and_messages(tmp_path, capsys):
    splats = random_model(300, degree=3)
    write_ply(tmp_path / "m.ply", splats)
    model = str(tmp_path / "m.ply")
    assert cli_main(["export", "--model", model, "--format", "spz", "--sh-degree", "1"]) == 0
    out = capsys.readouterr().out
    assert "m_colmap.spz" in out and "SH degree 1" in out and "note:" not in out  # COLMAP's, as assumed
    assert load_model(tmp_path / "m_colmap.spz").sh_degree == 1
    ply_size = ply_file_size(300, 1, frame_comments(WorldFrame.colmap()))
    ratio = ply_size / (tmp_path / "m_colmap.spz").stat().st_size
    assert f"{ratio:.1f}x smaller than the PLY" in out
    assert cli_main(["export", "--model", model, "--output", str(tmp_path / "x.compressed.ply")]) == 0
    assert read_splat_file(tmp_path / "x.compressed.ply").file_format == "compressed-ply"
    assert (
        cli_main(["export", "--model", model, "--output", str(tmp_path / "v3.spz"), "--spz-version", "3"])
        == 0
    )
    assert (tmp_path / "v3.spz").read_bytes()[:2] == b"\x1f\x8b"
    assert cli_main(["export", "--model", model, "--format", "sog", "--sog-palette", "16"]) == 0
    capsys.readouterr()
    cases = [
        (
            ["--format", "spz", "--sh-degree", "4", "--output", "a.spz"],
            "--sh-degree: 4: expected 0 to 3 (the model's SH degree)",
        ),
        (
            ["--format", "sog", "--sog-palette", "70000", "--output", "b.sog"],
            "--sog-palette: 70000: expected 1 to 65536",
        ),
        (
            ["--output", "c.txt"],
            "--format: give one of ply, compressed-ply, spz, sog, splat (or an --output ending in",
        ),
    ]
    for arguments, message in cases:
        arguments = [str(tmp_path / a) if a.endswith((".spz", ".sog", ".txt")) else a for a in arguments]
        assert cli_main(["export", "--model", model, *arguments]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_export_notes_when_a_frameless_file_would_be_misread(trained_run, capsys):
    run = Path(trained_run)
    assert cli_main(["export", "--model", str(run), "--format", "spz", "--frame", "colmap"]) == 0
    out = capsys.readouterr().out
    assert (
        "note: a .spz file records no world frame and render takes this one to be in the normalized frame: "
        "render it with --model-frame colmap" in out
    )
    assert load_model(run / "point_cloud_colmap.spz").frame.name == "normalized"  # what the note warns of
    colmap = load_model(run / "point_cloud_colmap.spz", "colmap")  # declared: wins over the run's frame
    assert colmap.frame.name == "colmap" and colmap.run == run
    assert cli_main(["export", "--model", str(run), "--format", "ply", "--frame", "colmap"]) == 0
    ply = load_model(run / "point_cloud_colmap.ply")  # records its frame
    assert ply.frame.name == "colmap"
    largest = ply.splats.means.abs().max().item()
    assert torch.allclose(colmap.splats.means, ply.splats.means, atol=largest * 2**-16 + 1e-6)


def test_bad_files_are_one_line_cli_errors(tmp_path, capsys):
    (tmp_path / "bad.spz").write_bytes(b"NGSP" + bytes(12))
    (tmp_path / "bad.sog").write_text("not a zip")
    write_spz(tmp_path / "good.spz", random_model(5, degree=0))
    cases = [
        (["render", "--model", str(tmp_path / "bad.spz")], "bad.spz: version: 0 is not supported"),
        (["export", "--model", str(tmp_path / "bad.sog"), "--format", "ply"], "bad.sog: not a SOG bundle"),
        (
            ["eval", "--model", str(tmp_path / "good.spz")],
            "good.spz: eval scores a training run's checkpoint",
        ),
    ]
    for arguments, message in cases:
        assert cli_main(arguments) == 1
        err = capsys.readouterr().err
        assert err.startswith("gsplat-py: error: ") and message in err and err.count("\n") == 1, err
