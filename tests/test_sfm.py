"""Structure from motion (`gsplat_py.data.sfm`, `gsplat-py sfm`, `train --data PHOTOS`): the bundled photos
posed end to end and compared with the bundled COLMAP model, a small awkward folder (EXIF-rotated photos,
two sizes, subfolders, a non-image file, downscaling), the pieces with exact answers, and bad input."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gsplat_py.cli import main as cli_main
from gsplat_py.data import load_colmap_scene
from gsplat_py.data.colmap_dataset import SFM_RECORD_FILE
from gsplat_py.data.geometry import fit_similarity, split_similarity
from gsplat_py.data.sfm import (
    PhotoFolder,
    SfmError,
    SfmOptions,
    _pairs,
    _prior_focal,
    _read_photo,
    camera_centre_errors,
    estimate_sfm_seconds,
    run_sfm,
    scan_photos,
)
from gsplat_py.errors import ParameterError
from gsplat_py.io.colmap import read_model

try:
    import pycolmap
except ImportError:
    pycolmap = None

needs_pycolmap = pytest.mark.skipif(pycolmap is None, reason="pycolmap (the sfm extra) is not installed")

REPO = Path(__file__).resolve().parents[1]
SNOWMIKU = REPO / "data" / "snowmiku"
PHOTOS = sorted((SNOWMIKU / "images_4").glob("*.jpg"))  # 97 photos at 252x189
REFERENCE = SNOWMIKU / "sparse" / "0"  # COLMAP's model of the same photos at 1008x756
REFERENCE_SCALE = 252 / 1008


def leftovers(folder: Path) -> list[str]:
    """Hidden working or temporary folders left behind."""
    return sorted(
        path.name for path in folder.rglob(".*") if path.is_dir() and ".gsplat_py_cache" not in path.name
    )


# --------------------------------------------------------------------------------------------------------
# The bundled photos, end to end


@pytest.fixture(scope="module")
def posed(tmp_path_factory):
    """The bundled photos alone in a folder (plus a note), posed with the default options."""
    folder = tmp_path_factory.mktemp("photos")
    for photo in PHOTOS:
        shutil.copy(photo, folder / photo.name)
    (folder / "notes.txt").write_text("taken on a bed, 360 degrees")
    lines: list[str] = []
    result = run_sfm(folder, progress=False, report=lines.append)
    return folder, result, lines


@needs_pycolmap
def test_bundled_photos_are_posed_like_the_bundled_model(posed):
    folder, result, lines = posed
    assert result.image_folder == folder and result.model_folder == folder / "sparse" / "0"
    assert len(result.photos) == 97 and result.ignored_files == ["notes.txt"]
    assert result.matcher == "exhaustive" and not result.reused  # 97 photos: auto picks exhaustive
    assert len(result.registered) >= 95, result.unregistered  # all or nearly all
    assert result.mean_reprojection_error < 1.5
    model, reference = read_model(result.model_folder), read_model(REFERENCE)
    assert sorted(image.name for image in model.images.values()) == result.registered
    assert len(model.points) == result.num_points > 1000
    errors = camera_centre_errors(model, reference)
    assert np.median(errors) < 0.015 and errors.max() < 0.05, (np.median(errors), errors.max())
    camera, reference_camera = model.cameras[1], reference.cameras[1]
    assert (camera.model, camera.width, camera.height) == ("OPENCV", 252, 189)
    assert camera.fx == pytest.approx(reference_camera.fx * REFERENCE_SCALE, rel=0.03)
    assert camera.fy == pytest.approx(reference_camera.fy * REFERENCE_SCALE, rel=0.03)
    record = json.loads((result.model_folder / SFM_RECORD_FILE).read_text())
    assert record["exif_orientation_applied"] is True and record["image_folder"] == "."
    assert record["registered"] == len(result.registered) and record["unregistered"] == result.unregistered
    assert [line.split(":")[0] for line in lines] == [
        "ignored (not images)",
        "photos",
        "features",
        "matching",
        "mapping",
    ] + (["not posed (left out of training)"] if result.unregistered else [])
    assert leftovers(folder) == []
    assert sorted(os.listdir(folder / "sparse")) == ["0"]


@needs_pycolmap
def test_camera_centre_comparison_catches_swapped_poses(posed):
    """Mutation check of the test above: two photos' poses swapped are far outside its tolerance."""
    _, result, _ = posed
    model = read_model(result.model_folder)
    first, last = model.images[min(model.images)], model.images[max(model.images)]
    first.qvec, last.qvec, first.tvec, last.tvec = last.qvec, first.qvec, last.tvec, first.tvec
    assert camera_centre_errors(model, read_model(REFERENCE)).max() > 0.2


@needs_pycolmap
def test_second_run_reuses_the_model(posed):
    folder, result, _ = posed
    before = {path.name: path.read_bytes() for path in result.model_folder.iterdir()}
    lines: list[str] = []
    again = run_sfm(folder, progress=False, report=lines.append)
    assert again.reused and lines == []
    assert again.registered == result.registered and again.unregistered == result.unregistered
    assert again.num_points == result.num_points and again.matcher == result.matcher
    assert again.mean_reprojection_error == pytest.approx(result.mean_reprojection_error, rel=1e-9)
    assert {path.name: path.read_bytes() for path in result.model_folder.iterdir()} == before


@needs_pycolmap
def test_posed_photos_load_as_a_scene(posed):
    folder, result, _ = posed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_colmap_scene(folder, data_factor=1)
    views = scene.train_views + scene.test_views
    assert sorted(view.name for view in views) == result.registered
    assert len(scene.points) == result.num_points
    # the photos SfM could not pose are named as left out
    assert [str(w.message).count("does not register") for w in caught] == ([1] if result.unregistered else [])


@needs_pycolmap
def test_cli_reports_a_reused_model(posed, capsys):
    folder, result, _ = posed
    assert cli_main(["sfm", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"gsplat-py: {result.model_folder} already holds a COLMAP model ({result.summary()}); --force "
        "recomputes it\n"
    )


# --------------------------------------------------------------------------------------------------------
# An awkward folder: images/ with a subfolder, EXIF-rotated photos, two sizes, a note, downscaling


ROTATED = {1, 5, 9, 13}  # stored turned a quarter to the left, with EXIF orientation 6 to turn them back
SMALLER = {2, 8, 14}  # stored at 200x150
SMALL_SET = 16


def awkward_name(k: int) -> str:
    return f"sub/{PHOTOS[k].name}" if k % 2 else PHOTOS[k].name


def write_awkward_folder(root: Path) -> list[str]:
    (root / "images" / "sub").mkdir(parents=True)
    for k, photo in enumerate(PHOTOS[:SMALL_SET]):
        target = root / "images" / awkward_name(k)
        image = Image.open(photo)
        if k in ROTATED:
            exif = Image.Exif()
            exif[0x0112] = 6
            image.transpose(Image.Transpose.ROTATE_90).save(target, quality=95, exif=exif)
        elif k in SMALLER:
            image.resize((200, 150), Image.Resampling.LANCZOS).save(target, quality=95)
        else:
            shutil.copy(photo, target)
    (root / "images" / "sub" / "README").write_text("not a photo")
    return sorted(awkward_name(k) for k in range(SMALL_SET))


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    root = tmp_path_factory.mktemp("awkward")
    names = write_awkward_folder(root)
    options = SfmOptions(max_image_size=160, camera_model="SIMPLE_RADIAL")
    return root, names, run_sfm(root, options, progress=False)


@needs_pycolmap
def test_awkward_folder_is_posed_at_full_size(awkward):
    root, names, result = awkward
    assert result.image_folder == root / "images" and result.photos == names
    assert result.ignored_files == ["sub/README"]
    assert result.registered == names  # rotated and smaller photos included
    model = read_model(result.model_folder)
    cameras = sorted((camera.width, camera.height, camera.model) for camera in model.cameras.values())
    # SIFT saw 160x120 images; the model is of the photos as they are, upright.
    assert cameras == [(200, 150, "SIMPLE_RADIAL"), (252, 189, "SIMPLE_RADIAL")]
    reference_focal = read_model(REFERENCE).cameras[1].fx / 1008
    for camera in model.cameras.values():
        assert camera.fx == pytest.approx(reference_focal * camera.width, rel=0.1)
        assert camera.cx == pytest.approx(camera.width / 2) and camera.cy == pytest.approx(camera.height / 2)
    for camera_id, camera in model.cameras.items():  # keypoints scaled to the full-size photos
        xys = np.concatenate([image.xys for image in model.images.values() if image.camera_id == camera_id])
        assert (xys >= 0).all() and (xys < [camera.width, camera.height]).all()
        assert (xys.max(0) > [0.9 * camera.width, 0.9 * camera.height]).all()
    errors = camera_centre_errors(model, read_model(REFERENCE))
    assert np.median(errors) < 0.03 and errors.max() < 0.08, errors


@needs_pycolmap
def test_rotated_photos_load_upright(awkward, tmp_path):
    """The loader turns the EXIF-rotated photos as SfM did: their views equal those of the same photos
    stored upright (up to the JPEG re-encoding), under the same model."""
    root, _, result = awkward
    upright = tmp_path / "upright"
    shutil.copytree(result.model_folder, upright / "sparse" / "0")
    (upright / "images" / "sub").mkdir(parents=True)
    for k, photo in enumerate(PHOTOS[:SMALL_SET]):
        source = root / "images" / awkward_name(k) if k in SMALLER else photo
        shutil.copy(source, upright / "images" / awkward_name(k))
    views = {view.name: view for view in load_colmap_scene(root, data_factor=1, test_every=0).train_views}
    expected = {v.name: v for v in load_colmap_scene(upright, data_factor=1, test_every=0).train_views}
    for name in map(awkward_name, ROTATED):
        assert views[name].image.shape == expected[name].image.shape
        # a turn the wrong way would differ by tens of levels
        assert (views[name].image.float() - expected[name].image.float()).abs().mean() < 2.0
        assert torch.equal(views[name].K, expected[name].K)


# --------------------------------------------------------------------------------------------------------
# Training on a folder of photos


@needs_pycolmap
def test_train_on_photos_poses_them_first(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS[:12]:
        shutil.copy(photo, photos / photo.name)
    args = ["train", "--data", str(photos), "--data-factor", "1", "--steps", "4", "--eval-every", "0"]
    assert cli_main([*args, "--quiet", "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"{photos}: no COLMAP model (sparse/0): computing the camera poses of its 12 photos first" in out
    assert "mapping: " in out
    assert (photos / "sparse" / "0" / "cameras.bin").is_file()
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert len(read_model(photos / "sparse" / "0").images) == 12


# --------------------------------------------------------------------------------------------------------
# Exact pieces


def test_pairs():
    assert _pairs(4, "exhaustive", 10) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert len(_pairs(97, "exhaustive", 10)) == 97 * 96 // 2
    # sequential: the next `overlap` photos and those 2^k further on (k < overlap)
    assert _pairs(20, "sequential", 3) == [
        (i, i + step) for i in range(20) for step in (1, 2, 3, 4) if i + step < 20
    ]
    assert [j - i for i, j in _pairs(40, "sequential", 5) if i == 0] == [1, 2, 3, 4, 5, 8, 16]


def test_auto_matcher_and_estimate():
    options = SfmOptions(exhaustive_max_images=50)
    assert options.matcher_for(50) == "exhaustive" and options.matcher_for(51) == "sequential"
    assert SfmOptions(matcher="sequential").matcher_for(3) == "sequential"


def test_estimate_grows_with_photos_and_size_and_shares_the_cores(tmp_path):
    for k in range(100):
        size = (1008, 756) if k < 10 else (252, 189)
        Image.new("RGB", size).save(tmp_path / f"{k:03d}.png")
    few_large, many_small = scan_photos(tmp_path), scan_photos(tmp_path)
    few_large.photos, many_small.photos = many_small.photos[:10], many_small.photos[10:]
    single, double = SfmOptions(num_threads=1), SfmOptions(num_threads=2)
    assert estimate_sfm_seconds(few_large, double) == pytest.approx(
        estimate_sfm_seconds(few_large, single) / 2
    )
    ten_small = dataclasses.replace(many_small, photos=many_small.photos[:10])
    assert 0 < estimate_sfm_seconds(ten_small, double) < estimate_sfm_seconds(few_large, double)
    assert estimate_sfm_seconds(ten_small, double) < estimate_sfm_seconds(many_small, double)
    assert estimate_sfm_seconds(dataclasses.replace(many_small, photos=[]), double) == 0.0


@pytest.mark.parametrize(
    "change, parameter",
    [
        ({"matcher": "vocabtree"}, "matcher"),
        ({"camera_model": "FOV"}, "camera_model"),
        ({"max_image_size": 10}, "max_image_size"),
        ({"max_features": 0}, "max_features"),
        ({"sequential_overlap": 0}, "sequential_overlap"),
        ({"num_threads": -1}, "num_threads"),
        ({"max_features": 1.5}, "max_features"),
    ],
)
def test_bad_options_name_the_parameter(tmp_path, change, parameter):
    with pytest.raises(ParameterError) as error:
        run_sfm(tmp_path, SfmOptions(**change))
    assert error.value.parameter == parameter


def test_fit_similarity_recovers_a_similarity_exactly():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(20, 3, generator=generator, dtype=torch.float64)
    q = torch.nn.functional.normalize(torch.randn(4, generator=generator, dtype=torch.float64), dim=0)
    w, x, y, z = q.tolist()
    rotation = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )
    moved = 2.5 * points @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scale, fitted_rotation, translation = split_similarity(fit_similarity(points, moved))
    assert scale == pytest.approx(2.5, rel=1e-12)
    assert torch.allclose(fitted_rotation, rotation, atol=1e-12)
    assert torch.allclose(translation, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), atol=1e-12)
    mirrored = moved * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # no rotation does this exactly
    assert torch.linalg.det(split_similarity(fit_similarity(points, mirrored))[1]) == pytest.approx(1.0)


def test_camera_centre_errors_ignore_a_similarity_and_folders():
    reference = read_model(REFERENCE)
    moved = read_model(REFERENCE)
    generator = torch.Generator().manual_seed(1)
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))[0].numpy()
    rotation *= np.linalg.det(rotation)  # a proper rotation (-1 times a reflection in 3D)
    for image in moved.images.values():  # centre c -> 3 Q c + t (the comparison reads only the centres)
        centre = -image.rotation().T @ image.tvec
        image.tvec = -image.rotation() @ (3.0 * rotation @ centre + np.array([5.0, -1.0, 2.0]))
        image.name = f"sub/{image.name}"
    errors = camera_centre_errors(moved, reference)
    assert len(errors) == len(reference.images) and errors.max() < 1e-9
    mirrored = read_model(REFERENCE)  # a reflection is no similarity: the centres cannot be aligned
    for image in mirrored.images.values():
        image.tvec = -image.rotation() @ ((-image.rotation().T @ image.tvec) * np.array([1.0, 1.0, -1.0]))
    assert camera_centre_errors(mirrored, reference).max() > 0.1


def test_scan_takes_images_folder_or_top_level_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.JPG", "a.png", "sub/c.jpg", ".hidden.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert scan_photos(tmp_path) == PhotoFolder(tmp_path, tmp_path, ["a.png", "b.JPG"], ["notes.txt"])
    (tmp_path / "images" / "day2").mkdir(parents=True)
    for name in ("x.jpg", "day2/y.jpeg", "day2/list.csv"):
        (tmp_path / "images" / name).write_bytes(b"")
    expected = PhotoFolder(tmp_path, tmp_path / "images", ["day2/y.jpeg", "x.jpg"], ["day2/list.csv"])
    assert scan_photos(tmp_path) == expected


# --------------------------------------------------------------------------------------------------------
# Bad input: one clear error, nothing written


def copy_photos(folder: Path, photos: list[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copy(photo, folder / photo.name)


def assert_nothing_written(folder: Path, files: list[str]) -> None:
    assert sorted(os.listdir(folder)) == sorted(files)


def test_not_a_folder_empty_folder_and_too_few_photos(tmp_path):
    with pytest.raises(SfmError, match=r"nowhere: no such folder \(expected a folder of photos\)"):
        run_sfm(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SfmError, match=r": no photos found \(looked for \.bmp, \.jpeg, \.jpg, \.png"):
        run_sfm(tmp_path)
    copy_photos(tmp_path, PHOTOS[:1])
    with pytest.raises(
        SfmError, match=r"needs at least 3 photos of the scene from different positions, found 1"
    ):
        run_sfm(tmp_path)
    assert_nothing_written(tmp_path, ["notes.txt", PHOTOS[0].name])


@needs_pycolmap
def test_corrupt_photo_is_named_and_nothing_is_written(tmp_path):
    copy_photos(tmp_path, PHOTOS[:4])
    broken = tmp_path / PHOTOS[2].name
    broken.write_bytes(broken.read_bytes()[:2000])  # a truncated JPEG
    (tmp_path / "zz.png").write_bytes(b"not a png")
    with pytest.raises(SfmError) as error:
        run_sfm(tmp_path, progress=False)
    message = str(error.value)
    assert message.startswith(f"{broken}: cannot read the image (") and "\n" not in message
    assert "(and 1 more: zz.png); remove or replace it" in message
    assert_nothing_written(tmp_path, [photo.name for photo in PHOTOS[:4]] + ["zz.png"])


@needs_pycolmap
def test_working_folder_of_a_killed_run_is_deleted(tmp_path):
    """A run killed outright (SIGKILL) cannot clean up; the next run deletes its working folder."""
    copy_photos(tmp_path, PHOTOS[:2])
    dead = subprocess_pid_that_exited()
    stale = tmp_path / f".gsplat_py_sfm-{dead}-1"
    (stale / "images").mkdir(parents=True)
    alive = tmp_path / f".gsplat_py_sfm-{os.getpid()}-1"  # a run in progress (this process) is left alone
    alive.mkdir()
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SfmError, match="broken.jpg: cannot read the image"):
        run_sfm(tmp_path, progress=False)
    assert not stale.exists() and alive.exists()


def subprocess_pid_that_exited() -> int:
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(process.stdout)


@needs_pycolmap
def test_identical_photos_cannot_be_posed(tmp_path):
    for k in range(5):
        shutil.copy(PHOTOS[0], tmp_path / f"copy{k}.jpg")
    with pytest.raises(SfmError) as error:
        run_sfm(tmp_path, progress=False)
    assert str(error.value) == (
        f"{tmp_path}: only 0 of 5 photos could be posed (at least 3 are needed): 4 photos are identical "
        "copies of others; photos need to show the scene from different positions"
    )
    assert_nothing_written(tmp_path, [f"copy{k}.jpg" for k in range(5)])


@needs_pycolmap
def test_single_camera_needs_one_size(tmp_path, capsys):
    copy_photos(tmp_path, PHOTOS[:3])
    Image.open(PHOTOS[3]).resize((200, 150)).save(tmp_path / "small.jpg")
    assert cli_main(["sfm", str(tmp_path), "--single-camera", "--quiet"]) == 1
    assert capsys.readouterr().err == (
        "gsplat-py: error: --single-camera: needs photos of one size; these have 2: 252x189 (3), "
        "200x150 (1)\n"
    )
    assert_nothing_written(tmp_path, [photo.name for photo in PHOTOS[:3]] + ["small.jpg"])


def test_unreadable_existing_model_asks_for_force(tmp_path, capsys):
    copy_photos(tmp_path, PHOTOS[:3])
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "cameras.bin").write_bytes(b"\x01")
    assert cli_main(["sfm", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(
        f"gsplat-py: error: {tmp_path / 'sparse' / '0'}: the COLMAP model there cannot be read"
    )
    assert error.endswith("; --force replaces it\n") and error.count("\n") == 1


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert cli_main(["sfm", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"gsplat-py: error: {tmp_path}: no photos found (looked for .bmp, .jpeg, .jpg, .png, .tif, .tiff, "
        ".webp files)\n"
    )
    assert cli_main(["sfm", str(tmp_path), "--max-features", "0"]) == 1
    assert capsys.readouterr().err == "gsplat-py: error: --max-features: expected an integer >= 64, got 0\n"
    assert cli_main(["sfm", str(tmp_path), "--threads", "-2"]) == 1
    assert capsys.readouterr().err == "gsplat-py: error: --threads: expected an integer >= 0, got -2\n"
    copy_photos(tmp_path, PHOTOS[:3])
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # makes `import pycolmap` raise ImportError
    assert cli_main(["sfm", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "gsplat-py: error: structure from motion needs pycolmap, COLMAP's Python bindings (gsplat_py's sfm "
        "extra): pip install pycolmap\n"
    )
    assert_nothing_written(tmp_path, [photo.name for photo in PHOTOS[:3]])


def test_exif_camera_and_focal_length_are_read(tmp_path):
    """Photos share a camera by size and EXIF make, model and focal length; the 35 mm-equivalent focal
    length gives the prior (for a 4:3 photo at 26 mm, a phone's main camera: 26 / 43.27 of the diagonal)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Phone", "X1", 8  # orientation 8: turn a quarter left
    exif.get_ifd(0x8769).update({0x920A: 4.2, 0xA405: 26})
    Image.new("RGB", (2000, 1500)).save(tmp_path / "p.jpg", exif=exif)
    photo = _read_photo(tmp_path / "p.jpg", "p.jpg", 1000, tmp_path / "work.png")
    assert photo.size == (1500, 2000) and photo.work_size == (750, 1000)
    assert Image.open(tmp_path / "work.png").size == (750, 1000)
    assert photo.camera_key == (1500, 2000, "Phone", "X1", 4.2) and photo.focal_35mm == 26
    assert _prior_focal(photo) == pytest.approx(26 * 1250 / math.hypot(36, 24))
