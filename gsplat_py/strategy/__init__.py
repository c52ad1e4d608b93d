"""Densification strategies: when and how Gaussians are added, removed and moved during training.

``DefaultStrategy`` is 3DGS's adaptive density control, ``MCMCStrategy`` is 3DGS-MCMC; both mirror
gsplat 1.5 (``gsplat.strategy``) in options, defaults and call sequence, so a gsplat training loop
switches by changing the import. ``ops`` holds the row-level building blocks they are made of.
"""

from . import ops
from .base import Strategy
from .default import DefaultStrategy
from .mcmc import MCMCStrategy
from .ops import (
    binomial_table,
    compute_relocation,
    duplicate,
    inject_noise_to_position,
    relocate,
    remove,
    reset_opa,
    sample_add,
    split,
    update_param_with_optimizer,
)

__all__ = [
    "Strategy",
    "DefaultStrategy",
    "MCMCStrategy",
    "ops",
    "update_param_with_optimizer",
    "duplicate",
    "split",
    "remove",
    "reset_opa",
    "relocate",
    "sample_add",
    "inject_noise_to_position",
    "compute_relocation",
    "binomial_table",
]
