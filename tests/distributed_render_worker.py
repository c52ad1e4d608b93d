"""One rank of tests/test_distributed_rendering.py: ``python distributed_render_worker.py RANK WORLD STORE
[halve-returned-gradients | cuda]`` (``cuda``: NCCL, CUDA tensors on GPU ``RANK``; world size 1 renders every
Gaussian and camera on the one rank).

For each case, renders a random scene (tests/conftest.py's `make_scene`) with ``distributed=True`` from this
rank's shard of the Gaussians and its cameras, and the whole scene in this process; asserts that this rank's
images, the gradients of its Gaussians and cameras, and the 2D-mean gradients of ``meta["projected"]`` equal
the single-process ones. Exits non-zero with the failing case's message.
"""

import sys
from datetime import timedelta
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_scene  # noqa: E402

from gsplat_py.rendering import distributed, rasterization  # noqa: E402

# name, make_scene options, rasterization options, cameras per rank, Gaussians per rank (None: the rest)
CASES = [
    ("dense SH", dict(n=240, n_cameras=3, sh_degree=3), dict(packed=False), [2, 1], [150, None]),
    ("packed SH", dict(n=240, n_cameras=3, sh_degree=3), dict(packed=True), [1, 2], [70, None]),
    ("empty shard dense", dict(n=200, n_cameras=3, sh_degree=1), dict(packed=False), [1, 2], [0, None]),
    ("empty shard packed", dict(n=200, n_cameras=3), dict(packed=True), [2, 1], [None, 0]),
    (
        "antialiased RGB+ED backgrounds packed",
        dict(n=200, n_cameras=4, channels=4, backgrounds=True),
        dict(packed=True, rasterize_mode="antialiased", render_mode="RGB+ED"),
        [3, 1],
        [120, None],
    ),
    (
        "features D dense",
        dict(n=160, n_cameras=2, channels=5),
        dict(packed=False, render_mode="D"),
        [1, 1],
        [40, None],
    ),
]
DIFFERENTIABLE = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "backgrounds")
GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "colors")
CAMERA_KEYS = ("viewmats", "Ks", "backgrounds")


def _ranges(counts: list, total: int) -> list[slice]:
    sizes = [total - sum(c for c in counts if c is not None) if c is None else c for c in counts]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [slice(s, s + n) for s, n in zip(starts, sizes)]


def _grad(tensor: torch.Tensor) -> torch.Tensor:
    """The gradient of ``tensor``; zeros when nothing it renders depends on it (colors in depth modes)."""
    return torch.zeros_like(tensor) if tensor.grad is None else tensor.grad


def _check(name: str, actual, expected) -> None:
    try:
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-12)
    except AssertionError as error:
        raise AssertionError(f"{name}: {error}") from None


def run_case(
    rank: int,
    device: torch.device,
    name: str,
    scene_options: dict,
    options: dict,
    camera_counts: list,
    gaussian_counts: list,
):
    scene = make_scene(**scene_options)
    inputs = {k: scene.pop(k).to(device) for k in DIFFERENTIABLE if k in scene}
    n, c = inputs["means"].shape[0], inputs["viewmats"].shape[0]
    world_size = torch.distributed.get_world_size()
    gaussians = _ranges(gaussian_counts if world_size > 1 else [None], n)[rank]
    cameras = _ranges(camera_counts if world_size > 1 else [None], c)[rank]

    full = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    colors, alphas, meta = rasterization(**full, **scene, **options)
    weights = torch.rand(colors.shape, generator=torch.Generator().manual_seed(1), dtype=colors.dtype).to(
        device
    )
    alpha_weights = torch.rand(alphas.shape, generator=torch.Generator().manual_seed(2), dtype=alphas.dtype)
    alpha_weights = alpha_weights.to(device)
    meta["means2d"].retain_grad()
    ((colors * weights).sum() + (alphas * alpha_weights).sum()).backward()

    shard = {
        k: (v[gaussians] if k in GAUSSIAN_KEYS else v[cameras]).clone().requires_grad_(True)
        for k, v in inputs.items()
    }
    d_colors, d_alphas, d_meta = rasterization(**shard, **scene, **options, distributed=True)
    ((d_colors * weights[cameras]).sum() + (d_alphas * alpha_weights[cameras]).sum()).backward()

    _check(f"{name}: render colors", d_colors, colors[cameras])
    _check(f"{name}: render alphas", d_alphas, alphas[cameras])
    for key in GAUSSIAN_KEYS:
        _check(f"{name}: grad of {key}", _grad(shard[key]), _grad(full[key])[gaussians])
    for key in CAMERA_KEYS:
        if key in shard:
            _check(f"{name}: grad of {key}", _grad(shard[key]), _grad(full[key])[cameras])
    projected = d_meta["projected"]
    if options["packed"]:
        # this rank's Gaussians: the single-process entries whose Gaussian is in the shard, in the same order
        mine = (meta["gaussian_ids"] >= gaussians.start) & (meta["gaussian_ids"] < gaussians.stop)
        _check(f"{name}: projected means2d grad", projected["means2d"].grad, meta["means2d"].grad[mine])
        _check(
            f"{name}: projected gaussian_ids",
            projected["gaussian_ids"],
            meta["gaussian_ids"][mine] - gaussians.start,
        )
        local = (meta["camera_ids"] >= cameras.start) & (meta["camera_ids"] < cameras.stop)
        _check(f"{name}: gaussian_ids", d_meta["gaussian_ids"], meta["gaussian_ids"][local])
        _check(f"{name}: camera_ids", d_meta["camera_ids"], meta["camera_ids"][local] - cameras.start)
    else:
        _check(
            f"{name}: projected means2d grad", projected["means2d"].grad, meta["means2d"].grad[:, gaussians]
        )
        _check(f"{name}: projected radii", projected["radii"], meta["radii"][:, gaussians])
        _check(f"{name}: radii", d_meta["radii"], meta["radii"][cameras])
    assert projected["n_cameras"] == c and d_meta["n_cameras"] == cameras.stop - cameras.start, name


def main() -> None:
    rank, world_size, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cases = CASES
    if sys.argv[4:] == ["halve-returned-gradients"]:  # the mutation check of the test: one case is enough
        backward = distributed._AllToAll.backward
        distributed._AllToAll.backward = staticmethod(lambda ctx, grad: backward(ctx, grad * 0.5))
        cases = CASES[:1]
    cuda = sys.argv[4:] == ["cuda"]  # NCCL, one GPU per rank
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    for case in cases:
        run_case(rank, device, *case)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
