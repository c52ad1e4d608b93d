"""gsplat's DefaultStrategy beside gsplat_py's, step by step, on identical inputs.

    pip install --no-deps --target /tmp/gsplat_src gsplat==1.5.3   # not torch: --no-deps
    pip install --target /tmp/gsplat_src jaxtyping rich               # what gsplat's package imports
    PYTHONPATH=/tmp/gsplat_src python scripts/compare_gsplat_strategy.py                    # resets off
    PYTHONPATH=/tmp/gsplat_src python scripts/compare_gsplat_strategy.py --reset-every 30   # resets on

Both strategies get the same Gaussians, the same random gradients of the parameters and of ``means2d``, the
same radii and the same torch random state before each ``step_post_backward`` (a split samples offsets);
each side has its own Adam optimisers. After every step the script compares the parameters, the Adam
moments and the gradient statistics, and stops at the first that differs by more than float rounding
(1e-5 absolute in the parameters). gsplat's strategy is plain PyTorch, so gsplat installed without its
CUDA code built is enough; no GPU is needed. Prints what it found; exit status 1 when the
two differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsplat_py.strategy.default import DefaultStrategy  # noqa: E402

PARAMETER_TOLERANCE = 1e-5
WIDTH, HEIGHT = 64, 48
SCENE_SCALE = 1.3
# Screen-space gradient scale: about half the Gaussians pass the default growth threshold at each refinement.
MEANS2D_GRADIENT_STD = 4e-6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gaussians", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--reset-every", type=int, default=1000, help="above --steps: no opacity reset")
    parser.add_argument("--refine-scale2d-stop-iter", type=int, default=0)
    return parser.parse_args()


def initial_params(n: int) -> dict[str, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    values = {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.randn(n, 3, generator=g) * 0.5 - 3.0,
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, 15, 3, generator=g),
    }
    return {name: torch.nn.Parameter(value) for name, value in values.items()}


def adam(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.optim.Optimizer]:
    return {name: torch.optim.Adam([p], lr=1e-3, eps=1e-15) for name, p in params.items()}


def difference(theirs, ours, step: int, names) -> str | None:
    """The first difference above float rounding, described, or None."""
    (params_a, optimizers_a, state_a), (params_b, optimizers_b, state_b) = theirs, ours
    for name in names:
        a, b = params_a[name].detach(), params_b[name].detach()
        if a.shape != b.shape:
            return f"step {step}: {name} has {tuple(a.shape)} rows in gsplat, {tuple(b.shape)} in gsplat_py"
        if float((a - b).abs().max()) > PARAMETER_TOLERANCE:
            return f"step {step}: {name} differs by {float((a - b).abs().max()):.3g}"
        moments_a = optimizers_a[name].state[params_a[name]]
        moments_b = optimizers_b[name].state[params_b[name]]
        for key in ("exp_avg", "exp_avg_sq"):
            if not torch.allclose(moments_a[key], moments_b[key], rtol=1e-5, atol=1e-12):
                return f"step {step}: the Adam {key} of {name} differs"
    for key in ("grad2d", "count"):
        if state_a[key] is not None and not torch.allclose(state_a[key], state_b[key], rtol=1e-6, atol=1e-9):
            return f"step {step}: the strategy state {key} differs"
    return None


def main() -> None:
    args = parse_args()
    try:
        from gsplat.strategy import DefaultStrategy as GsplatDefaultStrategy
    except ImportError as error:
        sys.exit(f"gsplat is not importable ({error}); see the install lines in this script's help")
    settings = dict(
        refine_start_iter=5,
        refine_every=5,
        refine_stop_iter=args.steps - 10,
        reset_every=args.reset_every,
        refine_scale2d_stop_iter=args.refine_scale2d_stop_iter,
    )
    sides = []
    for strategy in (GsplatDefaultStrategy(**settings), DefaultStrategy(**settings)):
        params = initial_params(args.gaussians)
        sides.append((strategy, params, adam(params), strategy.initialize_state(scene_scale=SCENE_SCALE)))
    worst: dict[str, float] = {}
    for step in range(args.steps):
        n = sides[0][1]["means"].shape[0]
        g = torch.Generator().manual_seed(1000 + step)
        gradients = {name: torch.randn(p.shape, generator=g) * 1e-3 for name, p in sides[0][1].items()}
        means2d_gradient = torch.randn(1, n, 2, generator=g) * MEANS2D_GRADIENT_STD
        radii = (torch.rand(1, n, 2, generator=g) * 6).int() * (torch.rand(1, n, 1, generator=g) > 0.2)
        for strategy, params, optimizers, state in sides:
            means2d = torch.zeros(1, n, 2, requires_grad=True)
            info = {
                "means2d": means2d,
                "radii": radii.clone(),
                "width": WIDTH,
                "height": HEIGHT,
                "n_cameras": 1,
                "gaussian_ids": None,
            }
            strategy.step_pre_backward(params, optimizers, state, step, info)
            (means2d * means2d_gradient).sum().backward()
            for name, p in params.items():
                p.grad = gradients[name].clone()
            for optimizer in optimizers.values():
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(step)
            strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        theirs, ours = ((params, optimizers, state) for _, params, optimizers, state in sides)
        found = difference(theirs, ours, step, sides[0][1].keys())
        if found is not None:
            print(found)
            sys.exit(1)
        for name in sides[0][1]:
            gap = float((sides[0][1][name] - sides[1][1][name]).detach().abs().max())
            worst[name] = max(worst.get(name, 0.0), gap)
    summary = ", ".join(f"{name} {gap:.2g}" for name, gap in worst.items())
    print(
        f"the same for {args.steps} steps ({args.gaussians:,} -> {sides[0][1]['means'].shape[0]:,} "
        f"Gaussians); largest parameter differences: {summary}"
    )


if __name__ == "__main__":
    main()
