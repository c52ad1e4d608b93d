"""Bad COLMAP models (cameras, images, points; .bin and .txt), generated here: every one is a ColmapError
naming the file (and the record and field), and through `gsplat-py train` a one-line error with exit
status 1 that writes nothing. The inputs come from an independent writer (tests/bad_input.py)."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from bad_input import (
    DAMAGE,
    GENERATED,
    assert_names,
    cli_error,
    colmap_binary,
    colmap_records,
    colmap_text,
    damaged,
    fresh_folder,
    snapshot,
    time_limit,
    write_colmap_scene,
)
from hypothesis import given
from hypothesis import strategies as st

from gsplat_py.io.colmap import ColmapError, ColmapModel, read_model


def write_model_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def assert_usable(model: ColmapModel) -> None:
    """What the reader promises of a model it returns, whatever the file held."""
    names = [image.name for image in model.images.values()]
    assert len(set(names)) == len(names) and all(names)
    for camera in model.cameras.values():
        assert camera.width >= 1 and camera.height >= 1 and np.isfinite(camera.params).all()
        assert camera.fx > 0 and camera.fy > 0
    for image in model.images.values():
        assert np.isfinite(image.qvec).all() and np.linalg.norm(image.qvec) > 0
        assert np.isfinite(image.tvec).all() and image.camera_id in model.cameras
    assert np.isfinite(model.points.xyz).all()


def read_or_error(folder: Path, damaged: str) -> None:
    """``read_model`` gives a usable model or a ColmapError naming the damaged file, nothing else."""
    with time_limit():
        try:
            model = read_model(folder)
        except ColmapError as error:
            message = str(error)
            assert damaged in message and "\n" not in message, message
            return
    assert_usable(model)


def test_the_independent_writer_writes_valid_models(tmp_path):
    records = colmap_records()
    for ext, files in ((".bin", colmap_binary(records)), (".txt", colmap_text(records))):
        model = read_model(write_model_files(tmp_path / ext, files))
        assert_usable(model)
        assert [image.name for image in model.images.values()] == [r[4] for r in records["images"]]
        assert model.cameras[1].params.tolist() == records["cameras"][0][4]
        assert len(model.points) == 20


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_every_truncation_is_an_error_naming_the_file(tmp_path, name):
    files = colmap_binary(colmap_records())
    full = files[name]
    for length in range(0, len(full), 1 if name != "points3D.bin" else 7):
        folder = write_model_files(tmp_path / f"{length}", {**files, name: full[:length]})
        with pytest.raises(ColmapError, match=name):
            read_model(folder)


@GENERATED
@given(name=st.sampled_from(["cameras.bin", "images.bin", "points3D.bin"]), **DAMAGE)
def test_damage_gives_a_usable_model_or_an_error_naming_the_file(tmp_path, name, position, bit, cut):
    files = colmap_binary(colmap_records())
    damaged_files = {**files, name: damaged(files[name], position, bit, cut)}
    read_or_error(write_model_files(fresh_folder(tmp_path), damaged_files), name)


@GENERATED
@given(
    name=st.sampled_from(["cameras.txt", "images.txt", "points3D.txt"]),
    cut=st.floats(0.0, 1.0),
    junk=st.sampled_from(["", "nan", "-1", "0", "1e999", "x", " ", "\n", "#", "9" * 400]),
)
def test_an_edited_text_model_is_usable_or_an_error_naming_the_file(tmp_path, name, cut, junk):
    files = colmap_text(colmap_records())
    text = files[name].decode()
    at = int(cut * len(text))
    read_or_error(
        write_model_files(fresh_folder(tmp_path), {**files, name: (text[:at] + junk).encode()}), name
    )


def with_change(records: dict, kind: str, index: int, position: int, value) -> dict:
    """``records`` with field ``position`` of record ``index`` of ``kind`` replaced by ``value`` (a callable
    gets the old value)."""
    records = copy.deepcopy(records)
    fields = list(records[kind][index])
    fields[position] = value(fields[position]) if callable(value) else value
    records[kind][index] = tuple(fields)
    return records


def replace_item(values, i, value):
    return [value if j == i else v for j, v in enumerate(values)]


NAN, INF = math.nan, math.inf
# (change, fragments the message names): each a value COLMAP never writes.
FIELD_CASES = {
    "zero width": (("cameras", 0, 2, 0), ["camera 1 (PINHOLE)", "width is 0"]),
    "zero height": (("cameras", 0, 3, 0), ["camera 1", "height is 0"]),
    "zero focal": (("cameras", 0, 4, lambda p: replace_item(p, 0, 0.0)), ["camera 1", "fx is 0.0"]),
    "negative focal": (("cameras", 0, 4, lambda p: replace_item(p, 1, -30.0)), ["fy is -30.0"]),
    "NaN focal": (("cameras", 0, 4, lambda p: replace_item(p, 0, NAN)), ["fx is nan", "finite"]),
    "inf principal point": (("cameras", 0, 4, lambda p: replace_item(p, 2, INF)), ["cx is inf"]),
    "SIMPLE_PINHOLE f = 0": (
        ("cameras", 0, slice(1, 5), ["SIMPLE_PINHOLE", 32, 24, [0.0, 16.0, 12.0]]),
        ["camera 1 (SIMPLE_PINHOLE)", "f is 0.0"],
    ),
    "zero quaternion": (("images", 2, 1, [0.0, 0.0, 0.0, 0.0]), ["image 3", "qvec", "not all zero"]),
    "NaN quaternion": (("images", 1, 1, [NAN, 0.0, 0.0, 1.0]), ["image 2", "qvec"]),
    "inf translation": (("images", 0, 2, [0.0, INF, 0.0]), ["image 1", "tvec"]),
    "duplicate image name": (("images", 3, 4, "view_0.png"), ["image 4 ('view_0.png')", "same name"]),
    "duplicate image id": (("images", 1, 0, 1), ["duplicate image id 1"]),
    "unknown camera": (("images", 1, 3, 7), ["image 2", "camera 7"]),
    "NaN point": (("points", 5, 1, [0.0, NAN, 1.0]), ["point 6", "position"]),
    "inf point": (("points", 0, 1, [INF, 0.0, 1.0]), ["point 1", "position"]),
    "NaN error": (("points", 2, 3, NAN), ["point 3", "error"]),
    "duplicate point id": (("points", 4, 0, 2), ["duplicate point id 2"]),
}


def changed_records(case: str) -> dict:
    (kind, index, position, value), _ = FIELD_CASES[case]
    records = colmap_records()
    if isinstance(position, slice):  # several fields at once
        fields = list(records[kind][index])
        fields[position] = value
        records[kind][index] = tuple(fields)
        return records
    return with_change(records, kind, index, position, value)


FILE_OF_KIND = {"cameras": "cameras", "images": "images", "points": "points3D"}


@pytest.mark.parametrize("ext", [".bin", ".txt"])
@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_a_bad_field_is_an_error_naming_the_file_record_and_field(tmp_path, case, ext):
    (kind, *_), fragments = FIELD_CASES[case]
    records = changed_records(case)
    files = colmap_binary(records) if ext == ".bin" else colmap_text(records)
    with pytest.raises(ColmapError) as info:
        read_model(write_model_files(tmp_path, files))
    file = "images" if case == "unknown camera" else FILE_OF_KIND[kind]
    assert_names(str(info.value), f"{file}{ext}", *fragments)


@pytest.mark.parametrize(
    "name, line, fragment",
    [
        ("cameras.txt", "1 PINHOLE wide 24 30 31 16 12", "cameras.txt line 1: cannot parse the camera"),
        ("cameras.txt", "1 PINHOLE 32 24 30 31 16", "has 3 params, expected 4"),
        ("cameras.txt", "1 FISH 32 24 30 31 16 12", "unknown camera model 'FISH'"),
        ("images.txt", "1.5 1 0 0 0 0 0 4 1 view_0.png", "images.txt line 1: cannot parse the image"),
        ("images.txt", "1 1 0 0 0 0 0 4 1", "images.txt line 1: cannot parse the image"),
        ("points3D.txt", "1 0 0 1 300 0 0 0.5", "points3D.txt line 1: cannot parse the point"),
        ("points3D.txt", "1 0 zero 1 3 0 0 0.5", "points3D.txt line 1: cannot parse the point"),
    ],
)
def test_a_malformed_text_line_is_an_error_naming_the_file_and_line(tmp_path, name, line, fragment):
    files = colmap_text(colmap_records())
    files[name] = (
        line + "\n" + files[name].decode().split("\n", 2 if name == "images.txt" else 1)[-1]
    ).encode()
    with pytest.raises(ColmapError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        read_model(write_model_files(tmp_path, files))


@pytest.mark.parametrize(
    "case", ["SIMPLE_PINHOLE f = 0", "zero width", "NaN focal", "duplicate image name", "NaN point"]
)
def test_training_on_a_bad_model_is_a_one_line_error_that_writes_nothing(tmp_path, capsys, case):
    scene = write_colmap_scene(tmp_path / "scene", changed_records(case))
    before = snapshot(scene)
    output = tmp_path / "run"
    message = cli_error(
        capsys, "train", "--data", scene, "--data-factor", "1", "--steps", "2", "--output", output, "--quiet"
    )
    (kind, *_), fragments = FIELD_CASES[case]
    assert_names(message, f"{FILE_OF_KIND[kind]}.bin", *fragments)
    assert not output.exists() and snapshot(scene) == before
