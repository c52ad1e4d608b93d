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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..data import DataConfig
from ..model import INIT_TYPES, ModelConfig
from ..rendering.limits import MAX_SH_DEGREE
from ..strategy import DefaultStrategy, MCMCStrategy

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PoseOptConfig",
    "StrategyConfig",
    "TrainConfig",
    "PRESETS_DIR",
    "load_config",
    "apply_overrides",
    "config_to_toml",
    "config_from_dict",
    "preset_path",
]

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"
STRATEGIES = ("default", "mcmc")


class ConfigError(ValueError):
    """A config file or override that names an unknown option or has a value of the wrong type."""


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
class TrainConfig:
    steps: int = 30_000
    seed: int = 42
    eval_every: int = 7_000  # also evaluates at the last step and at each of eval_steps
    eval_steps: list[int] = field(default_factory=list)
    save_every: int = 7_000  # checkpoint period; a checkpoint is always written at the end
    save_renders: bool = True  # test renders beside the ground truth at each evaluation
    output: str | None = None  # default: outputs/<scene>-<date>-<time>
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    device: str = (
        "auto"  # "cpu", "cuda" (or "cuda:N"), or "auto": the GPU when gsplat_py's CUDA kernels are built
    )


def _valid_device(device: str) -> bool:
    return device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    pose_opt: PoseOptConfig = field(default_factory=PoseOptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """ConfigError for values no run could use (checked before any long work)."""
        checks = [
            (self.data.data_factor >= 1, "data.data_factor", "an int >= 1", self.data.data_factor),
            (self.model.init in INIT_TYPES, "model.init", f"one of {INIT_TYPES}", self.model.init),
            (
                0 <= self.model.sh_degree <= MAX_SH_DEGREE,
                "model.sh_degree",
                f"0..{MAX_SH_DEGREE}",
                self.model.sh_degree,
            ),
            (
                self.model.sh_degree_interval >= 1,
                "model.sh_degree_interval",
                "an int >= 1",
                self.model.sh_degree_interval,
            ),
            (
                0.0 < self.model.init_opacity < 1.0,
                "model.init_opacity",
                "a value in (0, 1)",
                self.model.init_opacity,
            ),
            (self.model.init_scale > 0.0, "model.init_scale", "a value > 0", self.model.init_scale),
            (
                self.model.random_init_count >= 1,
                "model.random_init_count",
                "an int >= 1",
                self.model.random_init_count,
            ),
            (self.strategy.name in STRATEGIES, "strategy.name", f"one of {STRATEGIES}", self.strategy.name),
            (self.train.steps >= 1, "train.steps", "an int >= 1", self.train.steps),
            (
                self.train.eval_every >= 0,
                "train.eval_every",
                "an int >= 0 (0: only at the end)",
                self.train.eval_every,
            ),
            (
                self.train.save_every >= 0,
                "train.save_every",
                "an int >= 0 (0: only at the end)",
                self.train.save_every,
            ),
            (self.train.threads >= 0, "train.threads", "an int >= 0", self.train.threads),
            (
                _valid_device(self.train.device),
                "train.device",
                "'auto', 'cpu', 'cuda' or 'cuda:N'",
                self.train.device,
            ),
            (
                0.0 <= self.optim.ssim_lambda <= 1.0,
                "optim.ssim_lambda",
                "a value in [0, 1]",
                self.optim.ssim_lambda,
            ),
        ]
        for name in (
            "means_lr",
            "means_lr_final",
            "scales_lr",
            "quats_lr",
            "opacities_lr",
            "sh0_lr",
            "shN_lr",
        ):
            value = getattr(self.optim, name)
            checks.append(
                (value >= 0.0 and math.isfinite(value), f"optim.{name}", "a finite value >= 0", value)
            )
        for ok, name, expected, value in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {value!r}")


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
    try:
        with open(path, "rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
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
