"""`gsplat-py view` and `train --viewer` seen through a real browser: headless Chromium (browser_helpers)
opens the page, and its screenshots are compared with `gsplat-py render` of the camera the page reports."""

import json
import math
import re
import time

import numpy as np
import pytest
import torch
from browser_helpers import (
    PAGE_WAIT_MS,
    Server,
    canvas_box,
    close_notifications,
    launch_chromium,
    open_page,
    psnr,
    require_browser,
    screenshot,
    wait_for_exact_frame,
    wait_for_exact_frame_of_the_canvas,
)
from PIL import Image
from render_helpers import CANONICAL_TO_COLMAP, random_splats, write_ring_scene

from gsplat_py.cli import main as cli_main
from gsplat_py.io.ply import write_ply
from gsplat_py.tools.camera_paths import cameras_from_views, read_cameras_json
from gsplat_py.tools.saved_models import load_model, scene_views
from gsplat_py.tools.viewer import frustum_size, render_image, splats_up_to_degree
from gsplat_py.training.checkpoint import load_checkpoint

# The page shows our PNG frame on a WebGL quad that covers the canvas texel for texel, so away from the
# chrome drawn over it the screenshot should equal the render: on SwiftShader it does to within one grey
# level on ~2% of the pixels (66 dB). 40 dB (an RMS error of 2.5 grey levels) leaves room for another GPU's
# texture filtering, while the same camera turned by one degree scores ~22 dB
# (test_the_first_frame_is_the_render_of_the_pages_camera checks that contrast).
MIN_PSNR = 40.0
# viser's orientation axes, drawn over the bottom-left corner of the canvas.
AXES_CORNER = 100


@pytest.fixture(scope="module", autouse=True)
def browser_available():
    require_browser()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("ring_scene")
    write_ring_scene(root)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Gaussians of SH degree 3 with strong view-dependent colour, in the ring scene's COLMAP frame."""
    path = tmp_path_factory.mktemp("model") / "model.ply"
    write_ply(path, random_splats(n=3000, degree=3, colmap_frame=True))
    return path


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


def chrome_mask(shape) -> np.ndarray:
    mask = np.ones(shape[:2], dtype=bool)
    mask[-AXES_CORNER:, :AXES_CORNER] = False
    return mask


def model_arguments(model, scene) -> list[str]:
    """The model and its scene (its full-size images) as `render` and `view` take them."""
    return ["--model", str(model), "--data", str(scene), "--data-factor", "1"]


def render_saved_view(model, scene, camera_file, output, *extra) -> np.ndarray:
    """`gsplat-py render --cameras camera_file` into output; its RGB image."""
    arguments = ["render", "--quiet", *model_arguments(model, scene), "--cameras", str(camera_file)]
    assert cli_main([*arguments, "--output", str(output), *extra]) == 0
    name = read_cameras_json(camera_file).cameras[0].name
    return np.asarray(Image.open(output / "images" / f"{name}.png").convert("RGB"))


def click_save(page, views):
    """Clicks "Save view" and waits for the new files: (PNG, JSON). Then waits for the "View saved"
    notification, which the server sends after writing the files, and closes it: left open (8 s), it may
    lie over the place a test clicks next and take the click."""
    before = set(views.glob("*.json")) if views.exists() else set()
    page.get_by_role("button", name="Save view").click()
    deadline = time.monotonic() + PAGE_WAIT_MS / 1000.0
    while time.monotonic() < deadline:
        new = set(views.glob("*.json")) - before if views.exists() else set()
        if new:
            (json_file,) = new
            png_file = json_file.with_suffix(".png")
            assert png_file.exists()
            page.get_by_text("View saved").first.wait_for(state="visible", timeout=PAGE_WAIT_MS)
            close_notifications(page)
            return png_file, json_file
        page.wait_for_timeout(100)
    raise AssertionError("no camera file after Save view")


def wait_until_still(page) -> int:
    """Waits until the tab shows an exact frame and no newer frame for a second (after a drag the camera
    glides on for a while); its frame number."""
    last = wait_for_exact_frame(page)[2]
    for _ in range(120):
        page.wait_for_timeout(1000)
        current = wait_for_exact_frame(page)[2]
        if current == last:
            return current
        last = current
    raise AssertionError("the picture did not come to rest")


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def coverage(image: np.ndarray) -> float:
    """The fraction of the picture (minus the chrome) the model covers (the background is black)."""
    return float((image[chrome_mask(image.shape)].max(axis=-1) > 20).mean())


def saved_camera(camera_file):
    return read_cameras_json(camera_file).cameras[0]


@pytest.fixture(scope="module")
def view_server(model, scene, tmp_path_factory):
    folder = tmp_path_factory.mktemp("view_server")
    server = Server(
        ["view", *model_arguments(model, scene), "--port", "0", "--output", str(folder / "views")],
        folder / "stderr.txt",
    )
    try:
        yield server, server.url(), folder / "views"
    finally:
        assert server.interrupt() == 0, server.stderr()


def test_the_first_frame_is_the_render_of_the_pages_camera(view_server, model, scene, playwright, tmp_path):
    server, url, views = view_server
    context = launch_chromium(playwright, tmp_path / "profile")
    try:
        page = open_page(context, url)
        width, height, frame = wait_for_exact_frame_of_the_canvas(page)
        close_notifications(page)
        page.get_by_label("Training cameras").uncheck()  # hide the frustums drawn over the picture
        shown = screenshot(page)
        saved_png, saved_json = click_save(page, views)
    finally:
        context.close()

    rendered = render_saved_view(model, scene, saved_json, tmp_path / "render")
    assert rendered.shape == shown.shape == (height, width, 3)
    assert np.array_equal(png(saved_png), rendered)
    mask = chrome_mask(shown.shape)
    assert psnr(shown, rendered, mask) > MIN_PSNR
    assert coverage(rendered) > 0.1  # the comparison is not of two empty backgrounds

    # Mutation check: the same camera turned by one degree does not pass.
    turned_file = tmp_path / "turned.json"
    document = json.loads(saved_json.read_text())
    matrix = torch.tensor(document["cameras"][0]["world_to_camera"], dtype=torch.float64)
    angle = math.radians(1.0)
    turn = torch.eye(4, dtype=torch.float64)
    turn[0, 0] = turn[2, 2] = math.cos(angle)
    turn[0, 2], turn[2, 0] = math.sin(angle), -math.sin(angle)
    document["cameras"][0]["world_to_camera"] = (turn @ matrix).tolist()
    turned_file.write_text(json.dumps(document))
    turned = render_saved_view(model, scene, turned_file, tmp_path / "turned")
    assert psnr(shown, turned, mask) < MIN_PSNR - 10.0


def test_the_pages_controls_move_the_camera_and_the_picture_follows(view_server, playwright, tmp_path):
    server, url, views = view_server
    context = launch_chromium(playwright, tmp_path / "profile")
    try:
        page = open_page(context, url)
        wait_for_exact_frame(page)
        close_notifications(page)
        page.get_by_label("Training cameras").uncheck()
        wait_until_still(page)
        before = screenshot(page)
        _, before_json = click_save(page, views)
        box = canvas_box(page)
        middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

        page.mouse.move(*middle)  # orbit: drag to the right
        page.mouse.down()
        page.mouse.move(middle[0] + 120, middle[1], steps=12)
        page.mouse.up()
        wait_until_still(page)
        orbited = screenshot(page)
        orbited_png, orbited_json = click_save(page, views)

        page.mouse.move(*middle)  # zoom out: the wheel turned towards the user
        page.mouse.wheel(0, 600)
        wait_until_still(page)
        zoomed = screenshot(page)
        zoomed_png, zoomed_json = click_save(page, views)
    finally:
        context.close()

    # The start view looks at the middle of the ring of training cameras, which orbiting goes around.
    centre = torch.from_numpy(CANONICAL_TO_COLMAP[:3, 3])
    start, turned, away = (
        saved_camera(f).camera_to_world()[:3, 3] for f in (before_json, orbited_json, zoomed_json)
    )
    distance = float((start - centre).norm())
    assert float((turned - centre).norm()) == pytest.approx(distance, rel=0.02)
    assert float((turned - start).norm()) > 0.1 * distance
    assert float((away - centre).norm()) > 1.1 * distance
    mask = chrome_mask(before.shape)
    assert psnr(orbited, png(orbited_png), mask) > MIN_PSNR  # the page shows the new camera's render...
    assert psnr(orbited, before, mask) < MIN_PSNR - 10.0  # ...which is another picture
    assert psnr(zoomed, png(zoomed_png), mask) > MIN_PSNR
    assert coverage(zoomed) < 0.8 * coverage(orbited)  # farther away, the model looks smaller


def project(camera, point: torch.Tensor) -> tuple[float, float, float]:
    """(u, v, depth) of a world point in ``camera``'s image."""
    x, y, z = (camera.world_to_camera[:3, :3] @ point + camera.world_to_camera[:3, 3]).tolist()
    return (
        camera.K[0, 0].item() * x / z + camera.K[0, 2].item(),
        camera.K[1, 1].item() * y / z + camera.K[1, 2].item(),
        z,
    )


def test_clicking_a_training_camera_moves_the_view_there(view_server, model, scene, playwright, tmp_path):
    server, url, views = view_server
    _, scene_data = scene_views(load_model(model), scene, data_factor=1)
    cameras = cameras_from_views(scene_data.train_views)
    size = frustum_size(cameras)
    context = launch_chromium(playwright, tmp_path / "profile")
    try:
        page = open_page(context, url)
        wait_for_exact_frame(page)
        close_notifications(page)
        wait_until_still(page)
        start_png, start_json = click_save(page, views)
        start = saved_camera(start_json)

        # The middle of each frustum's far face, where viser puts the photo (a frustum of viser's `scale`
        # s has the volume of a pyramid of side s: its depth is s / cbrt(tan(fov/2)^2 aspect / 3)).
        targets = []
        for index, camera in enumerate(cameras):
            half_height = camera.height / (2.0 * camera.K[1, 1].item())
            depth = size / (half_height * half_height * camera.width / camera.height / 3.0) ** (1.0 / 3.0)
            pose = camera.camera_to_world()
            u, v, z = project(start, pose[:3, 3] + depth * pose[:3, 2])
            apex = project(start, pose[:3, 3])
            targets.append((index, u, v, z, apex))
        inside = [
            t
            for t in targets
            if t[3] > 0 and 30 < t[1] < start.width - 30 and 30 < t[2] < start.height - AXES_CORNER
        ]
        assert inside, "no training camera in view"

        def clearance(target):  # pixels to the nearest other frustum's face or apex
            return min(
                min(math.dist(target[1:3], other[1:3]), math.dist(target[1:3], other[4][:2]))
                for other in targets
                if other is not target
            )

        index, u, v, _, _ = max(inside, key=clearance)
        # The browser decodes the photos in its own time: click once the target's photo is on screen (the
        # pixels there differ from the picture without frustums).
        without, patch = (
            png(start_png).astype(int),
            (slice(int(v) - 2, int(v) + 3), slice(int(u) - 2, int(u) + 3)),
        )
        deadline = time.monotonic() + PAGE_WAIT_MS / 1000.0
        while np.abs(screenshot(page)[patch].astype(int) - without[patch]).mean() < 10:
            assert time.monotonic() < deadline, "the training camera's photo did not show"
            page.wait_for_timeout(500)
        target = cameras[index]

        def at(camera, place, tolerance: float = 1e-4 * (1 + size)) -> bool:
            return torch.allclose(camera.camera_to_world(), place.camera_to_world(), atol=tolerance)

        travel = float((target.camera_to_world() - start.camera_to_world())[:3, 3].norm())

        def stayed(camera) -> bool:
            """The view did not set off (within a thousandth of the way to the target, in case the press turns
            it a hair)."""
            return at(camera, start, tolerance=1e-3 * (1 + travel))

        # On a busy machine the page may drop a click (the view stays where it was: CI saw four in a row
        # when a "View saved" notification could still arrive over the photo after the save, so click_save
        # now waits for it and closes it; up to four clicks are given, each after the pointer has rested on
        # the photo) or still be gliding towards the camera when it next holds still for a second (saved
        # again until it arrives or the time is up).
        box = canvas_box(page)
        jumped = start
        deadline = time.monotonic() + PAGE_WAIT_MS / 1000.0
        for _ in range(4):
            close_notifications(page)
            page.mouse.move(box["x"] + u, box["y"] + v)
            page.wait_for_timeout(300)
            page.mouse.click(box["x"] + u, box["y"] + v)
            while True:
                wait_until_still(page)
                jumped = saved_camera(click_save(page, views)[1])
                if at(jumped, target) or stayed(jumped) or time.monotonic() > deadline:
                    break
                page.wait_for_timeout(500)
            if not stayed(jumped):
                break
    finally:
        context.close()

    assert at(jumped, target), (start.camera_to_world(), jumped.camera_to_world(), target.camera_to_world())
    # the vertical field of view is the training camera's (the canvas keeps its own aspect ratio)
    assert jumped.K[1, 1] / jumped.height == pytest.approx(float(target.K[1, 1] / target.height), rel=1e-4)


def test_several_tabs_and_a_closed_one(view_server, playwright, tmp_path):
    server, url, views = view_server
    context = launch_chromium(playwright, tmp_path / "profile")
    try:
        first, second = open_page(context, url), open_page(context, url)
        wait_for_exact_frame(first)
        frame = wait_for_exact_frame(second)[2]
        first.close()
        box = canvas_box(second)
        second.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        second.mouse.wheel(0, -300)
        wait_for_exact_frame(second, after=frame)  # the other tab still renders
        wait_for_exact_frame(open_page(context, url))  # and a new one gets its frames
    finally:
        context.close()
    assert server.process.poll() is None


STEP = re.compile(r"(pausing|paused|training|done) · step ([\d,]+) / 100,000")


def shown_step(page, state=None) -> int:
    """The step in the training panel (once it shows ``state``, if given)."""
    deadline = time.monotonic() + PAGE_WAIT_MS / 1000.0
    while time.monotonic() < deadline:
        match = STEP.search(page.inner_text("body"))
        if match and (state is None or match.group(1) == state):
            return int(match.group(2).replace(",", ""))
        page.wait_for_timeout(100)
    raise AssertionError(f"no training step shown; the page reads {page.inner_text('body')}")


def step_above(page, step: int) -> int:
    deadline = time.monotonic() + PAGE_WAIT_MS / 1000.0
    while time.monotonic() < deadline:
        shown = shown_step(page)
        if shown > step:
            return shown
        page.wait_for_timeout(200)
    raise AssertionError(f"training did not go past step {step}")


def test_live_training_panel_pause_and_ctrl_c(scene, playwright, tmp_path):
    run = tmp_path / "run"
    arguments = [
        "train",
        "--data",
        str(scene),
        "--data-factor",
        "1",
        "--steps",
        "100000",
        "--eval-every",
        "25",
    ]
    arguments += ["--quiet", "--viewer", "--port", "0", "--output", str(run), "--train.save_every", "20"]
    server = Server(arguments, tmp_path / "stderr.txt")
    try:
        url = server.url()
        context = launch_chromium(playwright, tmp_path / "profile")
        page = open_page(context, url)
        step = step_above(page, shown_step(page))
        wait_for_exact_frame(page)  # the live model is rendered
        page.get_by_text(re.compile(r"test PSNR \d+\.\d\d dB")).wait_for(timeout=PAGE_WAIT_MS)
        page.close()  # closing the page does not stop training...
        page = open_page(context, url)  # ...and a new one follows it
        step = step_above(page, step)

        page.get_by_role("button", name="Pause training").click()
        held = shown_step(page, state="paused")
        page.wait_for_timeout(1500)
        assert shown_step(page) == held and "paused" in page.inner_text("body")
        page.get_by_role("button", name="Resume training").click()
        step_above(page, held)
        context.close()
        status = server.interrupt()
    finally:
        server.close()
    assert status == 130, server.stderr()
    assert "interrupted at step" in server.stderr()
    checkpoint = load_checkpoint(run)  # the last checkpoint is complete
    assert checkpoint["step"] >= 20 and checkpoint["step"] % 20 == 0


def choose_render_mode(page, mode: str) -> None:
    page.get_by_label("Render").click()
    page.get_by_role("option", name=mode, exact=True).click()


def test_render_mode_and_sh_degree_controls(view_server, model, scene, playwright, tmp_path):
    """Depth through the page's "Render" menu is `render --depth`'s depth PNG of the page's camera; SH
    degree 0 through its slider drops the view-dependent colour."""
    server, url, views = view_server
    context = launch_chromium(playwright, tmp_path / "profile")
    try:
        page = open_page(context, url)
        frame = wait_for_exact_frame(page)[2]
        page.get_by_label("Training cameras").uncheck()
        choose_render_mode(page, "depth")
        frame = wait_for_exact_frame(page, after=frame)[2]
        depth_shown = screenshot(page)
        depth_png, depth_json = click_save(page, views)
        choose_render_mode(page, "RGB")
        frame = wait_for_exact_frame(page, after=frame)[2]
        sh_input = page.get_by_role("textbox").or_(page.get_by_role("spinbutton")).nth(2)
        sh_input.fill("0")
        sh_input.press("Enter")
        wait_for_exact_frame(page, after=frame)
        flat_shown = screenshot(page)
        _, flat_json = click_save(page, views)
    finally:
        context.close()

    render_saved_view(model, scene, depth_json, tmp_path / "depth", "--depth")
    written = png(tmp_path / "depth" / "depth" / f"{depth_json.stem}.png")
    mask = chrome_mask(depth_shown.shape)
    assert np.array_equal(png(depth_png), written)
    assert psnr(depth_shown, written, mask) > MIN_PSNR

    full = render_saved_view(model, scene, flat_json, tmp_path / "full")  # the model at its degree, 3
    assert psnr(flat_shown, full, mask) < MIN_PSNR - 10.0  # the page shows another picture...
    camera = saved_camera(flat_json)
    splats = load_model(model).splats
    degree_0 = render_image(splats_up_to_degree(splats, 0), camera)
    assert psnr(flat_shown, degree_0, mask) > MIN_PSNR  # ...the degree-0 one
