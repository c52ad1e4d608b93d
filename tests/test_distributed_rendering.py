"""``rasterization(..., distributed=True)`` on two gloo processes equals the single-process rasterization
(forward and every gradient); the cases are in tests/distributed_render_worker.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_scene

import gsplat_py
from gsplat_py.rendering import rasterization

PACKAGE_PARENT = Path(gsplat_py.__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "distributed_render_worker.py"
TIMEOUT_S = 240  # two processes on a loaded 2-core machine; each case takes about a second


def run_ranks(script: Path, world_size: int, scratch: Path, *args: str) -> list[subprocess.CompletedProcess]:
    """Run ``script RANK WORLD STORE *args`` once per rank from ``scratch``, importing the gsplat_py under
    test; the processes meet through a file store in ``scratch``."""
    environment = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), "OMP_NUM_THREADS": "1"}
    store = scratch / "store"
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(world_size), str(store), *args],
            cwd=scratch,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT_S)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    finally:
        for process in processes:
            process.kill()
    return results


def test_two_ranks_equal_one_process_forward_and_every_gradient(tmp_path):
    results = run_ranks(WORKER, 2, tmp_path)
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.stderr[-3000:]}"


def test_a_wrong_gradient_exchange_is_caught(tmp_path):
    """Mutation check: with the backward of the exchange halving the gradients it sends back, the
    comparison fails."""
    results = run_ranks(WORKER, 2, tmp_path, "halve-returned-gradients")
    assert all(result.returncode != 0 for result in results)
    assert all("grad of" in result.stderr for result in results)


@pytest.mark.skipif(
    not torch.cuda.is_available() or not torch.distributed.is_nccl_available(), reason="needs a GPU and NCCL"
)
def test_nccl_on_cuda_equals_one_process(tmp_path):
    """The same cases on CUDA tensors over NCCL, one rank per GPU (one rank alone on a single GPU)."""
    results = run_ranks(WORKER, min(2, torch.cuda.device_count()), tmp_path, "cuda")
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.stderr[-3000:]}"


def test_distributed_without_a_process_group_names_the_argument():
    assert not torch.distributed.is_initialized()
    scene = make_scene(n=20, n_cameras=1)
    with pytest.raises(ValueError, match="^distributed: expected an initialised default torch.distributed"):
        rasterization(**scene, distributed=True)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(absgrad=True), "distributed: absgrad"),
        (dict(per_camera=True), "distributed: per-camera colors"),
        (dict(batch=True), "distributed: batch dimensions"),
    ],
)
def test_distributed_refuses_what_gsplat_refuses(options, message):
    scene = make_scene(n=20, n_cameras=2)
    if options.pop("per_camera", False):
        scene["colors"] = scene["colors"][None].expand(2, -1, -1)
    if options.pop("batch", False):
        for key in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"):
            scene[key] = scene[key][None]
    with pytest.raises(ValueError, match=f"^{message}"):
        rasterization(**scene, **options, distributed=True)
