"""Bad command-line arguments of `render`, `export`, `eval` and `train`: render sizes of 1e9 or 40000²
(checked against the memory free before anything is allocated), absurd frame counts, NaN or infinite
scales and rates, a huge seed. Each is a one-line error naming the flag, with exit status 1 (2 for what
argparse cannot parse), that writes nothing; `GSPLAT_PY_TRACEBACK` shows an unexpected error's traceback."""

import json

import numpy as np
import pytest
import torch
from bad_input import assert_names, cli_error, snapshot, time_limit
from render_helpers import write_ring_scene

from gsplat_py.cli import main as cli_main
from gsplat_py.io.ply import write_ply
from gsplat_py.model import GaussianSplats
from gsplat_py.tools import novel_views

FREE_MEMORY = 8 << 30  # what the memory check is told is free, so that the cases do not depend on the machine


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model (PLY), a camera file, a scene and a short run of it."""
    root = tmp_path_factory.mktemp("cli_args")
    splats = GaussianSplats(
        torch.randn(20, 3),
        torch.ones(20, 4),
        torch.full((20, 3), -2.0),
        torch.zeros(20),
        torch.zeros(20, 1, 3),
    )
    write_ply(root / "m.ply", splats)
    camera = {"width": 16, "height": 12, "fx": 20.0, "fy": 20.0, "world_to_camera": np.eye(4).tolist()}
    (root / "cams.json").write_text(json.dumps({"cameras": [camera]}))
    write_ring_scene(root / "scene")
    assert (
        cli_main(
            ["train", "--data", str(root / "scene"), "--data-factor", "1", "--steps", "2", "--quiet"]
            + ["--output", str(root / "run"), "--eval-every", "0", "--train.save_renders", "false"]
        )
        == 0
    )
    return root


@pytest.fixture
def fixed_free_memory(monkeypatch):
    monkeypatch.setattr(novel_views, "_free_memory", lambda device: FREE_MEMORY)


RENDER_CASES = {
    "width 1e9": (["--width", "1000000000"], ["needs about", "GiB", "--width", "--batch-size"]),
    "40000 x 40000": (["--width", "40000", "--height", "40000"], ["40000x40000 frames", "--batch-size"]),
    "a large batch of large frames": (
        [
            "--path",
            "ellipse",
            "--frames",
            "100",
            "--width",
            "4000",
            "--height",
            "3000",
            "--batch-size",
            "100",
        ],
        ["rendering 100 4000x3000 frames", "--batch-size"],
    ),
    "frames 1e9": (["--path", "ellipse", "--frames", "1000000000"], ["--frames 1000000000: at most 100,000"]),
    "frames 0": (["--path", "ellipse", "--frames", "0"], ["--frames must be positive"]),
    "focal scale NaN": (["--focal-scale", "nan"], ["--focal-scale must be positive and finite"]),
    "focal scale inf": (["--focal-scale", "inf"], ["--focal-scale must be positive and finite"]),
    "focal scale 1e300": (["--focal-scale", "1e300"], ["overflows float32", "--focal-scale"]),
    "batch size 0": (["--batch-size", "0"], ["--batch-size must be a positive integer"]),
    "width -5": (["--width", "-5"], ["--width must be positive"]),
    "device tpu": (["--device", "tpu"], ["device 'tpu'"]),
}


@pytest.mark.parametrize("case", list(RENDER_CASES))
def test_render_with_a_bad_argument_is_a_one_line_error_that_writes_nothing(
    folder, capsys, fixed_free_memory, case
):
    args, fragments = RENDER_CASES[case]
    cameras = [] if "--path" in args else ["--cameras", folder / "cams.json"]
    model = folder / "run" if "--path" in args else folder / "m.ply"
    before = snapshot(folder)
    message = cli_error(capsys, "render", "--model", model, *cameras, *args, "--quiet")
    assert_names(message, *fragments)
    assert snapshot(folder) == before


def test_the_memory_check_refuses_what_the_machine_cannot_hold(folder, monkeypatch, capsys):
    # the same 2000x1500 render passes with plenty of memory and fails with little
    args = ["render", "--model", folder / "m.ply", "--cameras", folder / "cams.json", "--quiet"]
    args += ["--width", "2000", "--height", "1500", "--output", folder / "big"]
    monkeypatch.setattr(novel_views, "_free_memory", lambda device: 2000 * 1500 * 64)
    assert_names(cli_error(capsys, *args), "more than half of the")
    monkeypatch.setattr(novel_views, "_free_memory", lambda device: 4 * 2000 * 1500 * 64)
    with time_limit():
        assert cli_main([str(arg) for arg in args]) == 0


def test_video_with_a_bad_frame_rate_is_a_one_line_error(folder, capsys):
    pytest.importorskip("av")
    for fps in ("nan", "inf", "0"):
        message = cli_error(
            capsys, "render", "--model", folder / "m.ply", "--cameras", folder / "cams.json", "--video",
            "--fps", fps, "--output", folder / f"video_{fps}",
        )  # fmt: skip
        assert_names(message, "--fps must be positive and finite")
        assert not (folder / f"video_{fps}").exists()


def test_unparsable_arguments_are_usage_errors(folder, capsys):
    for args in (
        ["render", "--model", folder / "m.ply", "--background", "2,0,0"],
        ["render", "--model", folder / "m.ply", "--width", "1e9"],
        ["export", "--model", folder / "m.ply", "--format", "obj"],
        ["train", "--steps", "many"],
    ):
        with pytest.raises(SystemExit) as info:
            cli_main([str(arg) for arg in args])
        assert info.value.code == 2


def test_eval_of_a_ply_says_what_eval_takes(folder, capsys):
    message = cli_error(capsys, "eval", "--model", folder / "run" / "point_cloud.ply")
    assert_names(message, "eval scores a training run's checkpoint", "render --model", "--split test")


def test_export_over_an_existing_file_is_refused(folder, capsys):
    (folder / "exists.splat").write_bytes(b"keep")
    message = cli_error(capsys, "export", "--model", folder / "m.ply", "--output", folder / "exists.splat")
    assert_names(message, "--output", "exists")
    assert (folder / "exists.splat").read_bytes() == b"keep"


def test_an_unexpected_error_is_one_line_and_its_traceback_is_on_request(folder, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something no check foresaw\nsecond line")

    monkeypatch.setattr(novel_views, "render_to_folder", broken)
    args = ["render", "--model", str(folder / "m.ply"), "--cameras", str(folder / "cams.json"), "--quiet"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: something no check foresaw" in err
    assert "GSPLAT_PY_TRACEBACK=1" in err
    monkeypatch.setenv("GSPLAT_PY_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="no check foresaw"):
        cli_main(args)
