"""`gsplat-py render`: a run's views scored like `eval`, PLYs from other writers, camera paths, outputs,
video, and one-line errors for bad input."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData, PlyElement
from render_helpers import SCENE_HEIGHT, SCENE_WIDTH, random_splats, write_ring_scene

from gsplat_py.cli import main as cli_main
from gsplat_py.data import load_colmap_scene
from gsplat_py.io.images import colorize_depth
from gsplat_py.io.ply import ply_property_names, write_ply
from gsplat_py.model import GaussianSplats
from gsplat_py.rendering import rasterization
from gsplat_py.tools.camera_paths import Camera
from gsplat_py.tools.frames import transform_splats
from gsplat_py.tools.novel_views import depth_colour_range
from gsplat_py.tools.saved_models import load_model
from gsplat_py.training.evaluation import float_to_uint8

try:
    import av
except ImportError:
    av = None


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("ring_scene")
    write_ring_scene(root)
    return root


@pytest.fixture(scope="module")
def run(scene, tmp_path_factory):
    """A short training run; SH degree 2 at its last step (one every 8 steps), so the checkpoint's SH is
    cut."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert (
        cli_main(
            [
                "train",
                "--data",
                str(scene),
                "--data-factor",
                "1",
                "--steps",
                "20",
                "--eval-every",
                "0",
                "--quiet",
                "--output",
                str(run),
                "--model.sh_degree_interval",
                "8",
            ]
        )
        == 0
    )
    return run


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def render_cli(*args) -> int:
    return cli_main(["render", "--quiet", *map(str, args)])


def write_foreign_ply(path, splats: GaussianSplats) -> None:
    """Another writer's PLY: plyfile, float64, properties in reverse order, extra normals and colours."""
    n, k = splats.num_gaussians, splats.sh.shape[1]
    f_rest = splats.sh[:, 1:].transpose(1, 2).reshape(n, -1)
    columns = {
        "x": splats.means[:, 0],
        "y": splats.means[:, 1],
        "z": splats.means[:, 2],
        "opacity": splats.logit_opacities,
    }
    columns.update({f"f_dc_{c}": splats.sh[:, 0, c] for c in range(3)})
    columns.update({f"f_rest_{i}": f_rest[:, i] for i in range(3 * (k - 1))})
    columns.update({f"scale_{i}": splats.log_scales[:, i] for i in range(3)})
    columns.update({f"rot_{i}": splats.quats[:, i] for i in range(4)})
    names = list(reversed(columns)) + ["nx", "ny", "nz", "red"]
    vertices = np.zeros(n, dtype=[(name, "u1" if name == "red" else "f8") for name in names])
    for name, values in columns.items():
        vertices[name] = values.double().numpy()
    PlyData([PlyElement.describe(vertices, "vertex")]).write(str(path))


def render_directly(splats: GaussianSplats, views) -> list[np.ndarray]:
    images = []
    for view in views:
        colors, _, _ = rasterization(
            splats.means,
            splats.quats,
            splats.scales(),
            splats.opacities(),
            splats.sh,
            view.world_to_camera[None],
            view.K[None],
            view.width,
            view.height,
            sh_degree=splats.sh_degree,
        )
        images.append(float_to_uint8(colors[0].clamp(0.0, 1.0)))
    return images


def test_test_split_is_scored_as_eval_scores_it(run, tmp_path):
    assert render_cli("--model", run, "--split", "test", "--output", tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert cli_main(["eval", "--model", str(run), "--no-renders"]) == 0
    expected = json.loads((run / "eval.json").read_text())
    assert {key: metrics[key] for key in expected} == expected  # the same record, value for value
    assert metrics["model"] == str(run / "checkpoint.pt") and metrics["step"] == 20
    assert [view["name"] for view in metrics["views"]] == ["view_00.png", "view_08.png"]
    for name in ("view_00", "view_08"):
        assert png(tmp_path / "out" / "images" / f"{name}.png").shape == (SCENE_HEIGHT, SCENE_WIDTH, 3)
    assert (tmp_path / "out" / "contact_sheet.png").is_file()
    cameras = json.loads((tmp_path / "out" / "cameras.json").read_text())
    assert cameras["frame"] == "normalized" and len(cameras["cameras"]) == 2


def test_run_ply_renders_as_its_checkpoint(run):
    checkpoint_model, ply_model = load_model(run), load_model(run / "point_cloud.ply")
    assert (checkpoint_model.sh_degree, ply_model.sh_degree) == (2, 3)  # the checkpoint is cut to its degree
    assert render_cli("--model", run, "--split", "train") == 0  # default output: RUN/renders/train
    assert (
        render_cli("--model", run / "point_cloud.ply", "--split", "train", "--output", run / "from_ply") == 0
    )
    names = sorted(path.name for path in (run / "renders" / "train" / "images").iterdir())
    assert len(names) == 7
    for name in names:
        assert np.array_equal(
            png(run / "renders" / "train" / "images" / name), png(run / "from_ply" / "images" / name)
        )


def test_run_folder_without_checkpoint_takes_the_normalisation_of_its_scene(run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.toml", "point_cloud.ply"):
        shutil.copy(run / name, copy / name)
    model = load_model(copy)
    # the trainer records its normalisation in the PLY header, so the copy still knows its frame
    assert model.frame.name == "normalized" and model.step is None
    assert torch.allclose(model.frame.from_colmap, load_model(run).frame.from_colmap, atol=1e-9)
    assert render_cli("--model", copy, "--split", "test") == 0
    assert render_cli("--model", run, "--split", "test", "--output", tmp_path / "from_run") == 0
    for name in ("view_00.png", "view_08.png"):
        assert np.array_equal(
            png(copy / "renders" / "test" / "images" / name), png(tmp_path / "from_run" / "images" / name)
        )


def test_foreign_ply_renders_in_colmap_frame_as_the_model_in_memory(scene, tmp_path):
    splats = random_splats(300, degree=1, colmap_frame=True)
    write_foreign_ply(tmp_path / "foreign.ply", splats)
    assert (
        render_cli(
            "--model",
            tmp_path / "foreign.ply",
            "--data",
            scene,
            "--data-factor",
            "1",
            "--split",
            "train",
            "--batch-size",
            "3",
            "--device",
            "cpu",  # the same kernels as render_directly's, so the same bits
        )
        == 0
    )
    output = tmp_path / "foreign_renders" / "train"
    views = load_colmap_scene(scene, data_factor=1, normalize=False).train_views
    expected = render_directly(splats, views)
    assert np.mean([image.mean() for image in expected]) > 20  # the model is in view
    for view, image in zip(views, expected):
        assert np.array_equal(png(output / "images" / view.name), image)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["step"] is None and metrics["num_gaussians"] == 300 and len(metrics["views"]) == 7

    # The same model in the normalised frame, declared with --model-frame: the same images.
    normalization = load_colmap_scene(scene, data_factor=1).transform
    write_ply(tmp_path / "normalized.ply", transform_splats(splats, normalization))
    assert (
        render_cli(
            "--model",
            tmp_path / "normalized.ply",
            "--model-frame",
            "normalized",
            "--data",
            scene,
            "--data-factor",
            "1",
            "--split",
            "train",
        )
        == 0
    )
    for view in views:
        difference = png(tmp_path / "normalized_renders" / "train" / "images" / view.name).astype(int) - png(
            output / "images" / view.name
        )
        assert np.mean(np.abs(difference) > 1) < 1e-3


def test_path_outputs_and_replay_in_another_frame(run, tmp_path):
    out = tmp_path / "ellipse"
    assert (
        render_cli(
            "--model",
            run,
            "--path",
            "ellipse",
            "--frames",
            "6",
            "--width",
            "32",
            "--depth",
            "--alpha",
            "--output",
            out,
        )
        == 0
    )
    names = [f"frame_{i:05d}" for i in range(6)]
    assert sorted(path.stem for path in (out / "images").iterdir()) == names
    for name in names:
        image, alpha = png(out / "images" / f"{name}.png"), png(out / "alpha" / f"{name}.png")
        depth = np.load(out / "depth" / f"{name}.npy")
        assert image.shape == (24, 32, 3) and alpha.shape == (24, 32) and depth.shape == (24, 32)
        assert depth.dtype == np.float32 and (depth[alpha > 128] > 0).all()
        assert (image[alpha == 0] == 0).all()  # black background where nothing was hit
        assert png(out / "depth" / f"{name}.png").shape == (24, 32, 3)
    assert len(json.loads((out / "cameras.json").read_text())["cameras"]) == 6

    # Replayed on the model exported in COLMAP's frame: the JSON's normalised cameras are moved there.
    assert (
        cli_main(
            [
                "export",
                "--model",
                str(run),
                "--format",
                "ply",
                "--frame",
                "colmap",
                "--output",
                str(tmp_path / "colmap.ply"),
            ]
        )
        == 0
    )
    assert (
        render_cli(
            "--model",
            tmp_path / "colmap.ply",
            "--cameras",
            out / "cameras.json",
            "--output",
            tmp_path / "replay",
        )
        == 0
    )
    for name in names:
        difference = png(tmp_path / "replay" / "images" / f"{name}.png").astype(int) - png(
            out / "images" / f"{name}.png"
        )
        assert np.abs(difference).max() <= 1


@pytest.mark.skipif(av is None, reason="the video encoder (pip install av) is not installed")
def test_video_has_every_frame_at_the_render_size(run, tmp_path):
    video = tmp_path / "clip.mp4"
    assert (
        render_cli(
            "--model",
            run,
            "--path",
            "spiral",
            "--frames",
            "5",
            "--width",
            "33",
            "--video",
            video,
            "--fps",
            "24",
            "--output",
            tmp_path / "spiral",
        )
        == 0
    )
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 24
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == 5
    assert frames[0].shape == (26, 34, 3)  # 33x25 rendered, padded to even for H.264's yuv420p
    first = png(tmp_path / "spiral" / "images" / "frame_00000.png")
    assert first.shape == (25, 33, 3)
    assert np.abs(frames[0][:25, :33].astype(int) - first).mean() < 4.0  # lossy, but the same picture


@pytest.mark.skipif(av is None, reason="the video encoder (pip install av) is not installed")
def test_video_without_a_file_name_goes_with_its_frames(run, tmp_path):
    args = ("--model", run, "--path", "ellipse", "--frames", "3", "--width", "16", "--video")
    assert render_cli(*args, "--output", tmp_path / "out") == 0
    assert (tmp_path / "out" / "ellipse.mp4").is_file() and (tmp_path / "out" / "images").is_dir()


def test_video_in_another_container_is_refused_before_rendering(run, tmp_path, capsys):
    args = ("--model", run, "--path", "ellipse", "--frames", "3", "--video", tmp_path / "v.avi")
    assert render_cli(*args, "--output", tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--video " in error and "v.avi: expected a .mp4 file name" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "v.avi").exists()


def test_missing_video_encoder_is_named_before_rendering(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    assert (
        render_cli(
            "--model", run, "--path", "ellipse", "--video", tmp_path / "a.mp4", "--output", tmp_path / "o"
        )
        == 1
    )
    assert (
        capsys.readouterr().err
        == "gsplat-py: error: writing MP4 video needs the PyAV package: pip install av\n"
    )
    assert not (tmp_path / "o").exists()


def test_empty_model_renders_the_background(tmp_path):
    empty = GaussianSplats(
        torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 1, 3)
    )
    write_ply(tmp_path / "empty.ply", empty)
    camera = {
        "name": "only",
        "width": 12,
        "height": 8,
        "fx": 10.0,
        "fy": 10.0,
        "world_to_camera": np.eye(4).tolist(),
    }
    (tmp_path / "cams.json").write_text(json.dumps({"cameras": [camera]}))
    with pytest.warns(UserWarning, match="empty.ply: the model has no Gaussians"):
        rc = render_cli(
            "--model",
            tmp_path / "empty.ply",
            "--cameras",
            tmp_path / "cams.json",
            "--background",
            "0.2,0.4,0.6",
            "--alpha",
            "--depth",
            "--output",
            tmp_path / "out",
        )
    assert rc == 0
    image = png(tmp_path / "out" / "images" / "only.png")
    assert image.shape == (8, 12, 3) and (image == [51, 102, 153]).all()
    assert (png(tmp_path / "out" / "alpha" / "only.png") == 0).all()
    assert (np.load(tmp_path / "out" / "depth" / "only.npy") == 0).all()


def bad_ply(path, degree: int = 0, drop=(), nan_at=None, extra_rest: int = 0) -> None:
    names = [name for name in ply_property_names(degree) if name not in drop] + [
        f"f_rest_{i}" for i in range(extra_rest)
    ]
    vertices = np.zeros(5, dtype=[(name, "f4") for name in names])
    if nan_at is not None:
        vertices[nan_at[0]][nan_at[1]] = np.nan
    PlyData([PlyElement.describe(vertices, "vertex")]).write(str(path))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"drop": ("scale_2",)}, "bad.ply: missing property 'scale_2'"),
        ({"nan_at": (3, "opacity")}, "bad.ply: property 'opacity' has a non-finite value (nan) at row 3"),
        ({"extra_rest": 7}, "bad.ply: 7 f_rest_* properties match no SH degree"),
    ],
)
def test_bad_ply_is_a_one_line_error_naming_the_field(tmp_path, capsys, kwargs, message):
    bad_ply(tmp_path / "bad.ply", **kwargs)
    (tmp_path / "cams.json").write_text(
        json.dumps(
            {
                "cameras": [
                    {"width": 4, "height": 4, "fx": 4.0, "fy": 4.0, "world_to_camera": np.eye(4).tolist()}
                ]
            }
        )
    )
    assert render_cli("--model", tmp_path / "bad.ply", "--cameras", tmp_path / "cams.json") == 1
    err = capsys.readouterr().err
    assert err.startswith("gsplat-py: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"world_to_camera": (np.eye(4) * [1.0, 1.0, 1.5, 1.0]).tolist()},
            "cameras[0].world_to_camera: not a rigid transform",
        ),
        ({"fx": 0.0}, "cameras[0].fx: expected a positive number of pixels, got 0.0"),
    ],
)
def test_bad_camera_file_is_a_one_line_error(tmp_path, capsys, change, message):
    write_ply(tmp_path / "m.ply", random_splats(5, degree=0))
    camera = {"width": 4, "height": 4, "fx": 4.0, "fy": 4.0, "world_to_camera": np.eye(4).tolist(), **change}
    (tmp_path / "cams.json").write_text(json.dumps({"cameras": [camera]}))
    assert render_cli("--model", tmp_path / "m.ply", "--cameras", tmp_path / "cams.json") == 1
    err = capsys.readouterr().err
    assert err.startswith("gsplat-py: error: ") and f"cams.json: {message}" in err and err.count("\n") == 1


def test_render_requests_that_cannot_be_served(run, tmp_path, capsys):
    write_ply(tmp_path / "m.ply", random_splats(5, degree=0))
    cases = [
        (
            ["--model", tmp_path / "m.ply", "--path", "ellipse"],
            "--path ellipse needs the scene the model was trained on: give it with --data",
        ),
        (["--model", run, "--split", "test", "--frames", "10"], "--frames applies to generated paths"),
        (
            ["--model", run, "--model-frame", "colmap"],
            "the model is in the normalized frame (the frame of its training run), not the colmap frame",
        ),
        (["--model", tmp_path / "nothing"], "nothing: no such file or folder"),
        (["--model", run, "--path", "ellipse", "--focal-scale", "0"], "--focal-scale must be positive"),
    ]
    for args, message in cases:
        assert render_cli(*args) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert render_cli("--model", run, "--split", "test", "--output", tmp_path / "out") == 0
    assert render_cli("--model", run, "--split", "test", "--output", tmp_path / "out") == 1
    assert (
        "the folder already holds files; choose another --output or pass --overwrite"
        in capsys.readouterr().err
    )
    assert render_cli("--model", run, "--split", "test", "--output", tmp_path / "out", "--overwrite") == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_gpu_device_without_a_gpu_is_a_one_line_error_before_any_output(run, tmp_path, capsys):
    assert (
        render_cli(
            "--model",
            run,
            "--path",
            "ellipse",
            "--frames",
            "2",
            "--device",
            "cuda",
            "--output",
            tmp_path / "o",
        )
        == 1
    )
    error = capsys.readouterr().err
    assert error.startswith("gsplat-py: error: device 'cuda' asks for a GPU, but ") and error.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_depth_colours_near_red_far_blue_and_black_where_transparent():
    depth = np.array([[1.0, 2.0, 3.0, 9.0]])
    alpha = np.array([[1.0, 1.0, 1.0, 0.2]])
    image = colorize_depth(depth, alpha, depth_range=(1.0, 3.0))
    assert image[0, 0, 0] > 100 and image[0, 0, 2] < 50  # nearest: red
    assert int(image[0, 2].sum()) < 100 and image[0, 2, 0] < 60  # farthest: Turbo's dark end
    assert (image[0, 3] == 0).all()  # transparent: black
    # with one range, a depth keeps its colour whatever else the frame shows (no flicker in a video)
    other = colorize_depth(np.array([[2.0, 50.0]]), np.ones((1, 2)), depth_range=(1.0, 3.0))
    assert (other[0, 0] == image[0, 1]).all()
    assert not (colorize_depth(np.array([[2.0, 50.0]]), np.ones((1, 2)))[0, 0] == image[0, 1]).all()


def test_depth_colour_range_takes_the_visible_gaussians_depths():
    camera = Camera(
        "c",
        torch.eye(4, dtype=torch.float64),
        torch.tensor([[50.0, 0.0, 50.0], [0.0, 50.0, 50.0], [0.0, 0.0, 1.0]], dtype=torch.float64),
        100,
        100,
    )
    z = torch.linspace(2.0, 6.0, 201)
    visible = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], dim=1)
    hidden = torch.tensor(
        [[0.0, 0.0, -3.0], [500.0, 0.0, 4.0], [0.0, 0.0, 100.0]]
    )  # behind, outside, transparent
    means = torch.cat([visible, hidden])
    logits = torch.full((means.shape[0],), 4.0)
    logits[-1] = -4.0
    splats = GaussianSplats(
        means,
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(means.shape[0], 1),
        torch.full((means.shape[0], 3), -3.0),
        logits,
        torch.zeros(means.shape[0], 1, 3),
    )
    near, far = depth_colour_range(splats, [camera])
    assert near == pytest.approx(2.04, abs=1e-6) and far == pytest.approx(5.96, abs=1e-6)
    assert depth_colour_range(splats, [camera], max_points=5) is not None  # subsampled, still in range
