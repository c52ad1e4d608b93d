"""The training loop: data -> model -> render -> loss -> strategy -> optimizer, with evaluation,
checkpoints and PLY export.

    trainer = Trainer(config)          # validates, loads the scene, initialises the Gaussians
    records = trainer.train()          # the metrics.json records
    Trainer.resume("outputs/run").train()

An output folder holds ``config.toml`` (the effective config), ``metrics.json`` (one record per evaluation,
see ``evaluation.py``), ``renders/step_NNNNNN/`` (ground truth beside render for each evaluated view),
``checkpoint.pt`` (everything needed to continue exactly: Gaussians, optimizer moments, strategy state,
pose corrections, RNG states, the position in the view order) and ``point_cloud.ply`` (Inria layout, in
the normalised world frame of the run; ``checkpoint.pt`` records the similarity ``transform`` from the
COLMAP frame). Every file is written atomically, so a crash or Ctrl-C keeps the last complete one.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import SceneData, load_scene
from ..data.scenes import photos_to_pose, scene_name
from ..data.sfm import estimate_sfm_seconds, run_sfm, scan_photos
from ..data.world_frame import WorldFrame, frame_comments
from ..io.atomic import atomic_open_all, remove_orphan_temporaries, write_text_atomically
from ..io.paths import PathLike
from ..io.ply import write_ply
from ..model import Params, init_params, model_type_comments, params_to_splats, random_points
from ..rendering import resolve_device
from .appearance import AppearanceCorrection
from .checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    CONFIG_FILE,
    METRICS_FILE,
    PLY_FILE,
    RUN_FILES,
    TrainingError,
    load_checkpoint,
)
from .config import Config, config_from_dict, config_to_toml
from .evaluation import evaluate_views, evaluation_record, image_to_float, load_lpips, render_view
from .hooks import StepReport, TrainingHook
from .metrics import l1_ssim_loss
from .monitor import (
    COLLAPSE_CAUSES,
    DIVERGENCE_CAUSES,
    EXPLOSION_CAUSES,
    VIEW_EXAMPLES,
    RunMonitor,
    flat_image_loss,
)
from .optimizer import adam_step, visible_rows
from .pose_opt import PoseCorrection
from .surfels import strategy_for_model, surfel_regularisation, surfel_scene_problem

__all__ = ["Trainer", "TrainingError", "load_checkpoint"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt() parameters, from glibc's malloc.h
RENDERS_FOLDER = "renders"  # renders/step_NNNNNN/: the evaluation renders
# The optimiser settings a checkpoint's optimisers hold; a resume sets them from the (new) config.
_OPTIMISER_OPTIONS = (
    *(f"optim.{name}_lr" for name in ("means", "scales", "quats", "opacities", "sh0", "shN")),
    "optim.means_lr_final",
    "optim.adam_eps",
    "pose_opt.lr",
    "pose_opt.reg",
    "appearance.lr",
)
# Weight of the newest step in the running average of step times that StepReport.steps_per_s reports:
# about the last 20 steps, so a hook sees the speed change within a second or two of a densification.
_STEP_TIME_SMOOTHING = 0.05


def _default_output(config: Config) -> Path:
    return Path("outputs") / f"{scene_name(config.data)}-{datetime.now():%Y%m%d-%H%M%S}"


def _check_output(output: Path, resuming: bool) -> None:
    """TrainingError unless the run can write into ``output``. Nothing is created here: `Trainer.train`
    creates the folder, so a run that fails to start leaves none behind."""
    existing = output
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None if existing.is_dir() else f"{existing} is not a folder"
    if problem is None:
        try:
            with tempfile.TemporaryFile(dir=existing):  # removed on close, or by the OS on a crash
                pass
        except OSError as error:
            problem = str(error.strerror or error)
    if problem is not None:
        raise TrainingError(f"output directory {output} is not writable: {problem}")
    if not resuming and (output / CHECKPOINT_FILE).exists():
        raise TrainingError(
            f"output directory {output} already holds a run ({CHECKPOINT_FILE}); resume it or choose another "
            "output folder"
        )


def _remove_interrupted_saves(output: Path) -> None:
    """The temporary files of saves that a killed run left in ``output`` (its run files, its evaluation
    renders); `gsplat_py.io.atomic` names them."""
    remove_orphan_temporaries(output, RUN_FILES)
    for folder in (output / RENDERS_FOLDER).glob("step_*"):
        remove_orphan_temporaries(folder)


def _keep_freed_memory_for_reuse() -> None:
    """Stop glibc from handing large freed blocks back to the kernel.

    Each step allocates and frees tensors of tens of MB ([N, 16, 3] SH gradients...). By default glibc
    serves those with fresh mmap()s, so every step page-faults its way through zeroed pages again; keeping
    them in the heap measured ~10-15% faster steps at 130k Gaussians. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def training_device(name: str) -> torch.device:
    """The device ``train.device`` names (see ``gsplat_py._backend.resolve_device``)."""
    try:
        return resolve_device(name)
    except ValueError as error:
        raise TrainingError(f"train.device: {error}") from None


def _to_device(value, device: torch.device):
    """``value`` (a tensor, or dicts / lists / tuples of them) with every tensor moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def _all_finite(params: Params) -> bool:
    # a finite sum proves every entry finite; only a non-finite sum (or an overflow) needs the full check
    return all(
        bool(torch.isfinite(p.detach().sum())) or bool(torch.isfinite(p.detach()).all())
        for p in params.values()
    )


def _load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore the moments and step counts of ``state`` into ``optimizer``, keeping the hyperparameters
    (learning rate, epsilon, weight decay) it was made with from the config: a resume with new values uses
    them, not the checkpoint's."""
    configured = [
        {key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, configured):
        group.update(settings)


def _changed_options(old: Config, new: Config, names: tuple[str, ...]) -> list[str]:
    """``name old -> new`` for each of the dotted options ``names`` whose value differs."""
    changed = []
    for name in names:
        section, key = name.split(".")
        before, after = getattr(getattr(old, section), key), getattr(getattr(new, section), key)
        if before != after:
            changed.append(f"{name} {before!r} -> {after!r}")
    return changed


class Trainer:
    """Trains Gaussians on one scene as ``config`` says (see ``gsplat_py.training.config``), one view per
    step in one process (``train.batch_size`` 1; `gsplat_py.training.distributed.DistributedTrainer` batches
    views and runs on several processes).

    ``scene`` overrides loading ``config.data`` (tests pass synthetic scenes); ``checkpoint`` (a dict from
    :func:`load_checkpoint`) restores a run's exact state instead of initialising; ``hooks`` watch (and may
    pause) training (`gsplat_py.training.hooks`).
    """

    batches_views = False  # renders train.batch_size views per step

    def __init__(
        self,
        config: Config,
        scene: SceneData | None = None,
        checkpoint: dict | None = None,
        progress: bool = True,
        hooks: Sequence[TrainingHook] = (),
    ):
        config.validate()
        if config.train.batch_size != 1 and not self.batches_views:
            raise TrainingError(
                f"train.batch_size: {config.train.batch_size} views per step need "
                "gsplat_py.training.distributed.DistributedTrainer (Trainer renders one)"
            )
        self.hooks = list(hooks)
        output = Path(config.train.output) if config.train.output else _default_output(config)
        # The trainer's own copy, with the output folder it chose: the caller's config is left as it was.
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, output=str(output)))
        self.config = config
        self.progress = progress
        self.output = output
        _check_output(self.output, resuming=checkpoint is not None)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        _keep_freed_memory_for_reuse()
        self.device = training_device(config.train.device)
        torch.manual_seed(config.train.seed)

        self.scene = scene if scene is not None else self._load_scene()
        if not self.scene.train_views:
            raise TrainingError(f"{self.scene.root}: the scene has no training views")
        problem = surfel_scene_problem(config.model.type, self.scene)
        if problem is not None:
            raise TrainingError(problem)
        self.scene_scale = self.scene.scene_scale
        if not self.scene_scale > 0.0:  # all training cameras at one position: no extent to scale by
            warnings.warn(
                f"{self.scene.root}: the cameras share one position, so the scene scale is 0; using 1.0",
                stacklevel=2,
            )
            self.scene_scale = 1.0
        self.eval_views = self.scene.test_views or self.scene.train_views
        self.eval_split = "test" if self.scene.test_views else "train"
        self.train_camtoworlds = torch.stack([v.camera_to_world() for v in self.scene.train_views]).to(
            self.device
        )

        self.strategy = strategy_for_model(
            config.strategy.default if config.strategy.name == "default" else config.strategy.mcmc,
            config.model.type,
        )
        if checkpoint is not None:
            initial = checkpoint["params"]
        else:
            initial = self._initial_params()
        self.params = {
            k: torch.nn.Parameter(v.detach().to(self.device, copy=True)) for k, v in initial.items()
        }
        self.optimizers = self._make_optimizers()
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_scale)
        self.strategy.check_sanity(self.params, self.optimizers)

        self.pose_correction: PoseCorrection | None = None
        self.pose_optimizer: torch.optim.Optimizer | None = None
        if config.pose_opt.enabled:
            self.pose_correction = PoseCorrection(len(self.scene.train_views)).to(self.device)
            self.pose_optimizer = torch.optim.Adam(
                self.pose_correction.parameters(), lr=config.pose_opt.lr, weight_decay=config.pose_opt.reg
            )

        self.appearance: AppearanceCorrection | None = None
        self.appearance_optimizer: torch.optim.Optimizer | None = None
        if config.appearance.enabled:
            self.appearance = AppearanceCorrection(len(self.scene.train_views)).to(self.device)
            self.appearance_optimizer = torch.optim.Adam(
                self.appearance.parameters(), lr=config.appearance.lr
            )
        self.monitor = RunMonitor(len(self.scene.train_views), config.monitor.check_step)

        self.view_generator = torch.Generator().manual_seed(config.train.seed)
        self.view_order: list[int] = []
        self.step = 0
        self.elapsed_s = 0.0
        self.metrics: list[dict] = []
        self.lpips = load_lpips()
        self.resumed = checkpoint is not None
        self._output_open = False
        if checkpoint is not None:
            self._restore(checkpoint)
        for message in self.scene.check.messages():
            warnings.warn(f"{self.scene.root}: {message}", stacklevel=2)

    @classmethod
    def resume(cls, run: PathLike, config: Config | None = None, progress: bool = True) -> Trainer:
        """Continue the run in folder ``run`` with its saved config (or ``config``, e.g. more steps)."""
        checkpoint = load_checkpoint(run)
        config = config if config is not None else config_from_dict(checkpoint["config"])
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, output=str(Path(run))))
        return cls(config, checkpoint=checkpoint, progress=progress)

    # ---------------------------------------------------------------------------------- set-up

    def _load_scene(self) -> SceneData:
        """The scene of ``config.data``; a folder of photos without a COLMAP model is posed first (SfM)."""
        folder = photos_to_pose(self.config.data)
        if folder is not None:
            photos = scan_photos(folder)
            if photos.photos:
                minutes = max(1, round(estimate_sfm_seconds(photos) / 60))
                tqdm.write(
                    f"{folder}: no COLMAP model (sparse/0): computing the camera poses of its "
                    f"{len(photos.photos)} photos first with structure from motion (about {minutes} min)"
                )
            run_sfm(folder, progress=self.progress, report=tqdm.write)
        return load_scene(self.config.data)

    def _initial_params(self) -> Params:
        model = self.config.model
        points, colors = self.scene.points, self.scene.point_colors
        if model.init == "sfm" and points.shape[0] == 0:
            warnings.warn(
                f"{self.scene.root}: the COLMAP model has no 3D points; using random initialisation",
                stacklevel=2,
            )
        if model.init == "random" or points.shape[0] == 0:
            points, colors = random_points(
                model.random_init_count, model.random_init_extent * self.scene_scale
            )
        return init_params(points, colors, model.sh_degree, model.init_opacity, model.init_scale, model.type)

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optim = self.config.optim
        learning_rates = {
            "means": self.means_lr(0),
            "scales": optim.scales_lr,
            "quats": optim.quats_lr,
            "opacities": optim.opacities_lr,
            "sh0": optim.sh0_lr,
            "shN": optim.shN_lr,
        }
        return {
            name: torch.optim.Adam([self.params[name]], lr=lr, eps=optim.adam_eps, fused=True)
            for name, lr in learning_rates.items()
        }

    def means_lr(self, step: int) -> float:
        """Exponential decay from means_lr to means_lr_final over the run, both times the scene scale."""
        optim = self.config.optim
        progress = min(step / self.config.train.steps, 1.0)
        start = optim.means_lr
        end = optim.means_lr_final
        lr = start * (end / start) ** progress if start > 0 and end > 0 else start
        return lr * self.scene_scale

    # ---------------------------------------------------------------------------------- training

    def _next_view(self) -> int:
        while True:  # the views left out (monitor.drop_outlier_views) are never more than half
            if not self.view_order:
                self.view_order = torch.randperm(
                    len(self.scene.train_views), generator=self.view_generator
                ).tolist()
            view = self.view_order.pop()
            if view not in self.monitor.dropped_views:
                return view

    def train_step(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimisation step on one training view; returns (loss, render, target)."""
        optim = self.config.optim
        step = self.step
        view_index = self._next_view()
        view = self.scene.train_views[view_index]
        means_lr = self.means_lr(step)
        self.optimizers["means"].param_groups[0]["lr"] = means_lr

        viewmat = view.world_to_camera
        if self.pose_correction is not None:
            camtoworld = self.pose_correction(
                self.train_camtoworlds[view_index : view_index + 1],
                torch.tensor([view_index], device=self.device),
            )[0]
            viewmat = torch.linalg.inv(camtoworld)
        # drawn on the CPU: the same backgrounds on every device for one seed
        backgrounds = torch.rand(1, 3).to(self.device) if optim.random_background else None
        colors, alphas, info = render_view(
            self.params,
            view,
            self.config.model.sh_degree_at(step),
            viewmat=viewmat,
            backgrounds=backgrounds,
            absgrad=getattr(self.strategy, "absgrad", False),
            model_type=self.config.model.type,
        )
        if self.appearance is not None:
            colors = self.appearance(colors, view_index)
        self.strategy.step_pre_backward(self.params, self.optimizers, self.strategy_state, step, info)

        target = image_to_float(view.image.to(self.device))[None]
        loss = l1_ssim_loss(colors, target, ssim_weight=optim.ssim_lambda)
        if optim.opacity_reg > 0.0:
            loss = loss + optim.opacity_reg * torch.sigmoid(self.params["opacities"]).mean()
        if optim.scale_reg > 0.0:
            loss = loss + optim.scale_reg * torch.exp(self.params["scales"]).mean()
        if self.config.model.type == "2dgs":
            surfel_loss = surfel_regularisation(self.config.surfel, step, alphas, info)
            loss = loss if surfel_loss is None else loss + surfel_loss
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"the loss became {loss_value} at step {step + 1} (view {view.name}); stopped, "
                f"{self.last_checkpoint_note()}. Likely causes: {DIVERGENCE_CAUSES}"
            )
        loss.backward()

        # One fused Adam call for every Gaussian parameter (torch's fused Adam's update, one parallel region).
        visible = visible_rows(info["radii"]) if optim.visible_adam else None
        adam_step(self.optimizers.values(), visible=visible)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        if self.pose_optimizer is not None:
            self.pose_optimizer.step()
            self.pose_optimizer.zero_grad(set_to_none=True)
        if self.appearance_optimizer is not None:
            self.appearance_optimizer.step()
            self.appearance_optimizer.zero_grad(set_to_none=True)

        self.strategy.step_post_backward(
            self.params, self.optimizers, self.strategy_state, step, info, packed=False, lr=means_lr
        )
        self.step = step + 1
        self._watch_step(view_index, loss_value)
        return loss_value, colors.detach(), target

    def _due(self, every: int, extra: tuple[int, ...] = ()) -> bool:
        return (
            self.step == self.config.train.steps
            or (every > 0 and self.step % every == 0)
            or self.step in extra
        )

    def train(self, until: int | None = None) -> list[dict]:
        """Train to ``config.train.steps`` (or stop after step ``until``, with the schedules still set by
        ``config.train.steps``), evaluating and checkpointing on schedule; returns the records."""
        train = self.config.train
        last_step = train.steps if until is None else min(until, train.steps)
        self._start_output()
        if self.resumed:
            # A kill between the two renames of a save leaves point_cloud.ply one save behind checkpoint.pt.
            self._save(checkpoint=False)
        bar = tqdm(
            total=train.steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            smoothing=0.05,
            mininterval=0.5,
            disable=not self.progress,
        )
        clock = time.perf_counter()
        step_end = clock  # when the last step ended; the steps/s of the hooks' reports leave out the rest
        step_time: float | None = None
        try:
            while self.step < last_step:
                try:
                    loss, render, target = self.train_step()
                except ValueError as error:  # the renderer refuses non-finite Gaussians: say why they are
                    raise self._diverged(error) from None
                bar.update(1)
                if self.step % 10 == 0 or self.step == train.steps:
                    mse = float((render - target).square().mean())
                    bar.set_postfix(
                        loss=f"{loss:.4f}",
                        psnr=f"{-10.0 * math.log10(max(mse, 1e-10)):.2f}",
                        gaussians=self.num_gaussians,
                        refresh=False,
                    )
                if self.hooks:
                    now = time.perf_counter()
                    last_step_time = now - step_end
                    step_time = (
                        last_step_time
                        if step_time is None
                        else step_time + _STEP_TIME_SMOOTHING * (last_step_time - step_time)
                    )
                    step_end = now
                    report = StepReport(
                        step=self.step,
                        steps=train.steps,
                        loss=loss,
                        num_gaussians=self.num_gaussians,
                        sh_degree=self.config.model.sh_degree_at(self.step),
                        steps_per_s=1.0 / step_time if step_time > 0 else 0.0,
                    )
                    for hook in self.hooks:
                        hook.after_step(self, report)
                eval_due = self._due(train.eval_every, tuple(train.eval_steps))
                save_due = self._due(train.save_every)
                if eval_due or save_due:
                    self.elapsed_s += time.perf_counter() - clock
                    if eval_due:
                        record = self.evaluate()
                        bar.write(
                            f"step {self.step}: {self.eval_split} PSNR {record['psnr']:.2f} dB, SSIM "
                            f"{record['ssim']:.4f}, {record['num_gaussians']:,} Gaussians, "
                            f"{record['steps_per_s']:.1f} steps/s"
                        )
                        for hook in self.hooks:
                            hook.after_evaluation(self, record)
                    if save_due:
                        self.save_checkpoint()
                    clock = time.perf_counter()
                    step_end = clock
                if self.hooks:
                    paused_from = time.perf_counter()
                    for hook in self.hooks:
                        hook.wait_while_paused()
                    paused_s = time.perf_counter() - paused_from
                    clock += paused_s  # a pause is not training time
                    step_end += paused_s
        finally:
            bar.close()
        return self.metrics

    def _start_output(self) -> None:
        """At the start of `train`: the output folder and the effective config."""
        self._open_output()
        write_text_atomically(self.output / CONFIG_FILE, config_to_toml(self.config))

    def _open_output(self) -> None:
        """Before the first write: create the output folder, remove what interrupted saves left in it."""
        if not self._output_open:
            self.output.mkdir(parents=True, exist_ok=True)
            _remove_interrupted_saves(self.output)
            self._output_open = True

    @property
    def num_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    # ---------------------------------------------------------------------------------- evaluation

    def evaluate(self, params: Params | None = None) -> dict:
        """Score the current model (``params``, by default the trainer's) on the held-out views (the training
        views if none are held out) and append the record to ``metrics.json``."""
        self._open_output()
        render_dir = (
            self.output / RENDERS_FOLDER / f"step_{self.step:06d}" if self.config.train.save_renders else None
        )
        result = evaluate_views(
            self.params if params is None else params,
            self.eval_views,
            self.config.model.sh_degree_at(self.step),
            render_dir,
            self.lpips,
            model_type=self.config.model.type,
        )
        record = evaluation_record(result, self.eval_split, self.num_gaussians, self.step, self.elapsed_s)
        record.update(self._review_views())
        self.metrics = [r for r in self.metrics if r["step"] != self.step] + [record]
        write_text_atomically(self.output / METRICS_FILE, json.dumps(self.metrics, indent=1) + "\n")
        return record

    # ---------------------------------------------------------------------------------- checkpoints

    def last_checkpoint_note(self) -> str:
        path = self.output / CHECKPOINT_FILE
        return f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was saved yet"

    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` and ``point_cloud.ply`` (refuses non-finite parameters).

        Both are written to temporary files first and renamed only once both are complete, checkpoint
        first: a kill before the renames keeps the previous pair (the next start removes the temporary
        files), one between them leaves the PLY a save behind (the next start of the run rewrites it from
        the checkpoint). A failed write (disk full, read-only) is a TrainingError naming the file; the
        previous files stay."""
        if not _all_finite(self.params):
            raise TrainingError(
                f"non-finite Gaussian parameters at step {self.step}; not saved, "
                f"{self.last_checkpoint_note()}"
            )
        self._save(checkpoint=True)

    def _save(self, checkpoint: bool) -> None:
        """Write point_cloud.ply, and with ``checkpoint`` checkpoint.pt too, as one save."""
        self._write_run_files(self.params, self._checkpoint() if checkpoint else None)

    def _write_run_files(self, params: Params, checkpoint: dict | None) -> None:
        """Write point_cloud.ply of ``params`` and ``checkpoint`` (unless None) as checkpoint.pt, one save."""
        self._open_output()
        note = self.last_checkpoint_note()
        paths = [self.output / CHECKPOINT_FILE] if checkpoint is not None else []
        try:
            with atomic_open_all([*paths, self.output / PLY_FILE]) as files:
                if checkpoint is not None:
                    torch.save(checkpoint, files[0])
                write_ply(
                    files[-1],
                    params_to_splats(params),
                    frame_comments(WorldFrame.normalized(self.scene.transform))
                    + model_type_comments(self.config.model.type),
                )
        except OSError as error:
            raise TrainingError(
                f"{error.filename or self.output}: cannot save: {error.strerror or error}; {note}"
            ) from None

    def _checkpoint(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "params": {name: p.detach().cpu() for name, p in self.params.items()},
            "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
            "strategy_state": self.strategy_state,
            "pose_correction": self.pose_correction.state_dict()
            if self.pose_correction is not None
            else None,
            "pose_optimizer": self.pose_optimizer.state_dict() if self.pose_optimizer is not None else None,
            "appearance": self.appearance.state_dict() if self.appearance is not None else None,
            "appearance_optimizer": self.appearance_optimizer.state_dict()
            if self.appearance_optimizer is not None
            else None,
            "monitor": self.monitor.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "view_generator": self.view_generator.get_state(),
            "view_order": list(self.view_order),
            "elapsed_s": self.elapsed_s,
            "metrics": self.metrics,
            "config": dataclasses.asdict(self.config),
            "transform": self.scene.transform,
            "scene_scale": self.scene_scale,
        }

    def _restore(self, checkpoint: dict) -> None:
        for name, optimizer in self.optimizers.items():
            _load_optimizer_state(optimizer, checkpoint["optimizers"][name])
        self.strategy_state = _to_device(checkpoint["strategy_state"], self.device)
        if self.pose_correction is not None and self.pose_optimizer is not None:
            if checkpoint["pose_correction"] is None:
                raise TrainingError(
                    "the checkpoint was trained without pose optimisation; cannot resume with it"
                )
            self.pose_correction.load_state_dict(checkpoint["pose_correction"])
            _load_optimizer_state(self.pose_optimizer, checkpoint["pose_optimizer"])
        self._restore_watching(checkpoint)
        names = tuple(
            n
            for n in _OPTIMISER_OPTIONS
            if (self.pose_optimizer is not None or not n.startswith("pose_opt."))
            and (self.appearance_optimizer is not None or not n.startswith("appearance."))
        )
        changed = _changed_options(config_from_dict(checkpoint["config"]), self.config, names)
        if changed:
            warnings.warn(
                f"resuming with new optimiser settings, applied: {', '.join(changed)}", stacklevel=3
            )
        torch.set_rng_state(checkpoint["torch_rng"])
        if self.device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], self.device)
        self.view_generator.set_state(checkpoint["view_generator"])
        self.view_order = list(checkpoint["view_order"])
        self.step = int(checkpoint["step"])
        self.elapsed_s = float(checkpoint["elapsed_s"])
        self.metrics = list(checkpoint["metrics"])
        if not torch.allclose(checkpoint["transform"].double(), self.scene.transform.double(), atol=1e-6):
            warnings.warn(
                "the scene's normalisation differs from the checkpoint's: is this the same data?",
                stacklevel=2,
            )

    # ---------------------------------------------------------------------------------- watching the run
    # (`training/monitor.py` and `training/appearance.py`: failure detection, the views that do not fit,
    # appearance compensation's state)

    def _watch_step(self, view: int, loss: float) -> None:
        """After each step: record its loss; stop a run whose model collapsed or ran away (TrainingError);
        warn, at ``monitor.check_step``, when the loss has not fallen."""
        self.monitor.record(view, loss)
        if self.num_gaussians == 0:
            raise TrainingError(
                f"step {self.step}: every Gaussian was pruned, nothing is left to train (scene scale "
                f"{self.scene_scale:.3g}); stopped, {self.last_checkpoint_note()}. Likely causes: "
                f"{COLLAPSE_CAUSES}"
            )
        limit = self.config.monitor.max_gaussians
        if self.num_gaussians > limit:
            raise TrainingError(
                f"step {self.step}: {self.num_gaussians:,} Gaussians, more than monitor.max_gaussians "
                f"({limit:,}): the model has grown past the limit (scene scale {self.scene_scale:.3g}); "
                f"stopped, {self.last_checkpoint_note()} (resume with a higher monitor.max_gaussians to go "
                f"on). Likely causes: {EXPLOSION_CAUSES}"
            )
        ssim_weight = self.config.optim.ssim_lambda
        message = self.monitor.stall_message(
            self.step, lambda index: flat_image_loss(self.scene.train_views[index].image, ssim_weight)
        )
        if message is not None:
            self._warn(f"{message} (scene scale {self.scene_scale:.3g})")

    def _warn(self, message: str) -> None:
        """A warning printed above the progress bar and kept for metrics.json."""
        self.monitor.warnings.append(message)
        with tqdm.external_write_mode():
            warnings.warn(message, stacklevel=3)

    def _diverged(self, error: ValueError) -> Exception:
        """The TrainingError of a step whose render refused the Gaussians because they became non-finite
        (``error`` itself for any other ValueError)."""
        if _all_finite(self.params):
            return error
        return TrainingError(
            f"the Gaussian parameters became non-finite (NaN/Inf) at step {self.step + 1} ({error}; scene "
            f"scale {self.scene_scale:.3g}); stopped, {self.last_checkpoint_note()}. Likely causes: "
            f"{DIVERGENCE_CAUSES}"
        )

    def _review_views(self) -> dict:
        """At an evaluation: name the training views whose running loss is an outlier (warning about the
        ones not named before), leave them out with ``monitor.drop_outlier_views``; the metrics.json fields
        of the run's checks."""
        views = self.scene.train_views
        outliers, median, threshold = self.monitor.outlier_views()
        new = [view for view in outliers if view not in self.monitor.named_views]
        self.monitor.named_views += new
        dropped = self.monitor.drop(outliers) if self.config.monitor.drop_outlier_views else []
        if new:
            what = (
                f"left out of training from now on ({len(dropped)} of them)"
                if self.config.monitor.drop_outlier_views
                else "monitor.drop_outlier_views = true leaves them out"
            )
            examples = ", ".join(
                f"{views[view].name} ({self.monitor.view_losses[view]:.3g})" for view in new[:VIEW_EXAMPLES]
            )
            more = f" and {len(new) - VIEW_EXAMPLES} more" if len(new) > VIEW_EXAMPLES else ""
            self._warn(
                f"step {self.step}: {len(new)} training view{'s' if len(new) > 1 else ''} fit far worse "
                f"than the others (running loss above {threshold:.3g}, median {median:.3g}), likely "
                f"mis-registered (or lit differently: appearance.enabled): {examples}{more}; {what}"
            )
        return {
            "scene_check": self.scene.check.record(),
            "outlier_views": [
                {"name": views[view].name, "loss": self.monitor.view_losses[view]} for view in outliers
            ],
            "view_loss_median": median if math.isfinite(median) else None,
            "dropped_views": [views[view].name for view in self.monitor.dropped_views],
            "warnings": list(self.monitor.warnings),
        }

    def _restore_watching(self, checkpoint: dict) -> None:
        """The monitor's and appearance compensation's state from ``checkpoint`` (a checkpoint written before
        they existed has neither: the monitor starts afresh)."""
        monitor = checkpoint.get("monitor")
        if monitor is not None:
            if len(monitor["view_losses"]) != len(self.scene.train_views):
                raise TrainingError(
                    f"the checkpoint's run had {len(monitor['view_losses'])} training views, this scene has "
                    f"{len(self.scene.train_views)}: is this the same data, with the same data.* options?"
                )
            self.monitor.load_state_dict(monitor)
        if self.appearance is not None and self.appearance_optimizer is not None:
            if checkpoint.get("appearance") is None:
                raise TrainingError(
                    "the checkpoint was trained without appearance compensation; cannot resume with it"
                )
            self.appearance.load_state_dict(checkpoint["appearance"])
            _load_optimizer_state(self.appearance_optimizer, checkpoint["appearance_optimizer"])
