"""`gsplat_py.io.atomic.atomic_directory`: a folder appears complete or not at all."""

import os

import pytest

from gsplat_py.io.atomic import atomic_directory


def test_new_folder_appears_when_complete(tmp_path):
    target = tmp_path / "sparse" / "0"
    with atomic_directory(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".0.")
        (temporary / "cameras.bin").write_bytes(b"cameras")
        assert not target.exists()
    assert (target / "cameras.bin").read_bytes() == b"cameras"
    assert os.listdir(target.parent) == ["0"]


def test_existing_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with atomic_directory(target) as temporary:
        (temporary / "new.bin").write_bytes(b"new")
        assert (target / "old.bin").exists()  # untouched until the block succeeds
    assert os.listdir(target) == ["new.bin"]
    assert os.listdir(tmp_path) == ["model"]


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_failure_leaves_the_old_folder_and_no_temporary(tmp_path, interruption):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with pytest.raises(interruption):
        with atomic_directory(target) as temporary:
            (temporary / "half.bin").write_bytes(b"half")
            raise interruption
    assert os.listdir(target) == ["old.bin"]
    assert os.listdir(tmp_path) == ["model"]


def test_folder_permissions_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "model"):
            pass
    finally:
        os.umask(previous)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o750
