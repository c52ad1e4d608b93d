"""Faults while a run saves: a real training process killed (SIGKILL) in the middle of writing its
checkpoint, its PLY, or between the renames of the two; interrupted (SIGINT); out of file space; on a
read-only file system. The files already saved stay complete and loadable, the next start removes the
temporary files left behind and brings point_cloud.ply in line with checkpoint.pt, and every failure is a
one-line error naming the file."""

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from bad_input import TIME_LIMIT_S, assert_names, cli_error, snapshot
from render_helpers import write_ring_scene

import gsplat_py
from gsplat_py.cli import main as cli_main
from gsplat_py.io import atomic
from gsplat_py.io.ply import read_ply
from gsplat_py.training.checkpoint import load_checkpoint
from gsplat_py.training.trainer import Trainer

# The gsplat_py under test in the child processes: the repository's, or the installed one when that is
# what these tests import (CI runs them from the sdist's copy against the installed package).
PACKAGE_PARENT = Path(gsplat_py.__file__).resolve().parents[1]
SAVE_EVERY = 2
COMMON = [
    "--quiet",
    "--eval-every",
    "0",
    "--train.save_renders",
    "false",
    "--train.save_every",
    str(SAVE_EVERY),
]

# Run in the killed process: gsplat-py, with the write of one file of the save at step 6 (or the rename of
# the PLY after the checkpoint's) paused forever after it writes a marker file.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from gsplat_py.cli import main
    from gsplat_py.io import atomic

    moment, marker = sys.argv[1], Path(sys.argv[2])
    seen = set()

    def pause():  # once: after a SIGINT, the interrupted save goes on to its end
        if not marker.exists():
            marker.write_text(moment)
            time.sleep(3600)

    real_write = atomic._TargetFile.write

    def write(self, data):
        seen.add(self.target.name)
        written = real_write(self, data)
        if moment == "checkpoint" and self.target.name == "checkpoint.pt":
            pause()
        if moment == "ply" and self.target.name == "point_cloud.ply" and "checkpoint.pt" in seen:
            pause()
        return written

    real_replace = os.replace

    def replace(source, target):
        if moment == "between renames" and Path(target).name == "point_cloud.ply" and "checkpoint.pt" in seen:
            pause()
        return real_replace(source, target)

    atomic._TargetFile.write = write
    os.replace = replace
    sys.exit(main(sys.argv[3:]))
    """
)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_scene")
    write_ring_scene(root)
    return root


def train_run(scene: Path, run: Path, steps: int) -> None:
    args = ["train", "--data", str(scene), "--data-factor", "1", "--steps", str(steps), "--output", str(run)]
    assert cli_main(args + COMMON) == 0


def temporary_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(".*.tmp"))


def start_child(moment: str, marker: Path, run: Path, steps: int, **popen) -> subprocess.Popen:
    args = [
        sys.executable,
        "-c",
        CHILD,
        moment,
        str(marker),
        "train",
        "--resume",
        str(run),
        "--steps",
        str(steps),
    ]
    environment = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}
    return subprocess.Popen(
        args + COMMON, cwd=PACKAGE_PARENT, env=environment, stderr=subprocess.PIPE, text=True, **popen
    )


def wait_for(marker: Path, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIME_LIMIT_S
    while not marker.exists():
        assert child.poll() is None, f"the child ended before the save: {child.stderr.read()}"
        assert time.monotonic() < deadline, "the child never reached the save"
        time.sleep(0.05)


def ply_matches_checkpoint(run: Path) -> bool:
    splats, params = read_ply(run / "point_cloud.ply"), load_checkpoint(run)["params"]
    return torch.equal(splats.means, params["means"]) and torch.equal(splats.quats, params["quats"])


@pytest.mark.parametrize("moment, saved_step", [("checkpoint", 4), ("ply", 4), ("between renames", 6)])
def test_a_kill_during_a_save_loses_nothing_and_the_next_start_tidies_up(tmp_path, scene, moment, saved_step):
    run = tmp_path / "run"
    train_run(scene, run, 4)
    child = start_child(moment, tmp_path / "marker", run, 8)
    try:
        wait_for(tmp_path / "marker", child)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    # what the kill left: the temporary files of the save, and complete files of the last save(s)
    orphans = temporary_files(run)
    assert any(name.startswith(".point_cloud.ply.") for name in orphans), orphans
    assert load_checkpoint(run)["step"] == saved_step
    assert read_ply(run / "point_cloud.ply").num_gaussians > 0
    assert ply_matches_checkpoint(run) == (moment != "between renames")

    # the next start: the temporary files go, the PLY matches the checkpoint before any training step
    trainer = Trainer.resume(run, progress=False)
    trainer.train(until=trainer.step)
    assert temporary_files(run) == [] and ply_matches_checkpoint(run)
    assert cli_main(["train", "--resume", str(run), "--steps", "8"] + COMMON) == 0
    assert load_checkpoint(run)["step"] == 8 and ply_matches_checkpoint(run) and temporary_files(run) == []


@pytest.mark.parametrize("signal_number, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_during_a_save_removes_its_temporary_files(tmp_path, scene, signal_number, status):
    run = tmp_path / "run"
    train_run(scene, run, 4)
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "point_cloud.ply")}
    # a shell without job control starts background jobs (such as this test run) with SIGINT ignored, and
    # Python keeps an ignored SIGINT ignored: give the child the disposition a terminal's Ctrl-C meets
    child = start_child(
        "checkpoint",
        tmp_path / "marker",
        run,
        8,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(tmp_path / "marker", child)
        child.send_signal(signal_number)
        _, err = child.communicate(timeout=TIME_LIMIT_S)
    finally:
        child.kill()
    assert child.returncode == status and "interrupted at step 6" in err, err
    assert temporary_files(run) == []
    assert all((run / name).read_bytes() == data for name, data in before.items())


def limit_file_size(size: int):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return set_limit


def test_no_space_for_the_checkpoint_is_a_one_line_error_and_keeps_the_last_one(tmp_path, scene):
    run = tmp_path / "run"
    train_run(scene, run, 4)
    ply_size, checkpoint_size = (
        (run / "point_cloud.ply").stat().st_size,
        (run / "checkpoint.pt").stat().st_size,
    )
    assert ply_size < checkpoint_size
    before = snapshot(run)
    args = [sys.executable, "-m", "gsplat_py", "train", "--resume", str(run), "--steps", "8", *COMMON]
    result = subprocess.run(
        args,
        cwd=PACKAGE_PARENT,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)},
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        preexec_fn=limit_file_size((ply_size + checkpoint_size) // 2),  # the PLY fits, the checkpoint not
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert_names(
        lines[0], f"{run / 'checkpoint.pt'}: cannot save: File too large", "the last good checkpoint"
    )
    assert temporary_files(run) == []
    assert load_checkpoint(run)["step"] == 4 and ply_matches_checkpoint(run)
    assert snapshot(run)["checkpoint.pt"] == before["checkpoint.pt"]


def test_a_read_only_file_system_is_a_one_line_error_naming_the_file(tmp_path, scene, capsys, monkeypatch):
    run = tmp_path / "run"
    train_run(scene, run, 4)
    before = snapshot(run)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).parent == run:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", read_only)
    message = cli_error(capsys, "train", "--resume", run, "--steps", "8", *COMMON)
    assert_names(message, str(run), "Read-only file system")
    monkeypatch.undo()
    assert snapshot(run) == before
