"""The viewer without a browser: camera conventions, the frames it shows against `gsplat-py render`'s files,
the training hooks (reports, pause), and the one-line errors before a server starts."""

import math
import socket
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from render_helpers import random_splats
from test_training import densifying_config, ring_eyes, synthetic_scene

from gsplat_py.cli import main as cli_main
from gsplat_py.data.world_frame import WorldFrame
from gsplat_py.io.ply import write_ply
from gsplat_py.io.video import MissingPackageError
from gsplat_py.model import params_to_splats
from gsplat_py.tools.camera_paths import Camera, write_cameras_json
from gsplat_py.tools.viewer import (
    RenderTimes,
    camera_from_pose,
    pose_of_camera,
    render_image,
    require_viser,
    splats_up_to_degree,
)
from gsplat_py.training.hooks import StepReport, TrainingHook
from gsplat_py.training.trainer import Trainer


def test_camera_from_pose_follows_opencv_axes():
    """A camera at the origin with the identity rotation looks down +z, x right, y down; the vertical field
    of view spans the image height."""
    camera = camera_from_pose((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), math.radians(90.0), 400, 300)
    assert torch.equal(camera.world_to_camera, torch.eye(4, dtype=torch.float64))
    expected_K = [[150.0, 0.0, 200.0], [0.0, 150.0, 150.0], [0.0, 0.0, 1.0]]  # tan(45°) = 1
    assert torch.allclose(camera.K, torch.tensor(expected_K, dtype=torch.float64), rtol=1e-15, atol=0)

    # turned 90 degrees about +y (w = cos 45, y = sin 45): the camera's forward (+z) becomes world +x
    half = math.sqrt(0.5)
    camera = camera_from_pose((half, 0.0, half, 0.0), (1.0, 2.0, 3.0), math.radians(60.0), 64, 48)
    point = torch.tensor([1.0 + 5.0, 2.0, 3.0, 1.0], dtype=torch.float64)  # 5 units ahead
    in_camera = camera.world_to_camera @ point
    assert torch.allclose(in_camera[:3], torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64), atol=1e-12)


def test_pose_of_camera_inverts_camera_from_pose():
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        wxyz = torch.randn(4, generator=g, dtype=torch.float64)
        wxyz = (wxyz / wxyz.norm()).tolist()
        position = torch.randn(3, generator=g, dtype=torch.float64).tolist()
        camera = camera_from_pose(wxyz, position, 0.7, 320, 240)
        back_wxyz, back_position, back_fov = pose_of_camera(camera)
        again = camera_from_pose(back_wxyz, back_position, back_fov, 320, 240)
        assert torch.allclose(again.world_to_camera, camera.world_to_camera, atol=1e-12)
        assert torch.allclose(again.K, camera.K, atol=1e-12)
        assert np.allclose(back_position, position, atol=1e-12)
        assert back_fov == pytest.approx(0.7, abs=1e-12)


def test_frames_equal_what_render_writes(tmp_path):
    """RGB, depth and alpha frames are the files `gsplat-py render --cameras --depth --alpha` writes."""
    splats = random_splats(n=500, degree=3)
    camera = camera_from_pose((0.2, -0.9, 0.1, 0.3), (0.0, 0.0, 0.0), 0.9, 61, 47, name="probe")
    camera = Camera("probe", camera.world_to_camera, camera.K, camera.width, camera.height)
    # back off along the camera's -z until the model is in front
    camera.world_to_camera[2, 3] += 3.0
    write_ply(tmp_path / "model.ply", splats)
    write_cameras_json(tmp_path / "cameras.json", [camera])
    assert (
        cli_main(
            [
                "render",
                "--quiet",
                "--model",
                str(tmp_path / "model.ply"),
                "--cameras",
                str(tmp_path / "cameras.json"),
                "--depth",
                "--alpha",
                "--background",
                "0.2,0.4,0.6",
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    files = {"RGB": "images", "depth": "depth", "alpha": "alpha"}
    for mode, folder in files.items():
        written = np.asarray(Image.open(tmp_path / "out" / folder / "probe.png").convert("RGB"))
        frame = render_image(splats, camera, mode, background=(0.2, 0.4, 0.6))
        assert np.array_equal(frame, written), mode
    assert (frame[..., 0] > 0).mean() > 0.2  # the model is in view


def test_sh_degree_limit_drops_the_higher_bands():
    splats = random_splats(n=300, degree=3)
    camera = camera_from_pose((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -3.0), 0.9, 40, 30)
    for degree in range(4):
        limited = splats_up_to_degree(splats, degree)
        assert limited.sh_degree == degree
        cut = type(splats)(splats.means, splats.quats, splats.log_scales, splats.logit_opacities, splats.sh)
        cut.sh = splats.sh[:, : (degree + 1) ** 2].clone()
        assert np.array_equal(render_image(limited, camera), render_image(cut, camera))
    assert not np.array_equal(
        render_image(splats_up_to_degree(splats, 0), camera), render_image(splats, camera)
    )  # the model's view-dependent colour shows


def test_preview_size_follows_the_fitted_render_time():
    times = RenderTimes()
    assert times.preview_pixels(0.1, 10**6) == 320 * 240  # nothing measured yet
    for pixels in (10_000, 40_000, 480_000, 90_000):
        times.add(pixels, 0.02 + 1e-7 * pixels)
    fixed, per_pixel = times.fit()
    assert fixed == pytest.approx(0.02, rel=1e-9) and per_pixel == pytest.approx(1e-7, rel=1e-9)
    assert times.preview_pixels(0.07, 10**6) == 500_000  # (0.07 - 0.02) / 1e-7
    assert times.preview_pixels(0.07, 100_000) == 100_000  # never above the canvas
    assert times.preview_pixels(0.03, 10**6) == 200_000  # the budget below twice the fixed cost: that
    one_size = RenderTimes()
    one_size.add(1000, 0.01)
    assert one_size.fit() == (0.0, 1e-5)


def test_params_to_splats_is_a_copy():
    splats = random_splats(n=50, degree=1)
    from gsplat_py.model import splats_to_params

    params = splats_to_params(splats)
    copy = params_to_splats(params)
    with torch.no_grad():
        params["means"].add_(1.0)
    assert torch.equal(copy.means, splats.means)


# --------------------------------------------------------------------------------------------------------
# Training hooks


class Recorder(TrainingHook):
    def __init__(self):
        self.reports: list[StepReport] = []
        self.evaluations: list[int] = []

    def after_step(self, trainer, report):
        assert report.num_gaussians == trainer.num_gaussians
        self.reports.append(report)

    def after_evaluation(self, trainer, record):
        self.evaluations.append(record["step"])


def test_hooks_see_every_step_and_evaluation_and_leave_training_unchanged(tmp_path):
    scene = synthetic_scene(ring_eyes(6), test_every=3)
    config = densifying_config(tmp_path / "a", steps=12)
    config.train.eval_steps = [5]
    plain = Trainer(config, scene=scene, progress=False)
    plain.train()
    recorder = Recorder()
    watched = Trainer(
        densifying_config(tmp_path / "b", steps=12), scene=scene, progress=False, hooks=[recorder]
    )
    watched.config.train.eval_steps = [5]
    watched.train()
    assert [r.step for r in recorder.reports] == list(range(1, 13))
    assert all(r.steps == 12 for r in recorder.reports)
    assert [r.sh_degree for r in recorder.reports] == [config.model.sh_degree_at(s) for s in range(1, 13)]
    assert all(r.steps_per_s > 0 and math.isfinite(r.loss) for r in recorder.reports)
    assert recorder.evaluations == [5, 12]
    for name in plain.params:
        assert torch.equal(plain.params[name], watched.params[name]), name


class Pauser(TrainingHook):
    """Holds training after step ``at`` until ``go`` is set."""

    def __init__(self, at: int):
        self.at = at
        self.reached = threading.Event()
        self.go = threading.Event()
        self.step = 0

    def after_step(self, trainer, report):
        self.step = report.step

    def wait_while_paused(self):
        if self.step == self.at:
            self.reached.set()
            self.go.wait()


def test_a_pause_holds_training_and_is_not_training_time(tmp_path):
    scene = synthetic_scene(ring_eyes(6), test_every=3)
    pauser = Pauser(at=4)
    trainer = Trainer(densifying_config(tmp_path, steps=8), scene=scene, progress=False, hooks=[pauser])
    worker = threading.Thread(target=trainer.train)
    started = time.perf_counter()
    worker.start()
    assert pauser.reached.wait(timeout=120)
    time.sleep(1.0)
    assert trainer.step == 4
    pauser.go.set()
    worker.join(timeout=120)
    wall = time.perf_counter() - started
    assert trainer.step == 8
    # the one-second pause is left out of the training time (nothing else on the machine can make the
    # training time longer than the wall time minus the pause)
    assert trainer.metrics[-1]["elapsed_s"] <= wall - 1.0


# --------------------------------------------------------------------------------------------------------
# Errors before the server starts


def test_missing_viser_names_the_package(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "viser", None)  # import viser now raises ImportError
    with pytest.raises(MissingPackageError, match="viser"):
        require_viser()
    write_ply(tmp_path / "model.ply", random_splats(n=10, degree=0))
    assert cli_main(["view", "--model", str(tmp_path / "model.ply")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install viser" in err and '".[viewer]"' in err


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_port_in_use_is_named_before_anything_starts(busy_port, tmp_path, capsys):
    pytest.importorskip("viser")
    write_ply(tmp_path / "model.ply", random_splats(n=10, degree=0))
    assert cli_main(["view", "--model", str(tmp_path / "model.ply"), "--port", str(busy_port)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--port {busy_port}" in err and "in use" in err

    run = tmp_path / "run"
    arguments = ["train", "--viewer", "--port", str(busy_port), "--steps", "5", "--output", str(run)]
    assert cli_main(arguments) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--port {busy_port}" in err
    assert not run.exists()  # nothing was started


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file or folder"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", "model.ply"),
        (b"not a ply at all", "model.ply"),
    ],
)
def test_bad_models_are_one_line_errors(tmp_path, capsys, content, message):
    pytest.importorskip("viser")
    path = tmp_path / "model.ply"
    if content is not None:
        path.write_bytes(content)
    assert cli_main(["view", "--model", str(path), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


# --------------------------------------------------------------------------------------------------------
# The server in this process (no browser)


def test_live_training_pauses_and_resumes_through_the_hook(tmp_path):
    pytest.importorskip("viser")
    from gsplat_py.tools.viewer import LiveTraining, Viewer

    scene = synthetic_scene(ring_eyes(6), test_every=3)
    trainer = Trainer(densifying_config(tmp_path, steps=30), scene=scene, progress=False)
    viewer = Viewer(params_to_splats(trainer.params), WorldFrame.colmap(), port=0, output=tmp_path / "views")
    try:
        live = LiveTraining(viewer)
        trainer.hooks.append(live)
        live.pause()
        worker = threading.Thread(target=trainer.train)
        worker.start()
        deadline = time.monotonic() + 120
        while trainer.step < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert trainer.step == 1  # held after the first step
        assert "paused" in live.panel.text.content and "step 1 / 30" in live.panel.text.content
        assert live.panel.pause.label == "Resume training"
        live.toggle_pause()
        worker.join(timeout=120)
        assert trainer.step == 30
        assert "done" in live.panel.text.content
        # the last step's model is shown, cut to the SH degree reached
        shown, note = viewer.model()
        assert note == "step 30"
        assert torch.equal(shown.means, trainer.params["means"].detach())
        assert shown.sh_degree == trainer.config.model.sh_degree_at(30) == 1
        assert live.panel.pause.disabled
    finally:
        viewer.stop()


def test_saved_views_take_the_next_free_name(tmp_path):
    pytest.importorskip("viser")
    from gsplat_py.tools.viewer import Viewer

    splats = random_splats(n=20, degree=0)
    viewer = Viewer(splats, WorldFrame.colmap(), port=0, output=tmp_path / "views")
    try:
        camera = camera_from_pose((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -3.0), 0.9, 8, 6)
        image = render_image(splats, camera)
        assert viewer.save_view(camera, image).name == "view_000.png"
        (tmp_path / "views" / "view_001.json").write_text("{}")  # someone else's file is kept
        assert viewer.save_view(camera, image).name == "view_002.png"
        assert sorted(p.name for p in (tmp_path / "views").iterdir()) == [
            "view_000.json",
            "view_000.png",
            "view_001.json",
            "view_002.json",
            "view_002.png",
        ]
    finally:
        viewer.stop()
