"""Bad training configs, generated here: every option with NaN, inf, zero, negative and huge values, wrong
types and unknown names, and TOML files that are not UTF-8, nest 100,000 deep, hold 5,000-digit numbers, are
pipes or huge, or are damaged. Each is a ConfigError naming the file and the option, raised before a run
starts; through `gsplat-py train` a one-line error with exit status 1 that creates no output folder."""

import math

import pytest
from bad_input import DAMAGE, GENERATED, assert_names, cli_error, damaged, fifo, fresh_folder, time_limit
from hypothesis import given
from hypothesis import strategies as st

from gsplat_py.training import config as config_module
from gsplat_py.training.config import (
    MAX_CONFIG_BYTES,
    OPTION_RULES,
    PRESETS_DIR,
    Config,
    ConfigError,
    apply_overrides,
    load_config,
)


def options() -> dict[str, type]:
    """Every option of the config (dotted name -> the type of its default)."""
    return {name: type(value) for name, value, _ in config_module._options(Config())}


def test_every_option_that_is_not_a_bool_has_a_rule():
    # a new option gets checked by the same code: this fails until it has a rule in OPTION_RULES
    expected = {name for name, kind in options().items() if kind is not bool}
    assert set(OPTION_RULES) == expected


def test_the_defaults_and_presets_pass():
    for preset in sorted(PRESETS_DIR.glob("*.toml")):
        load_config(str(preset)).validate()


# Values a run cannot use, from the cases and beyond (option, value, fragment of the message).
BAD_VALUES = [
    ("strategy.default.reset_every", 0, "expected a value >= 1"),
    ("strategy.default.refine_every", 0, "expected a value >= 1"),
    ("strategy.mcmc.refine_every", -5, "expected a value >= 1"),
    ("model.sh_degree_interval", 0, "expected a value >= 1"),
    ("strategy.default.key_for_gradient", "bogus", "'means2d'"),
    ("strategy.mcmc.cap_max", 0, "expected a value in [1, 16777216]"),
    ("strategy.mcmc.cap_max", 2**25, "expected a value in [1, 16777216]"),
    ("optim.opacity_reg", math.nan, "expected a finite number"),
    ("optim.adam_eps", math.nan, "expected a finite number"),
    ("optim.adam_eps", 0.0, "expected a value > 0.0"),
    ("optim.scales_lr", math.inf, "expected a finite number"),
    ("optim.means_lr", -1e-4, "expected a value >= 0.0"),
    ("train.seed", 2**70, "64-bit integer"),
    ("train.seed", -1, "expected a value >= 0"),
    ("train.eval_steps", [1000, 0], "expected a value >= 1"),
    ("train.threads", 10**6, "expected a value in [0, 4096]"),
    ("train.device", "gpu", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("model.init_opacity", 1.0, "expected a value in (0.0, 1.0)"),
    ("model.random_init_count", 10**9, "expected a value in [1, 16777216]"),
    ("data.path", "", "a path"),
    ("strategy.default.prune_opa", 1.0, "expected a value in [0.0, 1.0)"),
    ("train.steps", "ten", "expected an integer"),
    ("optim.ssim_lambda", True, "expected a number"),
    ("model.type", "3DGS", "expected one of '3dgs', '2dgs'"),
    ("surfel.normal_lambda", -0.05, "expected a value >= 0.0"),
    ("surfel.dist_start_iter", -1, "expected a value >= 0"),
]


def config_with(option: str, value) -> Config:
    config = Config()
    *sections, key = option.split(".")
    target = config
    for section in sections:
        target = getattr(target, section)
    setattr(target, key, value)
    return config


@pytest.mark.parametrize("option, value, fragment", BAD_VALUES)
def test_a_value_no_run_can_use_is_an_error_naming_the_option(option, value, fragment):
    with pytest.raises(ConfigError) as info:
        config_with(option, value).validate()
    assert str(info.value).startswith(f"{option}: ") and fragment in str(info.value), str(info.value)
    assert info.value.option == option


def test_without_its_rule_a_zero_period_would_pass(monkeypatch):
    # the rule, not some other check, is what refuses the zero period (which divides by zero at step 500)
    monkeypatch.setitem(OPTION_RULES, "strategy.default.reset_every", config_module._between())
    config_with("strategy.default.reset_every", 0).validate()


CANDIDATES = [math.nan, math.inf, -math.inf, -1e300, -1, 0, 0.5, 1, 3, 1e300, 2**63, -(2**63) - 1, "", "x"]


@GENERATED
@given(option=st.sampled_from(sorted(OPTION_RULES)), value=st.sampled_from(CANDIDATES))
def test_any_value_of_any_option_validates_or_is_an_error_naming_it(option, value):
    try:
        apply_overrides(Config(), {option: str(value)}).validate()
    except ConfigError as error:
        assert option in str(error) and "\n" not in str(error), str(error)


# TOML files (contents, fragment of the message)
BAD_TOML = {
    "not UTF-8": (b"[train]\nsteps = 10 # \xff\xfe\n", "not UTF-8"),
    "nested 100,000 deep": (b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "not a readable TOML file"),
    "a 5,000-digit number": (b"[train]\nsteps = " + b"7" * 5000 + b"\n", "not a readable TOML file"),
    "not TOML": (b"{'train': {'steps': 10}}\n", "not a readable TOML file"),
    "unknown option": (b"[train]\nstepz = 10\n", "unknown option 'train.stepz'"),
    "wrong type": (b"[optim]\nmeans_lr = 'fast'\n", "optim.means_lr: expected a number"),
    "a table for a value": (b"[train.steps]\nx = 1\n", "train.steps"),
}


@pytest.mark.parametrize("case", list(BAD_TOML))
def test_a_bad_config_file_is_an_error_naming_it(tmp_path, case):
    data, fragment = BAD_TOML[case]
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    with time_limit(), pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert_names(str(info.value), str(path), fragment)
    assert "\n" not in str(info.value)


def test_a_pipe_or_a_huge_config_file_is_not_read(tmp_path):
    with time_limit(), pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(fifo(tmp_path / "pipe.toml")))
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as file:
        file.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(ConfigError, match="more than the"):
        load_config(str(huge))


DEFAULT_TOML = (PRESETS_DIR / "default.toml").read_bytes()


@GENERATED
@given(**DAMAGE)
def test_a_damaged_config_file_loads_a_valid_config_or_is_an_error_naming_it(tmp_path, position, bit, cut):
    path = fresh_folder(tmp_path) / "damaged.toml"
    path.write_bytes(damaged(DEFAULT_TOML, position, bit, cut))
    try:
        load_config(str(path)).validate()
    except ConfigError as error:
        assert "\n" not in str(error) and (str(path) in str(error) or error.option is not None), str(error)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--strategy.default.reset_every", "0"], ["strategy.default.reset_every: expected a value >= 1"]),
        (["--strategy.default.refine_every", "0"], ["strategy.default.refine_every"]),
        (["--strategy.default.key_for_gradient", "bogus"], ["key_for_gradient", "'means2d'"]),
        (["--strategy", "mcmc", "--strategy.mcmc.cap_max", "0"], ["strategy.mcmc.cap_max"]),
        (["--optim.opacity_reg", "nan"], ["optim.opacity_reg: expected a finite number"]),
        (["--optim.adam_eps", "nan"], ["optim.adam_eps"]),
        (["--seed", str(10**30)], ["--seed: train.seed: expected a 64-bit integer"]),
        (["--data-factor", "0"], ["--data-factor: data.data_factor"]),
        (["--device", "tpu"], ["--device: train.device"]),
        (["--train.eval_steps", "100,-1"], ["train.eval_steps"]),
    ],
)
def test_train_with_a_bad_option_is_a_one_line_error_that_creates_no_output(
    tmp_path, capsys, args, fragments
):
    output = tmp_path / "run"
    message = cli_error(capsys, "train", "--steps", "2", "--output", output, "--quiet", *args)
    assert_names(message, *fragments)
    assert not output.exists()


def test_train_with_a_bad_config_file_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_bytes(BAD_TOML["not UTF-8"][0])
    message = cli_error(capsys, "train", "--config", path, "--output", tmp_path / "run", "--quiet")
    assert_names(message, str(path), "not UTF-8")
    assert not (tmp_path / "run").exists()
