"""Fit 3D Gaussians (or, with --2dgs, surfels) to one photo through the differentiable rasterizer (a renderer
demo).

Gaussians start at random in front of a pinhole camera; Adam optimises their positions, shapes,
opacities and colours so that the render matches the photo. Prints PSNR as it goes and writes
OUTPUT (render | photo side by side).

    python scripts/demo_fit_image.py                      # a photo of the bundled sample scene
    python scripts/demo_fit_image.py --image my.jpg --gaussians 20000 --steps 500
    python scripts/demo_fit_image.py --2dgs               # 2D Gaussian splatting (rasterization_2dgs)
"""

import argparse
import math
import os
import time
from pathlib import Path

# OpenMP workers that spin-wait lose time whenever another process wants the cores (BENCHMARKS.md);
# this must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import gsplat_py  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO / "data" / "snowmiku" / "images_4" / "20240212_003919.jpg"


def load_image(path: Path) -> torch.Tensor:
    """[H, W, 3] float32 in [0, 1]."""
    if not path.is_file():
        raise SystemExit(f"error: image not found: {path}")
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)


def psnr(render: torch.Tensor, target: torch.Tensor) -> float:
    return float(-10.0 * torch.log10(torch.mean((render - target) ** 2)))


def fit_image(
    target: torch.Tensor,
    n_gaussians: int,
    steps: int,
    lr: float = 0.01,
    seed: int = 0,
    log_every: int = 0,
    surfels: bool = False,
):
    """Fits n_gaussians (surfels: 2D Gaussians) to target [H, W, 3]; returns (final render, list of (step,
    psnr))."""
    rasterize = gsplat_py.rasterization_2dgs if surfels else gsplat_py.rasterization
    height, width, _ = target.shape
    gen = torch.Generator().manual_seed(seed)
    focal = 0.8 * width
    Ks = torch.tensor([[[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]])
    viewmats = torch.eye(4)[None]
    depth = 3.0
    # Uniform over the image at depth ~3, scales of a few pixels.
    xy = (torch.rand(n_gaussians, 2, generator=gen) - 0.5) * torch.tensor([width, height]) * depth / focal
    z = depth + 0.2 * torch.randn(n_gaussians, 1, generator=gen)
    pixel_size = depth / focal
    params = {
        "means": torch.cat([xy, z], dim=1),
        "log_scales": torch.full((n_gaussians, 3), math.log(3.0 * pixel_size)),
        "quats": torch.randn(n_gaussians, 4, generator=gen),
        "logit_opacities": torch.zeros(n_gaussians),
        "colors": torch.rand(n_gaussians, 3, generator=gen),
    }
    for tensor in params.values():
        tensor.requires_grad_(True)
    optimizer = torch.optim.Adam(
        [{"params": [params["means"]], "lr": lr * pixel_size * 10}]
        + [{"params": [params[k]], "lr": lr} for k in ("log_scales", "quats", "logit_opacities", "colors")]
    )
    history = []
    for step in range(1, steps + 1):
        render = rasterize(
            params["means"],
            params["quats"],
            torch.exp(params["log_scales"]),
            torch.sigmoid(params["logit_opacities"]),
            params["colors"],
            viewmats,
            Ks,
            width,
            height,
        )[0]
        loss = torch.nn.functional.l1_loss(render[0], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == 1 or step == steps or (log_every and step % log_every == 0):
            history.append((step, psnr(render[0].detach(), target)))
            if log_every:
                print(f"step {step:5d}  loss {loss.item():.4f}  PSNR {history[-1][1]:.2f} dB")
    return render[0].detach(), history


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--gaussians", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--output", type=Path, default=Path("fit_image.png"))
    parser.add_argument(
        "--2dgs", dest="surfels", action="store_true", help="fit surfels (rasterization_2dgs)"
    )
    args = parser.parse_args()

    target = load_image(args.image)
    start = time.perf_counter()
    render, history = fit_image(
        target, args.gaussians, args.steps, args.lr, log_every=50, surfels=args.surfels
    )
    elapsed = time.perf_counter() - start
    print(
        f"{args.steps} steps in {elapsed:.1f} s ({args.steps / elapsed:.1f} steps/s); "
        f"PSNR {history[0][1]:.2f} -> {history[-1][1]:.2f} dB"
    )
    side_by_side = torch.cat([render.clamp(0, 1), target], dim=1)
    tmp = args.output.with_name(args.output.name + ".tmp.png")
    Image.fromarray((side_by_side.numpy() * 255 + 0.5).astype(np.uint8)).save(tmp)
    tmp.replace(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
