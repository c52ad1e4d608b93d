"""Training configuration: dataclass sections, TOML presets and ``--section.key value`` overrides.

The defaults below are gsplat's / Inria's. ``configs/*.toml`` holds presets that overlay them
(``configs/default.toml`` lists every option with its default, and a test keeps it in sync), and every
option can be overridden on the command line as ``--section.key value`` (``--strategy.default.absgrad
true``, ``--train.eval_steps 1000,7000``). A run saves the effective config as ``config.toml`` in its output
folder; ``--config that/config.toml`` replays it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..data import DataConfig
from ..io.paths import input_file_problem
from ..model import INIT_TYPES, MODEL_TYPES, ModelConfig
from ..rendering.limits import MAX_SH_DEGREE
from ..strategy import DefaultStrategy, MCMCStrategy
from .monitor import STALL_WINDOW
from .surfels import SurfelConfig

__all__ = [
    "AppearanceConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "PoseOptConfig",
    "StrategyConfig",
    "SurfelConfig",
    "TrainConfig",
    "PRESETS_DIR",
    "load_config",
    "apply_overrides",
    "config_to_toml",
    "config_from_dict",
    "preset_path",
    "OPTION_RULES",
    "MAX_CONFIG_BYTES",
]

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"
STRATEGIES = ("default", "mcmc")
MAX_CONFIG_BYTES = (
    1 << 20
)  # a config file is a few KB; the limit keeps a device or a huge file from being read


class ConfigError(ValueError):
    """A config file or override that names an unknown option or has a value of the wrong type; ``option``
    is the dotted name of the option at fault when one is."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@dataclass
class OptimConfig:
    means_lr: float = 1.6e-4  # times the scene scale, decayed exponentially to means_lr_final
    means_lr_final: float = 1.6e-6
    scales_lr: float = 5e-3
    quats_lr: float = 1e-3
    opacities_lr: float = 5e-2
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    adam_eps: float = 1e-15
    ssim_lambda: float = 0.2  # loss = (1 - l) L1 + l (1 - SSIM)
    opacity_reg: float = 0.0  # + opacity_reg * mean(opacity)  (MCMC uses 0.01)
    scale_reg: float = 0.0  # + scale_reg * mean(scale)  (MCMC uses 0.01)
    random_background: bool = False  # composite renders over a random colour each step
    # Adam updates only the Gaussians some camera of the step saw (gsplat's "visible Adam"); the others
    # keep their values and moments instead of drifting on momentum. Changes the results: off by default.
    visible_adam: bool = False


@dataclass
class StrategyConfig:
    name: str = "default"  # "default" (clone/split/prune/reset) or "mcmc" (relocation, 3DGS-as-MCMC)
    default: DefaultStrategy = field(default_factory=DefaultStrategy)
    mcmc: MCMCStrategy = field(default_factory=MCMCStrategy)


@dataclass
class PoseOptConfig:
    enabled: bool = False  # learn an SE(3) correction per training image
    lr: float = 1e-5
    reg: float = 1e-6  # weight decay on the corrections


@dataclass
class AppearanceConfig:
    enabled: bool = False  # learn a colour transform per training image (3x3 + bias), applied for the loss
    lr: float = 3e-3


@dataclass
class MonitorConfig:
    check_step: int = 500  # warn if the loss has not fallen meaningfully by this step (0: never)
    max_gaussians: int = 10_000_000  # stop when densification grows the model past this many
    drop_outlier_views: bool = False  # leave the training views named as not fitting out from then on


@dataclass
class TrainConfig:
    steps: int = 30_000
    seed: int = 42
    eval_every: int = 7_000  # also evaluates at the last step and at each of eval_steps
    eval_steps: list[int] = field(default_factory=list)
    save_every: int = 7_000  # checkpoint period; a checkpoint is always written at the end
    save_renders: bool = True  # test renders beside the ground truth at each evaluation
    output: str | None = None  # default: outputs/<scene>-<date>-<time>
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    batch_size: int = 1  # training views per step and process (training/distributed.py)
    device: str = (
        "auto"  # "cpu", "cuda" (or "cuda:N"), or "auto": the GPU when gsplat_py's CUDA kernels are built
    )


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    surfel: SurfelConfig = field(default_factory=SurfelConfig)  # the 2DGS losses (model.type = "2dgs")
    optim: OptimConfig = field(default_factory=OptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    pose_opt: PoseOptConfig = field(default_factory=PoseOptConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """ConfigError naming the first option whose value no run could use, checked before any long work:
        its type, a finite value for every number, and the option's rule in `OPTION_RULES`."""
        for name, value, tp in _options(self):
            try:
                _coerce(value, tp, name, from_text=False)  # the type, as a file or the command line sets it
            except ConfigError as error:
                raise ConfigError(str(error), option=name) from None
            rule = OPTION_RULES.get(name)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, float) and not math.isfinite(item):
                    raise ConfigError(f"{name}: expected a finite number, got {item!r}", option=name)
                if isinstance(item, int) and not isinstance(item, bool) and not -_INT64 <= item < _INT64:
                    raise ConfigError(f"{name}: expected a 64-bit integer, got {item!r}", option=name)
                if rule is not None and not rule.test(item):
                    raise ConfigError(f"{name}: expected {rule.expected}, got {item!r}", option=name)


_INT64 = 2**63


@dataclass(frozen=True)
class _Rule:
    """What an option's value must be: ``test`` passes a valid value, ``expected`` says what it is."""

    test: Callable[[Any], bool]
    expected: str


def _between(low: float | None = None, high: float | None = None, open_low=False, open_high=False) -> _Rule:
    """A number in the interval [low, high] (an end is excluded when open, absent when None)."""
    if low is not None and high is not None:
        expected = f"a value in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    elif low is not None:
        expected = f"a value {'>' if open_low else '>='} {low}"
    else:
        expected = "a number"

    def test(value) -> bool:
        above = low is None or (value > low if open_low else value >= low)
        below = high is None or (value < high if open_high else value <= high)
        return above and below

    return _Rule(test, expected)


def _one_of(choices: tuple[str, ...], why: str = "") -> _Rule:
    return _Rule(lambda value: value in choices, f"one of {', '.join(map(repr, choices))}{why}")


_PATH = _Rule(lambda value: value is None or value != "", "a path (not empty)")
_DEVICE = _Rule(
    lambda value: value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()),
    "'auto', 'cpu', 'cuda' or 'cuda:N'",
)
_PERIOD = _between(1)  # a period in steps: 0 would divide by zero once it is used
_STEP = _between(0)
_NON_NEGATIVE = _between(0.0)
_POSITIVE = _between(0.0, open_low=True)
_FRACTION = _between(0.0, 1.0, open_high=True)
# torch.multinomial, which MCMC relocation and growth sample with, draws from at most 2^24 categories.
MAX_GAUSSIANS = 1 << 24

# The rule of every option that is not a bool (a test keeps this table complete), beyond its type: a value
# a run cannot use (a zero period, a NaN rate, an unknown name) is an error before the run starts, not a
# division by zero or a silently ignored setting at step 500.
OPTION_RULES: dict[str, _Rule] = {
    "data.path": _PATH,
    "data.data_factor": _between(1),
    "data.test_every": _between(),  # <= 0 holds out no view
    "data.cache_dir": _PATH,
    "model.type": _one_of(MODEL_TYPES),
    "model.init": _one_of(INIT_TYPES),
    "model.sh_degree": _between(0, MAX_SH_DEGREE),
    "model.sh_degree_interval": _PERIOD,
    "model.init_opacity": _between(0.0, 1.0, open_low=True, open_high=True),
    "model.init_scale": _POSITIVE,
    "model.random_init_count": _between(1, MAX_GAUSSIANS),
    "model.random_init_extent": _POSITIVE,
    "surfel.normal_lambda": _NON_NEGATIVE,
    "surfel.normal_start_iter": _STEP,
    "surfel.dist_lambda": _NON_NEGATIVE,
    "surfel.dist_start_iter": _STEP,
    **{f"optim.{name}_lr": _NON_NEGATIVE for name in ("means", "scales", "quats", "opacities", "sh0", "shN")},
    "optim.means_lr_final": _NON_NEGATIVE,
    "optim.adam_eps": _POSITIVE,
    "optim.ssim_lambda": _between(0.0, 1.0),
    "optim.opacity_reg": _NON_NEGATIVE,
    "optim.scale_reg": _NON_NEGATIVE,
    "strategy.name": _one_of(STRATEGIES),
    "strategy.default.prune_opa": _FRACTION,
    "strategy.default.grow_grad2d": _NON_NEGATIVE,
    "strategy.default.grow_scale3d": _NON_NEGATIVE,
    "strategy.default.grow_scale2d": _NON_NEGATIVE,
    "strategy.default.prune_scale3d": _POSITIVE,
    "strategy.default.prune_scale2d": _POSITIVE,
    "strategy.default.refine_scale2d_stop_iter": _STEP,
    "strategy.default.refine_start_iter": _STEP,
    "strategy.default.refine_stop_iter": _STEP,
    "strategy.default.reset_every": _PERIOD,
    "strategy.default.refine_every": _PERIOD,
    "strategy.default.pause_refine_after_reset": _STEP,
    "strategy.default.key_for_gradient": _one_of(
        ("means2d",), " (the one gradient rasterization's meta holds)"
    ),
    "strategy.mcmc.cap_max": _between(1, MAX_GAUSSIANS),
    "strategy.mcmc.noise_lr": _NON_NEGATIVE,
    "strategy.mcmc.refine_start_iter": _STEP,
    "strategy.mcmc.refine_stop_iter": _STEP,
    "strategy.mcmc.refine_every": _PERIOD,
    "strategy.mcmc.min_opacity": _FRACTION,
    "pose_opt.lr": _NON_NEGATIVE,
    "pose_opt.reg": _NON_NEGATIVE,
    "appearance.lr": _NON_NEGATIVE,
    "monitor.check_step": _Rule(
        lambda value: value == 0 or value >= 2 * STALL_WINDOW,
        f"0 (no check) or a step >= {2 * STALL_WINDOW} (the loss is averaged over {STALL_WINDOW} steps)",
    ),
    "monitor.max_gaussians": _between(1),
    "train.steps": _between(1),
    "train.seed": _between(0),
    "train.eval_every": _between(0),  # 0: only at the end
    "train.eval_steps": _between(1),
    "train.save_every": _between(0),  # 0: only at the end
    "train.output": _PATH,
    "train.threads": _between(0, 4096),  # 0 keeps torch's default
    "train.batch_size": _between(1, 4096),
    "train.device": _DEVICE,
}


def _options(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted name, value, type) of every option under the dataclass ``obj``."""
    for name, tp in _field_types(type(obj)).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            yield from _options(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value, tp


# --------------------------------------------------------------------------------------------------
# dict / TOML conversion with type checking
# --------------------------------------------------------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, where: str, from_text: bool) -> Any:
    """``value`` as type ``tp``; strings from the command line are parsed, file values only checked."""
    optional, tp = _is_optional(tp)
    if optional and (
        value is None or (from_text and isinstance(value, str) and value.lower() in ("none", "null"))
    ):
        return None
    if typing.get_origin(tp) is list:
        (item_type,) = typing.get_args(tp)
        if from_text and isinstance(value, str):
            value = [v for v in (part.strip() for part in value.split(",")) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_type, where, from_text) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if (
            from_text
            and isinstance(value, str)
            and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off")
        ):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: options of type {tp} cannot be set from a file or the command line")


def _update(obj: Any, values: dict, where: str, from_text: bool) -> None:
    types_by_name = _field_types(type(obj))
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in types_by_name:
            known = ", ".join(types_by_name)
            raise ConfigError(f"unknown option {path!r} (options{' of ' + where if where else ''}: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a section (table), got {value!r}")
            _update(current, value, path, from_text)
        else:
            setattr(obj, key, _coerce(value, types_by_name[key], path, from_text))


def _update_file(config: Config, values: dict, source: str) -> None:
    try:
        _update(config, values, "", from_text=False)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def config_from_dict(values: dict) -> Config:
    """The defaults updated with the nested ``values`` (as ``dataclasses.asdict`` writes them)."""
    config = Config()
    _update(config, values, "", from_text=False)
    return config


def _deep_copy(config: Config) -> Config:
    return config_from_dict(dataclasses.asdict(config))


def preset_path(name_or_path: str) -> Path:
    """A preset name (``default``, ``mcmc``, ``fast``: ``configs/NAME.toml``) or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        candidate = PRESETS_DIR / f"{name_or_path}.toml"
        if candidate.exists():
            return candidate
        names = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
        raise ConfigError(
            f"{name_or_path}: no such file and no preset of that name (presets: {', '.join(names)})"
        )
    return path


def load_config(name_or_path: str | None = None, base: Config | None = None) -> Config:
    """The defaults (or ``base``) overlaid with a TOML preset or file."""
    config = _deep_copy(base) if base is not None else Config()
    if name_or_path is None:
        return config
    path = preset_path(name_or_path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    problem = input_file_problem(path, MAX_CONFIG_BYTES)
    if problem is not None:
        raise ConfigError(f"{path}: cannot read the config file: {problem}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a TOML file: not UTF-8 text (byte {error.start})") from None
    try:
        values = tomllib.loads(text)
    except (ValueError, RecursionError) as error:  # TOMLDecodeError, an integer too long to convert, ...
        raise ConfigError(f"{path}: not a readable TOML file ({error})") from None
    _update_file(config, values, str(path))
    return config


def apply_overrides(config: Config, overrides: dict[str, str]) -> Config:
    """``config`` with dotted-key overrides from the command line (``{"optim.means_lr": "1e-4"}``)."""
    config = _deep_copy(config)
    for dotted, text in overrides.items():
        *sections, key = dotted.split(".")
        target: Any = config
        where = ""
        for section in sections:
            if (
                not dataclasses.is_dataclass(target)
                or not hasattr(target, section)
                or not dataclasses.is_dataclass(getattr(target, section))
            ):
                raise ConfigError(
                    f"unknown option --{dotted} (no section {section!r}{' in ' + where if where else ''})"
                )
            target = getattr(target, section)
            where = f"{where}.{section}" if where else section
        try:
            _update(target, {key: text}, where, from_text=True)
        except ConfigError as error:
            raise ConfigError(f"--{dotted}: {error}") from None
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _toml_lines(values: dict, prefix: str) -> list[str]:
    scalars = [(k, v) for k, v in values.items() if not isinstance(v, dict) and v is not None]
    tables = [(k, v) for k, v in values.items() if isinstance(v, dict)]
    lines = [f"[{prefix}]"] if prefix and scalars else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars]
    for key, table in tables:
        sub = _toml_lines(table, f"{prefix}.{key}" if prefix else key)
        if sub:
            lines += [""] + sub
    return lines


def config_to_toml(config: Config) -> str:
    """The config as TOML that :func:`load_config` reads back to an equal config (``None`` values are
    omitted: they are the defaults of the options that have them)."""
    return "\n".join(_toml_lines(dataclasses.asdict(config), "")).lstrip("\n") + "\n"
