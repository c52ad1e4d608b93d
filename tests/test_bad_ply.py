"""Bad PLY files, generated here by an independent writer (tests/bad_input.py): a vertex count that
disagrees with the data (0 followed by rows, too many, absurdly many), trailing bytes, truncations, bit
flips, zero quaternions, overflowing scales, files that are no PLY. Each is a PlyFormatError naming the
file (and the property and row), and through `gsplat-py render` a one-line error that writes nothing."""

import json

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
    inria_columns,
    ply_bytes,
    snapshot,
    time_limit,
)
from hypothesis import given
from hypothesis import strategies as st

from gsplat_py.io.ply import PlyFormatError, read_ply

N = 50
GOOD = ply_bytes(inria_columns(N))
GOOD_TEXT = ply_bytes(inria_columns(N), text=True)


def read_or_error(path) -> None:
    """A model whose values are all usable, or a PlyFormatError naming the file; nothing else."""
    with time_limit():
        try:
            splats = read_ply(path)
        except PlyFormatError as error:
            message = str(error)
            assert str(path) in message and "\n" not in message, message
            return
    splats.validate()
    assert bool(((splats.quats**2).sum(dim=1) > 0).all()) and bool(splats.scales().isfinite().all())


def test_the_independent_writer_writes_what_read_ply_reads(tmp_path):
    columns = inria_columns(N)
    for name, data in (("binary.ply", GOOD), ("text.ply", GOOD_TEXT)):
        (tmp_path / name).write_bytes(data)
        splats = read_ply(tmp_path / name)
        assert splats.num_gaussians == N
        np.testing.assert_allclose(splats.quats[:, 2].numpy(), columns["rot_2"], rtol=1e-6)
        np.testing.assert_allclose(splats.log_scales[:, 1].numpy(), columns["scale_1"], rtol=1e-6)


def with_column(name: str, row: int, value: float) -> dict:
    columns = inria_columns(N)
    columns[name] = columns[name].copy()
    columns[name][row] = value
    return columns


def zero_quaternions(rows) -> dict:
    columns = inria_columns(N)
    for i in range(4):
        columns[f"rot_{i}"] = columns[f"rot_{i}"].copy()
        columns[f"rot_{i}"][rows] = 0.0
    return columns


# (file contents, fragments the message names)
BAD_PLYS = {
    "count 0, then rows": (ply_bytes(inria_columns(N), count=0), ["bytes after the data", "0 'vertex' rows"]),
    "count 0, then rows (text)": (
        ply_bytes(inria_columns(N), count=0, text=True),
        ["rows after the last element", "0 'vertex' rows"],
    ),
    "count too small": (ply_bytes(inria_columns(N), count=N - 1), ["bytes after the data"]),
    "count too large": (ply_bytes(inria_columns(N), count=N + 1), ["truncated", f"{N + 1} 'vertex' rows"]),
    "count absurd": (ply_bytes(inria_columns(N), count=10**15), ["truncated", "1,000,000,000,000,000"]),
    "trailing bytes": (GOOD + b"\0\0\0", ["3 bytes after the data"]),
    "truncated": (GOOD[:-5], ["truncated"]),
    "truncated text": (GOOD_TEXT[: len(GOOD_TEXT) // 2], ["truncated"]),
    "empty file": (b"", ["not a valid PLY file"]),
    "no PLY": (b"solid cube\nendsolid\n", ["not a valid PLY file"]),
    "NaN mean": (ply_bytes(with_column("y", 7, np.nan)), ["property 'y'", "row 7"]),
    "inf opacity": (ply_bytes(with_column("opacity", 3, np.inf)), ["property 'opacity'", "row 3"]),
    "overflowing scale": (ply_bytes(with_column("scale_2", 4, 100.0)), ["property 'scale_2'", "row 4"]),
    "one zero quaternion": (ply_bytes(zero_quaternions([9])), ["rot_0..rot_3", "row 9", "1 of 50 rows"]),
    "all quaternions zero": (ply_bytes(zero_quaternions(slice(None))), ["rot_0..rot_3", "50 of 50 rows"]),
}


@pytest.mark.parametrize("case", list(BAD_PLYS))
def test_a_bad_ply_is_an_error_naming_the_file_and_what_is_wrong(tmp_path, case):
    data, fragments = BAD_PLYS[case]
    path = tmp_path / "model.ply"
    path.write_bytes(data)
    with time_limit(), pytest.raises(PlyFormatError) as info:
        read_ply(path)
    assert_names(str(info.value), str(path), *fragments)


def test_a_pipe_or_a_folder_is_not_read(tmp_path):
    with time_limit(), pytest.raises(PlyFormatError, match="not a regular file"):
        read_ply(fifo(tmp_path / "pipe.ply"))
    (tmp_path / "folder.ply").mkdir()
    with pytest.raises(PlyFormatError, match="is a folder"):
        read_ply(tmp_path / "folder.ply")


@GENERATED
@given(cut=st.integers(0, len(GOOD) - 1), text=st.booleans())
def test_every_truncation_is_an_error_naming_the_file(tmp_path, cut, text):
    path = fresh_folder(tmp_path) / "cut.ply"
    data = GOOD_TEXT if text else GOOD
    path.write_bytes(data[: min(cut, len(data) - 1)])
    with pytest.raises(PlyFormatError, match="cut.ply"):
        read_ply(path)


@GENERATED
@given(position=DAMAGE["position"], bit=DAMAGE["bit"], text=st.booleans())
def test_a_bit_flip_reads_usable_values_or_is_an_error_naming_the_file(tmp_path, position, bit, text):
    path = fresh_folder(tmp_path) / "flip.ply"
    path.write_bytes(damaged(GOOD_TEXT if text else GOOD, position, bit, cut=False))
    read_or_error(path)


@pytest.mark.parametrize("case", ["count 0, then rows", "all quaternions zero", "count absurd"])
def test_rendering_a_bad_ply_is_a_one_line_error_that_writes_nothing(tmp_path, capsys, case):
    path = tmp_path / "model.ply"
    path.write_bytes(BAD_PLYS[case][0])
    camera = {"width": 8, "height": 6, "fx": 5.0, "fy": 5.0, "world_to_camera": np.eye(4).tolist()}
    (tmp_path / "cams.json").write_text(json.dumps({"cameras": [camera]}))
    before = snapshot(tmp_path)
    message = cli_error(capsys, "render", "--model", path, "--cameras", tmp_path / "cams.json", "--quiet")
    assert_names(message, str(path), *BAD_PLYS[case][1])
    assert snapshot(tmp_path) == before


def test_an_empty_model_is_read_and_warned_about_when_rendered(tmp_path, capsys):
    path = tmp_path / "empty.ply"
    path.write_bytes(ply_bytes({name: values[:0] for name, values in inria_columns(N).items()}))
    assert read_ply(path).num_gaussians == 0
    camera = {"width": 8, "height": 6, "fx": 5.0, "fy": 5.0, "world_to_camera": np.eye(4).tolist()}
    (tmp_path / "cams.json").write_text(json.dumps({"cameras": [camera]}))
    from gsplat_py.cli import main

    with pytest.warns(UserWarning, match="empty.ply: the model has no Gaussians"):
        assert (
            main(["render", "--model", str(path), "--cameras", str(tmp_path / "cams.json"), "--quiet"]) == 0
        )
