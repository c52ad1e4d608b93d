"""Bad image files of a scene, generated here (truncations, bit flips, a header claiming 20000x20000
pixels, files that are no image, a size the camera does not have): each is a DatasetError naming the file,
and through `gsplat-py train` a one-line error with exit status 1 that writes nothing."""

from pathlib import Path

import numpy as np
import pytest
from bad_input import (
    DAMAGE,
    GENERATED,
    assert_names,
    cli_error,
    damaged,
    fifo,
    fresh_folder,
    noise_pixels,
    noise_png,
    png_bytes,
    snapshot,
    time_limit,
    write_colmap_scene,
)
from hypothesis import given
from hypothesis import strategies as st

from gsplat_py.data import DatasetError, load_colmap_scene


def scene_with_image(root: Path, data: bytes | None = None, name: str = "view_2.png") -> Path:
    """A valid 4-view scene whose image ``name`` is replaced by ``data`` (None: left as written)."""
    write_colmap_scene(root)
    if data is not None:
        (root / "images" / name).write_bytes(data)
    return root


def load_or_error(root: Path, name: str = "view_2.png", pixels: np.ndarray | None = None) -> None:
    """The scene loads with every image at its camera's size (and image ``name`` equal to ``pixels`` if
    given), or a DatasetError names the image."""
    with time_limit():
        try:
            scene = load_colmap_scene(root, data_factor=1, test_every=0)
        except DatasetError as error:
            message = str(error)
            assert name in message and "\n" not in message, message
            return
    assert all(view.image.shape == (24, 32, 3) for view in scene.train_views)
    if pixels is not None:
        (view,) = [view for view in scene.train_views if view.name == name]
        assert np.array_equal(view.image.numpy(), pixels)


def test_the_scene_writer_writes_a_loadable_scene(tmp_path):
    scene = load_colmap_scene(scene_with_image(tmp_path), data_factor=1, test_every=0)
    assert len(scene.train_views) == 4 and scene.train_views[0].image.shape == (24, 32, 3)


PNG = noise_png(32, 24, seed=9)
BAD_IMAGES = {
    "empty file": (b"", "cannot read the image"),
    "not an image": (b"hello, I am a text file\n" * 20, "cannot read the image"),
    "truncated header": (PNG[:20], "cannot read the image"),
    "truncated data": (PNG[: len(PNG) // 2], "cannot read the image"),
    "decompression bomb": (png_bytes(20000, 20000, rows=b""), "too large to decode"),
    "wrong size": (noise_png(24, 32, seed=1), "the aspect ratios differ"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_a_bad_image_is_an_error_naming_it(tmp_path, case):
    data, fragment = BAD_IMAGES[case]
    with time_limit(), pytest.raises(DatasetError) as info:
        load_colmap_scene(scene_with_image(tmp_path, data), data_factor=1, test_every=0)
    assert_names(str(info.value), "view_2.png", fragment)
    assert "\n" not in str(info.value)


def test_an_image_that_is_a_pipe_is_not_read(tmp_path):
    root = scene_with_image(tmp_path)
    (root / "images" / "view_1.png").unlink()
    fifo(root / "images" / "view_1.png")
    with time_limit(), pytest.raises(DatasetError, match="view_1.png"):
        load_colmap_scene(root, data_factor=1, test_every=0)


@GENERATED
@given(cut=st.integers(0, len(PNG) - 1))
def test_a_truncation_keeps_every_pixel_or_is_an_error_naming_the_image(tmp_path, cut):
    # decoders need neither the end chunk nor the checksums after the last pixel
    load_or_error(scene_with_image(fresh_folder(tmp_path), PNG[:cut]), pixels=noise_pixels(32, 24, seed=9))


@GENERATED
@given(position=DAMAGE["position"], bit=DAMAGE["bit"])
def test_a_bit_flip_loads_or_is_an_error_naming_the_image(tmp_path, position, bit):
    load_or_error(scene_with_image(fresh_folder(tmp_path), damaged(PNG, position, bit, cut=False)))


@pytest.mark.parametrize("case", ["decompression bomb", "truncated data", "wrong size"])
def test_training_on_a_bad_image_is_a_one_line_error_that_writes_nothing(tmp_path, capsys, case):
    root = scene_with_image(tmp_path / "scene", BAD_IMAGES[case][0])
    before = snapshot(root)
    output = tmp_path / "run"
    message = cli_error(capsys, "train", "--data", root, "--data-factor", "1", "--output", output, "--quiet")
    assert_names(message, "view_2.png", BAD_IMAGES[case][1])
    assert not output.exists() and snapshot(root) == before
