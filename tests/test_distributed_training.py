"""Training on two processes (gloo on the CPU) on the bundled scene: the same run as one process with the same
batch, checkpoints that resume with either number of processes, and a killed process that stops the other.

Each run is a ``python -m gsplat_py train`` of the gsplat_py under test, from a scratch folder.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bad_input import cli_error

import gsplat_py
from gsplat_py.strategy.default import DefaultStrategy
from gsplat_py.training import distributed
from gsplat_py.training.checkpoint import TrainingError, load_checkpoint
from gsplat_py.training.config import load_config
from gsplat_py.training.distributed import processes_from_environment, scale_steps, shard_checkpoint
from gsplat_py.training.trainer import Trainer

PACKAGE_PARENT = Path(gsplat_py.__file__).resolve().parents[1]
LOST_PEER_WORKER = Path(__file__).resolve().parent / "lost_peer_worker.py"
TIMEOUT_S = 300  # one run on a loaded 2-core machine
# 21 steps of the fast recipe, refining at step 20 only: the evaluation at step 20 is before any random
# sampling (the same numbers on one or two processes), the one at 21 after one refinement (the same counts).
# On the CPU also where a GPU is visible: the runs are compared bit for bit (over gloo).
RUN = [
    "--config", "fast", "--steps", "21", "--eval-every", "0", "--train.eval_steps", "20",
    "--train.save_renders", "false", "--strategy.default.refine_start_iter", "10",
    "--strategy.default.refine_every", "10", "--quiet", "--device", "cpu",
]  # fmt: skip


def gsplat_py_command(*args: str, cwd: Path, environment: dict | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), **(environment or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "gsplat_py", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    process = gsplat_py_command("train", *args, cwd=cwd)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def metrics(run: Path) -> dict[int, dict]:
    return {record["step"]: record for record in json.loads((run / "metrics.json").read_text())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same training on two processes (one view each a step) and on one (two views a step)."""
    scratch = tmp_path_factory.mktemp("distributed_training")
    two, one = scratch / "two", scratch / "one"
    two_processes = train(*RUN, "--nproc", "2", "--output", str(two), cwd=scratch)
    train(*RUN, "--train.batch_size", "2", "--output", str(one), cwd=scratch)
    return {"two": two, "one": one, "two_stdout": two_processes.stdout}


def test_two_processes_train_as_one_process_with_the_same_batch(runs):
    two, one = metrics(runs["two"]), metrics(runs["one"])
    # Before any random sampling the two runs are the same computation, up to float rounding.
    assert abs(two[20]["psnr"] - one[20]["psnr"]) < 0.01, (two[20]["psnr"], one[20]["psnr"])
    # The refinement at step 20 read the same 2D-gradient statistics on the shards as on the whole model.
    assert two[21]["num_gaussians"] == one[21]["num_gaussians"] > two[20]["num_gaussians"]
    checkpoint = load_checkpoint(runs["two"])  # rank 0 gathered the shards into one checkpoint
    n = two[21]["num_gaussians"]
    assert checkpoint["step"] == 21 and checkpoint["params"]["means"].shape == (n, 3)
    assert checkpoint["optimizers"]["sh0"]["state"][0]["exp_avg"].shape[0] == n
    assert checkpoint["strategy_state"]["grad2d"].shape == (n,)
    # only rank 0 prints: one line per evaluation, one for the end
    output = runs["two_stdout"]
    assert output.count("step 20: test PSNR") == output.count("step 21: test PSNR") == 1, output
    assert output.count("gsplat-py: done:") == 1, output


@pytest.mark.parametrize("source, processes", [("two", "1"), ("one", "2")])
def test_a_checkpoint_resumes_with_the_other_number_of_processes(runs, source, processes, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[source], run)
    train(
        "--resume",
        str(run),
        "--steps",
        "26",
        "--eval-every",
        "0",
        "--nproc",
        processes,
        "--quiet",
        cwd=tmp_path,
    )
    before, after = metrics(runs[source]), metrics(run)
    assert sorted(after) == [20, 21, 26]
    assert after[26]["num_gaussians"] == before[21]["num_gaussians"]  # no refinement until step 30
    # five more steps from the restored moments improve the fit (misplaced moments would not)
    assert after[26]["psnr"] > before[21]["psnr"] + 0.2, (before[21]["psnr"], after[26]["psnr"])
    assert load_checkpoint(run)["step"] == 26


def test_shards_of_a_checkpoint_partition_it():
    n = 11
    moments = {"step": torch.tensor(3.0), "exp_avg": torch.arange(n * 3.0).reshape(n, 3)}
    checkpoint = {
        "step": 3,
        "params": {"means": torch.arange(n * 3.0).reshape(n, 3)},
        "optimizers": {"means": {"state": {0: moments}, "param_groups": [{"lr": 1.0}]}},
        "strategy_state": {"grad2d": torch.arange(float(n)), "count": None, "scene_scale": 2.0},
    }
    shards = [shard_checkpoint(checkpoint, rank, 3, DefaultStrategy.PER_GAUSSIAN_STATE) for rank in range(3)]
    rows = torch.cat([torch.arange(rank, n, 3) for rank in range(3)])
    assert torch.equal(torch.cat([s["params"]["means"] for s in shards]), checkpoint["params"]["means"][rows])
    assert torch.equal(
        torch.cat([s["optimizers"]["means"]["state"][0]["exp_avg"] for s in shards]),
        checkpoint["optimizers"]["means"]["state"][0]["exp_avg"][rows],
    )
    assert torch.equal(torch.cat([s["strategy_state"]["grad2d"] for s in shards]), rows.float())
    assert all(s["strategy_state"]["count"] is None and s["step"] == 3 for s in shards)
    assert all(s["optimizers"]["means"]["state"][0]["step"] == 3 for s in shards)


def _worker_of_rank(launcher: subprocess.Popen, rank: int) -> int:
    """The process id of the launcher's worker of ``rank`` (Linux: /proc), waiting for it to start."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        for child in children:
            try:
                environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environment:
                return int(child)
        time.sleep(0.2)
    raise AssertionError(f"no worker of rank {rank}")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through Linux's /proc")
def test_a_killed_process_stops_the_other_and_the_checkpoint_loads(tmp_path):
    """``train --nproc 2``; rank 1 is killed once a checkpoint is on disk: rank 0 notices at its next exchange
    and stops with a message, the launcher exits non-zero, and the checkpoint on disk loads."""
    run = tmp_path / "run"
    args = ["train", "--config", "fast", "--steps", "5000", "--eval-every", "0", "--train.save_every", "5",
            "--output", str(run), "--quiet", "--nproc", "2", "--timeout", "20",
            "--device", "cpu"]  # fmt: skip
    launcher = gsplat_py_command(*args, cwd=tmp_path)
    try:
        rank_1 = _worker_of_rank(launcher, 1)
        deadline = time.monotonic() + TIMEOUT_S
        while not (run / "checkpoint.pt").exists():
            assert time.monotonic() < deadline and launcher.poll() is None, "no checkpoint written"
            time.sleep(0.2)
        os.kill(rank_1, signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = launcher.communicate(timeout=60)  # the --timeout, and a margin for a loaded machine
        stopped_after = time.monotonic() - killed_at
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode in (1, 128 + signal.SIGKILL), err[-2000:]
    assert "gsplat-py: error: rank 0: lost contact with the other training processes at step" in err, err[
        -2000:
    ]
    assert "the last good checkpoint is" in err
    # the launcher's report; rank 0's exit is in it too when both were seen at one look
    launcher_lines = [line for line in err.splitlines() if line.startswith("gsplat-py: rank ")]
    assert any("rank 1 was killed by signal 9" in line for line in launcher_lines), err[-2000:]
    assert stopped_after < 60, stopped_after
    checkpoint = load_checkpoint(run)
    assert checkpoint["step"] % 5 == 0 and checkpoint["step"] > 0


def test_a_rank_whose_peer_died_exits_with_its_own_status(tmp_path):
    """`process_group` destroys the group on the way out. Left to the interpreter's exit, a gloo group whose
    peer died aborted the process (SIGABRT, "terminate called without an active exception") in 4 exits of 15
    with torch 2.13, so 4 rounds of 3 pairs catch a regression with a probability of about 97%."""
    rounds, at_once = 4, 3
    statuses: list[tuple[int | None, str]] = []
    for _ in range(rounds):
        started = []
        for _pair in range(at_once):
            environment = {
                **os.environ,
                "PYTHONPATH": str(PACKAGE_PARENT),
                "OMP_NUM_THREADS": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(distributed._free_port()),
                "WORLD_SIZE": "2",
            }
            started.append(
                [
                    subprocess.Popen(
                        [sys.executable, str(LOST_PEER_WORKER)],
                        cwd=tmp_path,
                        env={**environment, "RANK": str(rank)},
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    for rank in range(2)
                ]
            )
        for rank_0, rank_1 in started:
            try:
                _, err = rank_0.communicate(timeout=TIMEOUT_S)
                rank_1.wait(timeout=TIMEOUT_S)
            finally:
                for process in (rank_0, rank_1):
                    process.kill()
                    process.wait()
            assert rank_1.returncode == -signal.SIGKILL, rank_1.stderr.read()[-2000:]
            statuses.append((rank_0.returncode, err[-500:]))
    assert all(status == 3 for status, _ in statuses), statuses


@pytest.mark.parametrize("world_size", [None, "2"])
def test_a_worker_leaves_without_the_interpreters_teardown(tmp_path, world_size):
    """``python -m gsplat_py`` run as a training worker (WORLD_SIZE set) exits with the command's status and
    without the interpreter's teardown, where gloo's threads may abort the process (`process_group`); run
    alone, it exits normally. An exit handler that prints shows which way the process left."""
    program = (
        "import atexit, runpy; atexit.register(print, 'teardown'); "
        "runpy.run_module('gsplat_py', run_name='__main__', alter_sys=True)"
    )
    environment = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}
    environment.pop("WORLD_SIZE", None)
    if world_size is not None:
        environment["WORLD_SIZE"] = world_size
    missing = tmp_path / "missing.ply"
    command = [sys.executable, "-c", program, "export", "--model", str(missing), "--format", "ply"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert done.returncode == 1 and str(missing) in done.stderr, done.stderr[-2000:]
    assert ("teardown" in done.stdout) == (world_size is None), done.stdout[-2000:]


class _Exited:
    """A worker process that has exited with ``status`` (Popen's: minus the signal that killed it)."""

    def __init__(self, status: int | None):
        self.status = status

    def poll(self) -> int | None:
        return self.status

    def wait(self, timeout: float | None = None) -> int | None:
        return self.status


@pytest.mark.parametrize(
    "statuses, launcher_status, report",
    [
        ([None, -9], 128 + 9, "rank 1 was killed by signal 9; rank 0 gets 30 s to stop"),
        ([1, -9], 1, "rank 0 exited with status 1; rank 1 was killed by signal 9"),
        ([None, 2, None], 2, "rank 1 exited with status 2; ranks 0, 2 get 30 s to stop"),
    ],
)
def test_the_launcher_reports_every_failure_it_sees(statuses, launcher_status, report):
    """A peer that noticed the failure may exit before the launcher looks again: both are reported, and the
    signal that killed a worker (which prints nothing itself) is named either way."""
    reports: list[str] = []
    workers = [_Exited(status) for status in statuses]
    assert distributed._wait_for(workers, reports.append) == launcher_status  # type: ignore[arg-type]
    assert reports == [report]


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK: not set"),
        (
            {"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
            "RANK: expected an integer",
        ),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK: expected 0..1"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "1"}, "MASTER_ADDR: not set"),
    ],
)
def test_a_bad_torchrun_environment_is_named(environ, message):
    with pytest.raises(TrainingError, match=f"^{message}"):
        processes_from_environment(environ)


def test_no_world_size_is_one_process():
    assert processes_from_environment({}) is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--nproc", "0"], "--nproc: expected at least 1 process, got 0"),
        (["--nproc", "2", "--timeout", "0"], "--timeout: expected a positive number of seconds, got 0.0"),
        (["--nproc", "2", "--viewer"], "--viewer: not available with several processes"),
        (["--nproc", "2", "--model-type", "2dgs"], "model.type: '2dgs' trains on one process"),
        (["--train.batch_size", "2", "--model-type", "2dgs"], "model.type: '2dgs' trains on one process"),
    ],
)
def test_bad_process_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    error = cli_error(capsys, "train", "--steps", "1", *flags, "--output", tmp_path / "run")
    assert error == f"gsplat-py: error: {message}" or error.startswith(f"gsplat-py: error: {message} "), error
    assert not (tmp_path / "run").exists()


def test_the_steps_scaler_scales_gsplats_schedules():
    config = load_config("fast")
    config.train.eval_steps = [300, 3]
    half = scale_steps(config, 0.5)
    assert (half.train.steps, half.train.eval_every, half.train.save_every) == (3500, 500, 500)
    assert half.train.eval_steps == [150, 1] and half.model.sh_degree_interval == 500
    default = half.strategy.default
    assert (
        default.refine_start_iter,
        default.refine_stop_iter,
        default.reset_every,
        default.refine_every,
    ) == (
        250,
        2500,
        1500,
        50,
    )
    mcmc = half.strategy.mcmc
    assert (mcmc.refine_start_iter, mcmc.refine_stop_iter, mcmc.refine_every) == (250, 12500, 50)
    assert scale_steps(config, 1e-6).strategy.default.refine_every == 1  # a period stays a period
    assert config.train.steps == 7000  # the argument is left as it was


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps-scaler", "0", "--output"], "--steps-scaler: expected a positive number, got 0.0"),
        (["--steps-scaler", "0.5", "--resume"], "--steps-scaler: the run to resume has its steps"),
    ],
)
def test_bad_steps_scaler_is_a_one_line_error(flags, message, tmp_path, capsys):
    error = cli_error(capsys, "train", *flags, tmp_path / "run")
    assert error.startswith(f"gsplat-py: error: {message}"), error
    assert not (tmp_path / "run").exists()


def test_the_one_view_trainer_refuses_a_batch(tmp_path):
    config = load_config("fast")
    config.train.batch_size = 2
    config.train.output = str(tmp_path / "run")
    with pytest.raises(TrainingError, match=r"^train.batch_size: 2 views per step need .*DistributedTrainer"):
        Trainer(config)
    assert not (tmp_path / "run").exists()


def test_each_process_on_a_machine_gets_its_own_gpu_or_a_one_line_error(monkeypatch):
    """The device of the training process of each local rank (a machine with one GPU, simulated)."""
    monkeypatch.setattr(distributed, "training_device", lambda name: torch.device(name.split(":")[0]))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.device_for_process("cuda", 0) == "cuda:0"
    assert distributed.device_for_process("cpu", 1) == "cpu"
    with pytest.raises(TrainingError) as caught:
        distributed.device_for_process("cuda", 1)
    message = str(caught.value)
    assert message.startswith("train.device: 'cuda' ") and "\n" not in message
    assert "process 2 of this machine has none (1 visible)" in message


def test_more_processes_than_gpus_is_a_one_line_error_before_any_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(distributed, "training_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    error = cli_error(capsys, "train", "--steps", "1", "--nproc", "2", "--output", tmp_path / "run")
    assert error.startswith("gsplat-py: error: train.device: 'auto' gives each training process") and (
        "(1 visible); use fewer processes or 'cpu'" in error
    )
    assert not (tmp_path / "run").exists()
