"""Bad checkpoints, generated here from a real one: each field missing or of the wrong type, parameters of
the wrong shape or with NaN, mismatched optimiser moments, a config with an unknown option, pickled Python
objects (not loaded: weights-only), truncations and bit flips, pipes. Each is a TrainingError naming the
file and the field; through `eval`, `render` and `train --resume` a one-line error that writes nothing.
And a resume with new learning rates applies them and says so."""

import copy
import pathlib
import shutil
import warnings

import pytest
import torch
from bad_input import (
    DAMAGE,
    GENERATED,
    assert_names,
    cli_error,
    damaged,
    fifo,
    fresh_folder,
    snapshot,
    time_limit,
)
from hypothesis import given
from render_helpers import write_ring_scene

from gsplat_py.cli import main as cli_main
from gsplat_py.training.checkpoint import _FIELDS, TrainingError, checkpoint_problem, load_checkpoint

STEPS = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    write_ring_scene(root / "scene")
    args = ["train", "--data", str(root / "scene"), "--data-factor", "1", "--steps", str(STEPS), "--quiet"]
    args += ["--output", str(root / "run"), "--eval-every", "0", "--train.save_renders", "false"]
    assert cli_main(args) == 0
    return root / "run"


@pytest.fixture(scope="module")
def checkpoint(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)


def changed(checkpoint: dict, change) -> dict:
    damaged = copy.deepcopy(checkpoint)
    change(damaged)
    return damaged


def test_the_real_checkpoint_passes(checkpoint):
    assert checkpoint_problem(checkpoint) is None


@pytest.mark.parametrize("field", list(_FIELDS))
def test_a_missing_field_is_named(tmp_path, checkpoint, field):
    path = tmp_path / "checkpoint.pt"
    torch.save(changed(checkpoint, lambda c: c.pop(field)), path)
    with pytest.raises(TrainingError) as info:
        load_checkpoint(path)
    assert_names(str(info.value), str(path), f"no field {field!r}")


def set_item(path: str, value):
    def change(checkpoint):
        *parents, key = path.split(".")
        target = checkpoint
        for parent in parents:
            target = target[parent]
        target[key] = value(target[key]) if callable(value) else value

    return change


BAD_CONTENTS = {
    "step as text": (set_item("step", "7"), "step is a str"),
    "negative step": (set_item("step", -3), "expected a step >= 0"),
    "no params": (set_item("params", {}), "params has []"),
    "means of the wrong shape": (set_item("params.means", lambda t: t[:, :2]), "params.means has shape"),
    "one Gaussian short": (set_item("params.quats", lambda t: t[1:]), "params.quats has shape"),
    "NaN opacity": (set_item("params.opacities", lambda t: t * float("nan")), "params.opacities"),
    "integer scales": (set_item("params.scales", lambda t: t.long()), "params.scales"),
    "wrong SH count": (set_item("params.shN", lambda t: t[:, :2]), "params.shN has shape"),
    "moments of another shape": (
        set_item("optimizers.means.state", lambda s: {0: {**s[0], "exp_avg": torch.zeros(1, 3)}}),
        "optimizers.means: exp_avg does not match params.means",
    ),
    "no optimiser": (
        set_item("optimizers", lambda o: {k: v for k, v in o.items() if k != "sh0"}),
        "optimizers",
    ),
    "transform not 4x4": (set_item("transform", torch.eye(3)), "transform"),
    "unknown config option": (
        set_item("config.train", lambda t: {**t, "bogus": 1}),
        "config: unknown option",
    ),
    "config of the wrong type": (set_item("config.train.steps", "many"), "config: train.steps"),
    "format 2": (set_item("format", 2), "format is 2"),
    "random state of floats": (set_item("torch_rng", torch.zeros(3)), "torch_rng"),
}


@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_a_bad_field_is_an_error_naming_the_file_and_field(tmp_path, checkpoint, case):
    change, fragment = BAD_CONTENTS[case]
    path = tmp_path / "checkpoint.pt"
    torch.save(changed(checkpoint, change), path)
    with pytest.raises(TrainingError) as info:
        load_checkpoint(path)
    assert_names(str(info.value), str(path), fragment)
    assert "\n" not in str(info.value)


def test_python_objects_are_not_loaded(tmp_path, checkpoint):
    path = tmp_path / "checkpoint.pt"
    torch.save({**checkpoint, "extra": pathlib.PurePosixPath("/etc")}, path)
    with pytest.raises(TrainingError) as info:
        load_checkpoint(path)
    assert_names(str(info.value), str(path), "Python objects other than tensors", "gsplat-py train")
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_a_file_that_is_no_checkpoint_is_named(tmp_path, run):
    for name, data in (("empty.pt", b""), ("text.pt", b"not a zip\n" * 10), ("ply.pt", None)):
        path = tmp_path / name
        path.write_bytes(data if data is not None else (run / "point_cloud.ply").read_bytes())
        with pytest.raises(TrainingError) as info:
            load_checkpoint(path)
        assert_names(str(info.value), str(path), "not a readable checkpoint")
        assert "\n" not in str(info.value)
    with time_limit(), pytest.raises(TrainingError, match="not a regular file"):
        load_checkpoint(fifo(tmp_path / "pipe.pt"))


@GENERATED
@given(**DAMAGE)
def test_a_damaged_checkpoint_loads_whole_or_is_an_error_naming_it(tmp_path, run, position, bit, cut):
    path = fresh_folder(tmp_path) / "checkpoint.pt"
    path.write_bytes(damaged((run / "checkpoint.pt").read_bytes(), position, bit, cut))
    with time_limit():
        try:
            loaded = load_checkpoint(path)
        except TrainingError as error:
            assert str(path) in str(error) and "\n" not in str(error), str(error)
            return
    assert checkpoint_problem(loaded) is None


@pytest.mark.parametrize("command", ["eval", "render", "resume"])
def test_commands_on_a_bad_checkpoint_are_one_line_errors_that_write_nothing(
    tmp_path, run, checkpoint, capsys, command
):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    torch.save(changed(checkpoint, set_item("params", {})), folder / "checkpoint.pt")
    before = snapshot(folder)
    args = {
        "eval": ["eval", "--model", folder],
        "render": ["render", "--model", folder / "checkpoint.pt", "--path", "ellipse", "--quiet"],
        "resume": ["train", "--resume", folder, "--steps", str(STEPS + 2), "--quiet"],
    }[command]
    assert_names(cli_error(capsys, *args), str(folder / "checkpoint.pt"), "params has []")
    assert snapshot(folder) == before


def test_resume_applies_new_learning_rates_and_says_so(tmp_path, run, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    old = load_checkpoint(folder)["optimizers"]["scales"]["param_groups"][0]["lr"]
    args = ["train", "--resume", str(folder), "--steps", str(STEPS + 2), "--quiet"]
    args += ["--optim.scales_lr", str(old * 3), "--pose_opt.lr", "2e-5"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli_main(args) == 0
    said = [str(w.message) for w in caught if "resuming with new optimiser settings" in str(w.message)]
    assert len(said) == 1 and f"optim.scales_lr {old!r} -> {old * 3!r}" in said[0], said
    assert "pose_opt" not in said[0]  # no pose optimiser in this run: nothing to apply it to
    resumed = load_checkpoint(folder)
    assert resumed["step"] == STEPS + 2
    assert resumed["optimizers"]["scales"]["param_groups"][0]["lr"] == old * 3
    assert resumed["config"]["optim"]["scales_lr"] == old * 3
    # the other optimisers keep theirs, and the moments were restored, not reset
    assert resumed["optimizers"]["quats"]["param_groups"][0]["lr"] == resumed["config"]["optim"]["quats_lr"]
    assert int(resumed["optimizers"]["scales"]["state"][0]["step"]) == STEPS + 2
