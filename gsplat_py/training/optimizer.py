"""One fused Adam step over every Gaussian parameter.

The trainer (and the densification strategies, as in gsplat) keep one ``torch.optim.Adam`` per
parameter; :func:`adam_step` steps them all in one call of the compiled ``adam_step`` op (C++ on the CPU,
one OpenMP region for every tensor; CUDA on a GPU) instead of one fused Adam call (and, on the CPU, one
parallel region) per optimizer. The optimizers' state stays torch's (``step``, ``exp_avg``,
``exp_avg_sq``), so checkpoints, ``load_state_dict`` and the strategies' row edits are unchanged, and the
update is torch's fused Adam's (``csrc/include/adam_math.h``), the same bits: the last (numel mod 16)
values of a tensor, which torch's CPU kernel rounds in a scalar loop of its own, go through torch's kernel.

``visible`` gives gsplat's "visible Adam" (``SelectiveAdam``): rows of Gaussians no camera of the step
saw are left as they are (parameters and moments), instead of moving on their momentum alone. The step
count still advances for every row; unlike gsplat's ``SelectiveAdam``, the update keeps Adam's bias
correction, so with every row visible it is the plain step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import ParameterError
from ..rendering import _backend

__all__ = ["adam_step", "visible_rows"]

# torch's CPU fused Adam splits a tensor into 64-byte units and runs its vector loop over whole vectors of
# at most 16 values: the values past the last multiple of 16 take its scalar loop.
_TORCH_TAIL_MULTIPLE = 16


def _compiled_op_runs_on(device: torch.device) -> bool:
    if not _backend.extension_available():
        return False
    return device.type == "cpu" or (device.type == "cuda" and _backend.cuda_backend_available())


def _check_plain_adam(optimizer: torch.optim.Optimizer, index: int) -> None:
    if not isinstance(optimizer, torch.optim.Adam):
        raise ParameterError(
            "optimizers", f"expected torch.optim.Adam, got {type(optimizer).__name__} at {index}"
        )
    for group in optimizer.param_groups:
        unsupported = [
            name
            for name, plain in (("weight_decay", 0), ("amsgrad", False), ("maximize", False))
            if group.get(name, plain) != plain
        ]
        if unsupported:
            raise ParameterError(
                "optimizers", f"optimizer {index} sets {', '.join(unsupported)}; only plain Adam is fused"
            )


def visible_rows(radii: Tensor) -> Tensor:
    """[N] bool: the Gaussians with a positive radius in some camera (``radii`` [C, N, 2], rasterization's
    ``meta["radii"]``), the rows :func:`adam_step` updates with ``visible``."""
    return (radii > 0).all(dim=-1).any(dim=0)


@torch.no_grad()
def adam_step(optimizers: Iterable[torch.optim.Optimizer], visible: Tensor | None = None) -> None:
    """Step every ``torch.optim.Adam`` of ``optimizers`` (plain Adam: no weight decay, amsgrad or
    maximize; ParameterError otherwise) in one fused call; parameters without a gradient are skipped, as
    ``Optimizer.step`` skips them. ``visible`` [N] bool (every parameter then has N rows) restricts the
    update to the rows where it is True (visible Adam). The optimizers' step hooks are not run.

    Without the compiled extension, or on a device it does not cover, each optimizer runs its own
    ``step()`` (``visible`` then raises ParameterError)."""
    optimizers = list(optimizers)
    for index, optimizer in enumerate(optimizers):
        _check_plain_adam(optimizer, index)
    entries = [
        (optimizer, group, param)
        for optimizer in optimizers
        for group in optimizer.param_groups
        for param in group["params"]
        if param.grad is not None
    ]
    if not entries:
        return
    device = entries[0][2].device
    if not _compiled_op_runs_on(device):
        if visible is not None:
            raise ParameterError("visible", f"visible Adam needs gsplat_py's compiled ops on {device}")
        for optimizer in optimizers:
            optimizer.step()
        return
    # torch's CPU kernel rounds the last (numel mod 16) values of a tensor in a scalar loop of its own,
    # not as its vector path (and the op) does: on the CPU, without `visible`, those few values are left
    # to torch's kernel, so that the step is torch's fused Adam's, bit for bit.
    leave_tails_to_torch = visible is None and device.type == "cpu"
    params: list[Tensor] = []
    grads: list[Tensor] = []
    exp_avgs: list[Tensor] = []
    exp_avg_sqs: list[Tensor] = []
    lrs: list[float] = []
    beta1s: list[float] = []
    beta2s: list[float] = []
    epss: list[float] = []
    steps: list[float] = []
    tails: list[tuple[list[Tensor], Tensor, tuple[float, float, float, float]]] = []
    for optimizer, group, param in entries:
        state = optimizer.state[param]
        if not state:  # as torch.optim.Adam initialises it
            on_device = group.get("fused") or group.get("capturable")
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device if on_device else "cpu")
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        tensors = [param, param.grad.contiguous(), state["exp_avg"], state["exp_avg_sq"]]
        lr, eps = float(group["lr"]), float(group["eps"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        body = param.numel() - param.numel() % _TORCH_TAIL_MULTIPLE
        if leave_tails_to_torch and body < param.numel():
            tails.append(([t.view(-1)[body:] for t in tensors], state["step"], (lr, beta1, beta2, eps)))
            tensors = [t.view(-1)[:body] for t in tensors]
        for values, tensor in zip((params, grads, exp_avgs, exp_avg_sqs), tensors):
            values.append(tensor)
        lrs.append(lr)
        beta1s.append(beta1)
        beta2s.append(beta2)
        epss.append(eps)
        steps.append(float(state["step"]))
    torch.ops.gsplat_py.adam_step(
        params, grads, exp_avgs, exp_avg_sqs, lrs, beta1s, beta2s, epss, steps, visible
    )
    for (param, grad, exp_avg, exp_avg_sq), step, (lr, beta1, beta2, eps) in tails:
        torch._fused_adam_(
            [param],
            [grad],
            [exp_avg],
            [exp_avg_sq],
            [],
            [step],
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            amsgrad=False,
            weight_decay=0.0,
            maximize=False,
        )
