"""Training on several processes (torch.distributed), and on batches of views.

    gsplat-py train --nproc 2 ...                        # `launch`: N workers on this machine
    torchrun --nproc-per-node 2 -m gsplat_py train ...   # the same workers, started by torchrun

A worker reads its place from the environment torchrun defines (`processes_from_environment`: RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), joins the process group (`process_group`: gloo on the
CPU, NCCL on CUDA, with a timeout, left again on the way out) and runs a `DistributedTrainer`:

- Gaussians: each rank owns a shard (the initial points ``rank::world_size``, as gsplat's simple_trainer);
  densification and MCMC relocation run per shard on the statistics of the shard's own Gaussians (the
  2D-mean gradients of ``meta["projected"]``, which the exchange brings back from every camera); MCMC grows
  each shard to its share of ``cap_max``.
- Views: every rank draws the same global batch of ``train.batch_size * world_size`` views (one shared view
  order) and renders its own ``train.batch_size`` of them with every rank's Gaussians
  (``rasterization(distributed=True)``). Each rank's loss is its images' losses over the global batch size,
  so the gradients are those of one process averaging the loss over the whole batch.
- Learning rates as gsplat's simple_trainer, for the batch size B = batch_size * world_size: every learning
  rate times sqrt(B), Adam's epsilon over sqrt(B), its betas 1 - B (1 - beta) (clamped at 0). The number
  of steps is the user's to scale (gsplat's ``steps_scaler``: 1/B of the single-view steps).
- Files: rank 0 gathers the shards and writes the same checkpoint.pt and point_cloud.ply a one-process run
  writes, so ``--resume`` works with any number of processes (the checkpoint is split again on load);
  rank 0 evaluates (on the gathered model) and prints; the other ranks print only their errors.
- Faults: the collectives time out (``timeout_s``), and a rank whose peer died stops at its next collective
  with a TrainingError naming the lost peer; `launch` stops the other workers when one fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TypeVar

import torch

from ..data import SceneData
from ..data.scenes import photos_to_pose
from ..errors import ParameterError
from ..model import Params
from ..rendering.distributed import all_gather_counts, all_gather_rows, exchange
from ..strategy.mcmc import MCMCStrategy
from .checkpoint import TrainingError
from .config import Config
from .evaluation import image_to_float, render_views
from .metrics import l1_ssim_loss
from .monitor import DIVERGENCE_CAUSES
from .optimizer import adam_step, visible_rows
from .trainer import Trainer, _all_finite, _default_output, training_device

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistributedTrainer",
    "check_batched_config",
    "Processes",
    "launch",
    "process_group",
    "processes_from_environment",
    "scale_steps",
    "shard_checkpoint",
]

DEFAULT_TIMEOUT_S = 600.0  # a collective that waits longer stops the run (rank 0 evaluates meanwhile)
ADAM_BETAS = (0.9, 0.999)  # torch's, which Trainer's optimisers use
_POLL_S = 0.1  # how often `launch` looks at its workers
# After a worker failed, how long `launch` lets the others stop by themselves (they notice at their next
# exchange and say so) before killing them (one still joining the group would wait out its timeout).
STOP_GRACE_S = 30.0


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place among the training processes."""

    rank: int
    world_size: int
    local_rank: int = 0


def processes_from_environment(environ: Mapping[str, str] = os.environ) -> Processes | None:
    """The place torchrun's variables give this process; None when WORLD_SIZE is not set (a single process).
    TrainingError naming the variable that is missing or wrong."""
    if "WORLD_SIZE" not in environ:
        return None
    values = {}
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if name not in environ:
            raise TrainingError(f"{name}: not set (WORLD_SIZE is; set both, as torchrun does)")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = environ.get(name, environ["RANK"])
        try:
            values[name] = int(text)
        except ValueError:
            raise TrainingError(f"{name}: expected an integer, got {text!r}") from None
    if values["WORLD_SIZE"] < 1:
        raise TrainingError(f"WORLD_SIZE: expected at least 1, got {values['WORLD_SIZE']}")
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise TrainingError(
            f"RANK: expected 0..{values['WORLD_SIZE'] - 1} (WORLD_SIZE), got {values['RANK']}"
        )
    return Processes(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


@contextlib.contextmanager
def process_group(processes: Processes, device: torch.device, timeout_s: float) -> Iterator[None]:
    """Join the default process group (MASTER_ADDR/MASTER_PORT from the environment) for the ``with`` block:
    NCCL for CUDA, gloo otherwise; every collective then fails after ``timeout_s`` without an answer. The
    group is destroyed on the way out, an error included: left to the interpreter's exit, a gloo group whose
    peer died aborts the process now and then ("terminate called without an active exception", 4 exits in 15
    with torch 2.13), after the error was printed and with SIGABRT's status instead of ours. Rarer after
    this, but not gone, so the command's workers also skip the interpreter's teardown (``__main__``)."""
    _check_timeout(timeout_s)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(processes.local_rank)
    try:
        torch.distributed.init_process_group(
            backend,
            rank=processes.rank,
            world_size=processes.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError) as error:  # DistError is a RuntimeError
        raise TrainingError(
            f"rank {processes.rank}: could not join the {processes.world_size} training processes at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}: {_first_line(error)}"
        ) from None
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _check_timeout(timeout_s: float) -> None:
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ParameterError("timeout_s", f"expected a positive number of seconds, got {timeout_s}")


def _is_transport_error(error: RuntimeError) -> bool:
    """Whether ``error`` comes from torch.distributed's transport: a DistError (NCCL, timeouts), or gloo's
    plain RuntimeError (a closed connection), which only its message tells apart (torch 2.13)."""
    return isinstance(error, torch.distributed.DistError) or any(
        name in str(error) for name in ("gloo", "Gloo", "NCCL", "c10d", "pair closure")
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# The step counts and periods gsplat's simple_trainer scales with ``steps_scaler`` (``Config.adjust_steps``),
# per section of our config, with the evaluation and checkpoint periods.
SCALED_STEPS = {
    "train": ("steps", "eval_every", "save_every"),
    "model": ("sh_degree_interval",),
    "default": (
        "refine_start_iter",
        "refine_stop_iter",
        "reset_every",
        "refine_every",
        "refine_scale2d_stop_iter",
    ),
    "mcmc": ("refine_start_iter", "refine_stop_iter", "refine_every"),
}
PERIODS = ("steps", "sh_degree_interval", "reset_every", "refine_every")  # at least 1 once scaled

_Section = TypeVar("_Section")


def scale_steps(config: Config, factor: float) -> Config:
    """``config`` with its step counts and schedules (`SCALED_STEPS`, and ``train.eval_steps``) times
    ``factor``: gsplat's ``steps_scaler``, 1/B for B views a step to see each view as often as one a step."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ParameterError("steps_scaler", f"expected a positive number, got {factor}")

    def scaled(section: _Section, kind: str) -> _Section:
        values = {name: int(getattr(section, name) * factor) for name in SCALED_STEPS[kind]}
        values = {name: max(1, value) if name in PERIODS else value for name, value in values.items()}
        return dataclasses.replace(section, **values)  # type: ignore[type-var]

    train = dataclasses.replace(
        scaled(config.train, "train"), eval_steps=[max(1, int(s * factor)) for s in config.train.eval_steps]
    )
    strategy = dataclasses.replace(
        config.strategy,
        default=scaled(config.strategy.default, "default"),
        mcmc=scaled(config.strategy.mcmc, "mcmc"),
    )
    return dataclasses.replace(config, train=train, model=scaled(config.model, "model"), strategy=strategy)


# ---------------------------------------------------------------------------------------- the launcher


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_batched_config(config: Config, world_size: int) -> None:
    """TrainingError naming the first option that batched training (``world_size`` processes, or
    ``train.batch_size`` > 1) does not support; called before the workers start and by each worker."""
    if world_size > 1 and config.strategy.name == "default" and config.strategy.default.absgrad:
        raise TrainingError(
            "strategy.default.absgrad: not supported with several processes (the absolute gradients stay "
            "on the rank that rasterizes)"
        )
    if config.pose_opt.enabled or config.appearance.enabled:
        option = "pose_opt.enabled" if config.pose_opt.enabled else "appearance.enabled"
        raise TrainingError(
            f"{option}: not supported with several processes or train.batch_size > 1 (per-view "
            "corrections are trained one view per step)"
        )
    if config.model.type != "3dgs":
        raise TrainingError(
            f"model.type: {config.model.type!r} trains on one process with one view a step "
            "(rasterization_2dgs is not distributed); several processes and train.batch_size > 1 train 3DGS"
        )


def device_for_process(device: str, local_rank: int) -> str:
    """``train.device`` for the training process of ``local_rank`` on its machine: its own GPU
    (``cuda:<local_rank>``) when ``device`` resolves to the GPU, else ``device``. TrainingError when the
    machine has no GPU left for that process."""
    if training_device(device).type != "cuda":
        return device
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise TrainingError(
            f"train.device: {device!r} gives each training process on a machine its own GPU, and process "
            f"{local_rank + 1} of this machine has none ({visible} visible); use fewer processes or 'cpu'"
        )
    return f"cuda:{local_rank}"


def launch(
    command: Sequence[str],
    nproc: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Run ``command`` as ``nproc`` workers on this machine (torchrun's variables, 127.0.0.1, a free port,
    each with its share of the CPU threads) and wait for them; their exit status (the first failure's).
    ``timeout_s`` is the workers' (``--timeout``), checked here. When one fails, the others get
    `STOP_GRACE_S` to stop by themselves (``report`` says so) and are then killed; Ctrl-C and SIGTERM are
    passed on to them."""
    if nproc < 1:
        raise ParameterError("nproc", f"expected at least 1 process, got {nproc}")
    _check_timeout(timeout_s)
    threads = max(1, (os.cpu_count() or 1) // nproc)
    environment = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
    }
    workers = [
        subprocess.Popen(list(command), env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)})
        for rank in range(nproc)
    ]
    try:
        return _wait_for(workers, report)
    except KeyboardInterrupt:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        _stop(workers, STOP_GRACE_S)
        raise
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _wait_for(workers: list[subprocess.Popen], report: Callable[[str], None]) -> int:
    while True:
        statuses = [worker.poll() for worker in workers]
        failed = [(rank, status) for rank, status in enumerate(statuses) if status not in (None, 0)]
        if failed:
            # Every failure this look found: a peer that noticed the first one may have exited in the
            # same interval, and a worker killed by a signal says nothing itself.
            parts = [
                f"rank {rank} "
                + (f"was killed by signal {-status}" if status < 0 else f"exited with status {status}")
                for rank, status in failed
            ]
            running = [r for r, s in enumerate(statuses) if s is None]
            if running:
                others = (
                    f"ranks {', '.join(map(str, running))} get"
                    if len(running) > 1
                    else f"rank {running[0]} gets"
                )
                parts.append(f"{others} {STOP_GRACE_S:g} s to stop")
            report("; ".join(parts))
            _stop(workers, STOP_GRACE_S)
            status = failed[0][1]  # the first rank's when several failed between two looks
            return 128 - status if status < 0 else status  # a signal's number as a shell reports it
        if all(status == 0 for status in statuses):
            return 0
        time.sleep(_POLL_S)


def _stop(workers: list[subprocess.Popen], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for the workers to exit, then kill the rest."""
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def quiet_unless_first(processes: Processes) -> None:
    """On ranks other than 0: no standard output (progress, evaluation lines) and no warnings, which rank 0
    prints for the run; errors still reach standard error."""
    if processes.rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        warnings.simplefilter("ignore")


# ---------------------------------------------------------------------------------------- checkpoints


def _optimizer_rows(state: dict, rows) -> dict:
    """An Adam state dict with the per-row tensors (moments) indexed by ``rows``."""
    per_param = {
        key: {name: value[rows].contiguous() if name != "step" else value for name, value in entry.items()}
        for key, entry in state["state"].items()
    }
    return {**state, "state": per_param}


def shard_checkpoint(checkpoint: dict, rank: int, world_size: int, per_gaussian_state: Sequence[str]) -> dict:
    """The part of a whole-model checkpoint that rank ``rank`` of ``world_size`` trains: the Gaussians
    ``rank::world_size``, their optimiser moments and per-Gaussian strategy state (``per_gaussian_state``)."""
    rows = slice(rank, None, world_size)
    state = checkpoint["strategy_state"]
    return {
        **checkpoint,
        "params": {name: value[rows].contiguous() for name, value in checkpoint["params"].items()},
        "optimizers": {name: _optimizer_rows(opt, rows) for name, opt in checkpoint["optimizers"].items()},
        "strategy_state": {
            key: value[rows].contiguous() if key in per_gaussian_state and value is not None else value
            for key, value in state.items()
        },
    }


# ---------------------------------------------------------------------------------------- training


class DistributedTrainer(Trainer):
    """A `Trainer` that renders ``train.batch_size`` views per step, on ``processes`` (None: this process
    alone). See the module's docstring for what each rank does."""

    batches_views = True

    def __init__(
        self,
        config: Config,
        processes: Processes | None = None,
        checkpoint: dict | None = None,
        progress: bool = True,
        scene: SceneData | None = None,
    ):
        self.rank = processes.rank if processes is not None else 0
        self.world_size = processes.world_size if processes is not None else 1
        if self.world_size > 1 and not torch.distributed.is_initialized():
            raise TrainingError("DistributedTrainer: join the process group first (process_group)")
        check_batched_config(config, self.world_size)
        config.validate()
        if processes is not None:
            device = device_for_process(config.train.device, processes.local_rank)
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
        if self.world_size > 1:  # one output folder: rank 0's (its default name has the time in it)
            chosen = [config.train.output or (str(_default_output(config)) if self.rank == 0 else None)]
            self._collective(lambda: torch.distributed.broadcast_object_list(chosen, src=0))
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, output=chosen[0]))
        self.batch = config.train.batch_size * self.world_size
        strategy = config.strategy.default if config.strategy.name == "default" else config.strategy.mcmc
        if checkpoint is not None:
            checkpoint = shard_checkpoint(checkpoint, self.rank, self.world_size, strategy.PER_GAUSSIAN_STATE)
        self._counts = [0] * self.world_size  # Gaussians per rank, as of the last step
        super().__init__(config, scene=scene, checkpoint=checkpoint, progress=progress and self.rank == 0)
        self._counts = self._gather_counts(len(self.params["means"]))
        if isinstance(self.strategy, MCMCStrategy):  # MCMC grows each shard: to its share of cap_max
            cap, rank, size = self.strategy.cap_max, self.rank, self.world_size
            self.strategy = dataclasses.replace(self.strategy, cap_max=cap // size + (rank < cap % size))
        views = self.scene.train_views
        kinds = {(v.width, v.height, v.camera_model) for v in views}
        if len(kinds) > 1:
            raise TrainingError(
                f"{self.scene.root}: train.batch_size > 1 and several processes need training images of one "
                f"size and camera model, found {len(kinds)}: "
                + ", ".join(f"{w}x{h} {model}" for w, h, model in sorted(kinds)[:4])
            )
        # Each rank its own random numbers (MCMC noise, split samples, backgrounds), reproducibly.
        torch.manual_seed(config.train.seed + 1_000_003 * self.rank + self.step)

    # ------------------------------------------------------------------------------ collectives

    def _collective(self, call):
        """``call()`` (collectives, and the work between them); a lost or silent peer becomes a TrainingError
        naming this rank, any other error passes."""
        try:
            return call()
        except RuntimeError as error:
            if not _is_transport_error(error):
                raise
            raise TrainingError(
                f"rank {self.rank}: lost contact with the other training processes at step {self.step} "
                f"({_first_line(error)}): one stopped or stopped answering; stopped, "
                f"{self.last_checkpoint_note()}"
            ) from None

    def _gather_counts(self, count: int) -> list[int]:
        if self.world_size == 1:
            return [count]
        return self._collective(lambda: all_gather_counts(count, self.world_size, self.device))

    def _gather_to_first(self, rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """The rows of every rank, in rank order, on rank 0 (an empty tensor elsewhere)."""
        if self.world_size == 1:
            return rows
        send = [rows.shape[0]] + [0] * (self.world_size - 1)
        recv = counts if self.rank == 0 else [0] * self.world_size
        return self._collective(lambda: exchange(rows.detach().contiguous(), send, recv))

    @property
    def num_gaussians(self) -> int:
        return sum(self._counts)

    # ------------------------------------------------------------------------------ set-up

    def _load_scene(self) -> SceneData:
        folder = photos_to_pose(self.config.data)
        if self.world_size > 1 and folder is not None:  # every process would pose the photos at once
            raise TrainingError(
                f"{folder}: no COLMAP model (sparse/0) yet: compute the camera poses first (the sfm command) "
                "then train on several processes"
            )
        return super()._load_scene()

    def _initial_params(self) -> Params:
        whole = super()._initial_params()  # the same on every rank (one seed): split, as gsplat does
        return {name: _parameter(value[self.rank :: self.world_size]) for name, value in whole.items()}

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = super()._make_optimizers()  # the means' rate comes from means_lr, already scaled
        scale = math.sqrt(self.batch)
        betas = tuple(max(0.0, 1.0 - self.batch * (1.0 - beta)) for beta in ADAM_BETAS)
        for name, optimizer in optimizers.items():
            group = optimizer.param_groups[0]
            if name != "means":
                group["lr"] *= scale
            group["eps"] = self.config.optim.adam_eps / scale
            group["betas"] = betas
        return optimizers

    def means_lr(self, step: int) -> float:
        return super().means_lr(step) * math.sqrt(self.batch)

    # ------------------------------------------------------------------------------ training

    def train(self, until: int | None = None) -> list[dict]:
        records = super().train(until)
        if self.world_size > 1:
            self._collective(torch.distributed.barrier)  # no rank leaves while another still needs it
        return records

    def train_step(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimisation step on the global batch: (its mean loss, this rank's renders, their targets)."""
        optim, step = self.config.optim, self.step
        per_rank = self.config.train.batch_size
        batch = [self._next_view() for _ in range(self.batch)]  # the same on every rank
        mine = batch[self.rank * per_rank : (self.rank + 1) * per_rank]
        views = [self.scene.train_views[index] for index in mine]
        means_lr = self.means_lr(step)
        self.optimizers["means"].param_groups[0]["lr"] = means_lr

        backgrounds = torch.rand(per_rank, 3).to(self.device) if optim.random_background else None
        distributed = self.world_size > 1
        colors, _, meta = self._collective(
            lambda: render_views(
                self.params,
                views,
                self.config.model.sh_degree_at(step),
                backgrounds=backgrounds,
                absgrad=getattr(self.strategy, "absgrad", False) and not distributed,
                distributed=distributed,
            )
        )
        info = meta["projected"] if distributed else meta  # this shard's Gaussians in every camera
        self.strategy.step_pre_backward(self.params, self.optimizers, self.strategy_state, step, info)
        targets = torch.stack([image_to_float(view.image.to(self.device)) for view in views])
        image_losses = torch.stack(
            [
                l1_ssim_loss(colors[i : i + 1], targets[i : i + 1], ssim_weight=optim.ssim_lambda)
                for i in range(per_rank)
            ]
        )
        loss = image_losses.sum() / self.batch
        total = self.num_gaussians
        if optim.opacity_reg > 0.0:
            loss = loss + optim.opacity_reg * torch.sigmoid(self.params["opacities"]).sum() / total
        if optim.scale_reg > 0.0:
            loss = loss + optim.scale_reg * torch.exp(self.params["scales"]).sum() / (3 * total)
        every_loss = image_losses.detach()
        if distributed:
            every_loss = self._collective(lambda: all_gather_rows(every_loss, [per_rank] * self.world_size))
        loss_value = float(every_loss.mean())
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"the loss became {loss_value} at step {step + 1}; stopped, {self.last_checkpoint_note()}. "
                f"Likely causes: {DIVERGENCE_CAUSES}"
            )
        self._collective(loss.backward)

        visible = visible_rows(info["radii"]) if optim.visible_adam else None
        adam_step(self.optimizers.values(), visible=visible)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.strategy.step_post_backward(
            self.params, self.optimizers, self.strategy_state, step, info, packed=False, lr=means_lr
        )
        self._counts = self._gather_counts(len(self.params["means"]))
        self.step = step + 1
        for view, value in zip(batch[:-1], every_loss.tolist()[:-1]):
            self.monitor.record(view, value)
        self._watch_step(batch[-1], float(every_loss[-1]))
        return loss_value, colors.detach(), targets

    # ------------------------------------------------------------------------------ evaluation, files

    def _start_output(self) -> None:
        if self.rank == 0:
            super()._start_output()

    def _gather_params(self) -> Params:
        """The whole model on rank 0 (the shards in rank order; empty tensors elsewhere)."""
        return {
            name: _parameter(self._gather_to_first(value, self._counts))
            for name, value in self.params.items()
        }

    def evaluate(self, params: Params | None = None) -> dict:
        """Rank 0 scores the gathered model and shares the record (every rank keeps the metrics)."""
        whole = self._gather_params() if params is None else params
        record: list[dict | None] = [super().evaluate(whole) if self.rank == 0 else None]
        if self.rank != 0:
            self._review_views()  # the monitor's decisions (views left out) must be the same on every rank
        if self.world_size > 1:
            self._collective(lambda: torch.distributed.broadcast_object_list(record, src=0))
        shared = record[0]
        assert shared is not None  # rank 0's, broadcast
        self.metrics = [r for r in self.metrics if r["step"] != self.step] + [shared]
        return shared

    def save_checkpoint(self) -> None:
        finite = torch.tensor([float(_all_finite(self.params))])
        if self.world_size > 1:
            finite = self._collective(lambda: all_gather_rows(finite, [1] * self.world_size))
        if not bool(finite.all()):
            raise TrainingError(
                f"non-finite Gaussian parameters at step {self.step}; not saved, "
                f"{self.last_checkpoint_note()}"
            )
        self._save(checkpoint=True)

    def _save(self, checkpoint: bool) -> None:
        """Rank 0 writes the gathered model: the checkpoint of a one-process run with these Gaussians."""
        params = self._gather_params()
        whole = self._checkpoint() if checkpoint else None
        if whole is not None:
            whole["params"] = params
            whole["optimizers"] = {name: self._gathered_optimizer(name) for name in self.optimizers}
            whole["strategy_state"] = {
                key: self._gather_to_first(value, self._counts)
                if key in self.strategy.PER_GAUSSIAN_STATE and value is not None
                else value
                for key, value in self.strategy_state.items()
            }
        if self.rank == 0:
            self._write_run_files(params, whole)

    def _gathered_optimizer(self, name: str) -> dict:
        state = self.optimizers[name].state_dict()
        per_param = {
            key: {
                entry_name: value if entry_name == "step" else self._gather_to_first(value, self._counts)
                for entry_name, value in entry.items()
            }
            for key, entry in state["state"].items()
        }
        return {**state, "state": per_param}


def _parameter(value: torch.Tensor) -> torch.nn.Parameter:
    """``value`` as the frozen Parameter a `Params` dict holds (no copy)."""
    return torch.nn.Parameter(value.detach(), requires_grad=False)
