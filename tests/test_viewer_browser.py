"""`gsplat-py view` and `train --viewer` seen through a real browser: headless Chromium (browser_helpers)
opens the page, and its screenshots are compared with `gsplat-py render` of the camera the page reports."""

import json
import math
import re

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
)
from PIL import Image
from render_helpers import random_splats, write_ring_scene

from gsplat_py.cli import main as cli_main
from gsplat_py.io.ply import write_ply
from gsplat_py.tools.camera_paths import read_cameras_json

# The page shows our PNG frame on a WebGL quad that covers the canvas texel for texel, so away from the
# chrome drawn over it the screenshot should equal the render; 40 dB (an RMS error of 2.5 grey levels)
# leaves room for a GPU's texture filtering while a camera off by one degree scores ~15 dB
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


def render_saved_view(model, scene, camera_file, output) -> np.ndarray:
    assert (
        cli_main(
            [
                "render",
                "--quiet",
                "--model",
                str(model),
                "--data",
                str(scene),
                "--data-factor",
                "1",
                "--cameras",
                str(camera_file),
                "--output",
                str(output),
            ]
        )
        == 0
    )
    name = read_cameras_json(camera_file).cameras[0].name
    return np.asarray(Image.open(output / "images" / f"{name}.png").convert("RGB"))


def click_save(page, views, count: int):
    """Clicks "Save view" and waits for the count-th saved camera file: (PNG, JSON)."""
    page.get_by_role("button", name="Save view").click()
    json_file = views / f"view_{count - 1:03d}.json"
    deadline = PAGE_WAIT_MS / 1000.0
    while not json_file.exists() and deadline > 0:
        page.wait_for_timeout(100)
        deadline -= 0.1
    assert json_file.exists(), f"no {json_file} after Save view"
    page.get_by_text(re.compile("View saved")).first.wait_for(timeout=PAGE_WAIT_MS)
    return views / f"view_{count - 1:03d}.png", json_file


def camera_centre(camera_file):
    camera = read_cameras_json(camera_file).cameras[0]
    return camera.camera_to_world()[:3, 3], camera


@pytest.fixture(scope="module")
def view_server(model, scene, tmp_path_factory):
    folder = tmp_path_factory.mktemp("view_server")
    server = Server(
        [
            "view",
            "--model",
            str(model),
            "--data",
            str(scene),
            "--data-factor",
            "1",
            "--port",
            "0",
            "--output",
            str(folder / "views"),
        ],
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
        width, height, frame = wait_for_exact_frame(page)
        box = canvas_box(page)
        assert (width, height) == (round(box["width"]), round(box["height"]))
        close_notifications(page)
        page.get_by_label("Training cameras").uncheck()  # hide the frustums drawn over the picture
        shown = screenshot(page)
        saved_png, saved_json = click_save(page, views, count=1)
    finally:
        context.close()

    rendered = render_saved_view(model, scene, saved_json, tmp_path / "render")
    assert rendered.shape == shown.shape == (height, width, 3)
    assert np.array_equal(np.asarray(Image.open(saved_png).convert("RGB")), rendered)
    mask = chrome_mask(shown.shape)
    print("PSNR", psnr(shown, rendered, mask), psnr(shown, rendered))
    Image.fromarray(shown).save("/tmp/vw/shown.png"); Image.fromarray(rendered).save("/tmp/vw/rendered.png")
    assert psnr(shown, rendered, mask) > MIN_PSNR
    # the model fills part of the picture: the comparison is not of two empty backgrounds
    assert (rendered[mask].max(axis=-1) > 20).mean() > 0.1

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
    print("turned", psnr(shown, turned, mask))
    assert psnr(shown, turned, mask) < MIN_PSNR - 10.0
