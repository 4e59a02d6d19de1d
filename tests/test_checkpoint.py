"""Checkpoints: exact resume, SIGTERM, another device count, divergence, and bad checkpoints."""

import hashlib
import json
import os
import pathlib
import signal

import jax
import numpy as np
import pytest
from conftest import QUIET, python_json, small_digits, train_cli
from flax import nnx

from jaxcnn import checkpoint, models
from jaxcnn.config import default_config
from jaxcnn.errors import UserError
from jaxcnn.train import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_cnn(num_classes=10, width=8):
    return models.CNN(num_classes, width=width, hidden=64, rngs=nnx.Rngs(0))


def config(epochs=4):
    c = default_config()
    c.data.name = "digits"
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = epochs, 32, 100  # 8 steps
    c.data.crop_padding, c.data.flip = 2, True
    c.checkpoint.keep = 2
    return c


def leaves(model):
    return jax.tree.leaves(nnx.state(model))


def snapshot(directory: pathlib.Path) -> dict:
    """Every file under `directory` with its content hash."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


KEYS = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


def test_straight_and_resumed_runs_are_bit_identical(tmp_path):
    data = small_digits()
    straight = train_and_evaluate(config(), str(tmp_path / "a"), dataset=data, model=small_cnn(),
                                  **QUIET)
    # Stopped at an epoch boundary (2 + 2) and in the middle of an epoch (13 = 8 + 5).
    for stop in (16, 13):
        wd = tmp_path / f"stop{stop}"
        first = train_and_evaluate(config(), str(wd), dataset=data, model=small_cnn(),
                                   stop_at_step=stop, **QUIET)
        assert first.stopped == "stop_at_step" and len(first.history) == stop // 8
        assert checkpoint.latest_step(str(wd / "checkpoints")) == stop
        resumed = train_and_evaluate(config(), str(wd), dataset=data, model=small_cnn(),
                                     **QUIET)
        for a, b in zip(leaves(straight.model), leaves(resumed.model), strict=True):
            np.testing.assert_array_equal(a, b)
        # the partial epoch's metric sums were saved too: every row is the straight run's
        assert [[r[k] for k in KEYS] for r in resumed.history] == \
            [[r[k] for k in KEYS] for r in straight.history]
        rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # keep=2: the latest two, plus the best by test accuracy
    steps = sorted(int(s) for s in os.listdir(tmp_path / "a" / "checkpoints"))
    best = 8 * max(range(1, 5), key=lambda e: (straight.history[e - 1]["test_accuracy"], -e))
    assert steps == sorted({24, 32, best})
    # a finished run rerun: nothing to train, the same result
    again = train_and_evaluate(config(), str(tmp_path / "a"), dataset=data, model=small_cnn(),
                               **QUIET)
    assert again.history == straight.history


def _train_cli(workdir, *args):
    return train_cli("--config", "configs/digits_cnn.py", "--workdir", workdir, "--noprogress",
                     "--noplots", "--config.train.epochs=2", "--config.data.train_per_class=20",
                     "--config.train.batch_size=40", *args, devices=1)


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_the_rerun_finishes_as_if_uninterrupted(tmp_path):
    # 200 images, 5 steps per epoch; one step per call, since signals are seen between calls
    p = _train_cli(tmp_path / "x", "--config.train.steps_per_call=1")
    out = []
    for line in p.stdout:
        out.append(line)
        if line.startswith("epoch 1/2"):
            p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 128 + signal.SIGTERM, p.stderr.read()[-2000:]
    stop = [x for x in out if x.startswith("stopped by SIGTERM after step ")]
    assert stop and "rerun the same command to resume" in stop[0], out
    step = int(stop[0].split("after step ")[1].split(":")[0])
    assert 5 < step < 10  # mid-epoch 2
    assert checkpoint.latest_step(str(tmp_path / "x" / "checkpoints")) == step
    assert not any(x.startswith("final ") for x in out)
    procs = [_train_cli(tmp_path / "x"), _train_cli(tmp_path / "straight")]
    outs = [q.communicate(timeout=180) for q in procs]
    for q, (o, e) in zip(procs, outs, strict=True):
        assert q.returncode == 0, e[-2000:]
        assert o.strip().splitlines()[-1].startswith("final test_accuracy=")
    assert f"resuming from {tmp_path / 'x' / 'checkpoints'}/{step}" in outs[0][0]
    rows = [[[r[k] for k in KEYS] for r in map(json.loads, (tmp_path / w / "metrics.jsonl")
                                                .read_text().splitlines())]
            for w in ("x", "straight")]
    assert rows[0] == rows[1] and len(rows[0]) == 2
    a, _ = checkpoint.load_arrays(str(tmp_path / "x"))
    b, _ = checkpoint.load_arrays(str(tmp_path / "straight"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# Runs with 8 forced CPU devices: save there, restore on one device (and the other way round).
_TOPOLOGY = """
    import json, sys, jax, numpy as np
    from flax import nnx
    sys.path.insert(0, "tests")
    from conftest import QUIET, small_digits
    from test_checkpoint import config, small_cnn, leaves
    from jaxcnn.train import train_and_evaluate
    wd, phase = sys.argv[1], sys.argv[2]
    data, c = small_digits(), config(epochs=2)
    c.optim.name, c.optim.learning_rate = "sgd", 0.05  # see test_parallel: rounding stays small
    out = {"devices": len(jax.devices())}
    def run(name, devices, **kw):
        r = train_and_evaluate(c, f"{wd}/{name}", devices=devices, dataset=data,
                               model=small_cnn(), **QUIET, **kw)
        np.savez(f"{wd}/{name}.npz", *leaves(r.model))
    if phase == "save":
        run("straight8", "all")
        run("moved", "all", stop_at_step=12)  # saved on 8, resumed on 1 below
        run("back", "1", stop_at_step=12)  # saved on 1 ...
        run("back", "all")  # ... resumed on 8
        run("stay", "all", stop_at_step=12)
        run("stay", "all")
    else:
        run("moved", "all")
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_checkpoint_moves_between_eight_devices_and_one(tmp_path):
    assert python_json(_TOPOLOGY, 8, tmp_path, "save")["devices"] == 8
    assert python_json(_TOPOLOGY, 1, tmp_path, "resume")["devices"] == 1
    runs = {n: list(np.load(tmp_path / f"{n}.npz").values())
            for n in ("straight8", "moved", "back", "stay")}
    for a, b in zip(runs["straight8"], runs["stay"], strict=True):
        np.testing.assert_array_equal(a, b)  # resumed on the same 8 devices: bit-identical
    for name in ("moved", "back"):
        # Moving changes only the order of the batch reductions in the steps after (or before)
        # the move; fp32 SGD: ~1e-6, as 1 vs 8 devices in test_parallel.
        for a, b in zip(runs["straight8"], runs[name], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    data = small_digits()
    c = config(epochs=1)
    c.optim.name, c.optim.learning_rate = "sgd", 0.05
    train_and_evaluate(c, str(tmp_path), dataset=data, model=small_cnn(), **QUIET)
    before = snapshot(tmp_path / "checkpoints")
    c.train.epochs = 3  # the rerun resumes the same run with a network that overflows
    with pytest.raises(UserError, match=r"not finite at step 9 \(epoch 2\).*"
                       r"last good checkpoint, .*/checkpoints/8, is where a rerun resumes"):
        train_and_evaluate(c, str(tmp_path), dataset=data, model=_Overflowing(), **QUIET)
    assert snapshot(tmp_path / "checkpoints") == before


class _Overflowing(models.CNN):
    """`small_cnn` (the same parameters) with logits too large for float32 from the start."""

    def __init__(self):
        super().__init__(10, width=8, hidden=64, rngs=nnx.Rngs(0))

    def __call__(self, x, train=False):
        return super().__call__(x, train=train) * 1e38


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch run: checkpoints at steps 8 and 16."""
    wd = tmp_path_factory.mktemp("trained")
    train_and_evaluate(config(epochs=2), str(wd), dataset=small_digits(), model=small_cnn(),
                       **QUIET)
    return wd


def _break(wd: pathlib.Path, how: str) -> pathlib.Path:
    latest = wd / "checkpoints" / "16"
    if how == "corrupt":
        (latest / "state" / "_METADATA").write_text("{ not json")
    elif how == "truncated":
        for f in (latest / "state").rglob("*"):
            if f.is_file() and f.parent.name == "d":  # the array data files
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return latest


@pytest.mark.parametrize("how", ["corrupt", "truncated"])
def test_a_broken_latest_checkpoint_is_refused_and_nothing_is_deleted(trained, tmp_path, how):
    import shutil
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    latest = _break(wd, how)
    before = snapshot(wd)
    with pytest.raises(UserError, match=f"checkpoint {latest} cannot be read, it is corrupt or "
                                        "truncated .*move it aside"):
        train_and_evaluate(config(epochs=3), str(wd), dataset=small_digits(), model=small_cnn(),
                           **QUIET)
    assert snapshot(wd) == before


def test_a_checkpoint_that_does_not_fit_names_the_parameter_and_both_shapes(trained, tmp_path):
    import shutil
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    before = snapshot(wd)
    with pytest.raises(UserError, match=r"params/conv1/bias has shape \(8,\) in the checkpoint "
                                        r"but \(4,\) in the model"):
        train_and_evaluate(config(epochs=3), str(wd), dataset=small_digits(),
                           model=small_cnn(width=4), **QUIET)
    assert snapshot(wd) == before


def test_a_checkpoint_whose_meta_contradicts_its_step_is_refused(trained, tmp_path):
    import shutil
    wd = tmp_path / "copy"
    shutil.copytree(trained, wd)
    meta_file = wd / "checkpoints" / "16" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["step_in_epoch"] = 3  # valid JSON, but epoch 2 step 3 is not step 16
    meta_file.write_text(json.dumps(meta))
    before = snapshot(wd)
    with pytest.raises(UserError, match=r"checkpoint .*/checkpoints/16 has a meta/ record that "
                                        r"does not describe step 16 .*move it aside"):
        train_and_evaluate(config(epochs=3), str(wd), dataset=small_digits(),
                           model=small_cnn(), **QUIET)
    assert snapshot(wd) == before


CLI_BAD = [
    (["--init-from", "/no/such/run"], "no checkpoint at /no/such/run"),
    (["--config.finetune.init_from={ckpt}", "--config.model.name=resnet20"],
     "has no blocks/0/bn1/bias"),
    ([], "cannot be read, it is corrupt or truncated"),
]


def _bad_checkpoint_setup(tmp_path, args):
    ckpt = tmp_path / "ckpt"
    checkpoint.save(str(ckpt), {"params": nnx.state(small_cnn(), nnx.Param)})
    wd = tmp_path / "run"
    wd.mkdir()
    if not args:  # resuming from a "checkpoint" that is only a directory of garbage
        (wd / "checkpoints" / "5" / "state").mkdir(parents=True)
        (wd / "checkpoints" / "5" / "state" / "_METADATA").write_text("garbage")
    (wd / "metrics.jsonl").write_text("earlier results\n")
    return ckpt, wd


@pytest.mark.parametrize("args, message", CLI_BAD, ids=["missing", "other model", "corrupt"])
def test_bad_checkpoints_are_refused_in_process_and_touch_nothing(tmp_path, args, message):
    from configs.digits_cnn import get_config
    from jaxcnn import cli
    ckpt, wd = _bad_checkpoint_setup(tmp_path, args)
    c = get_config()
    for a in args:
        a = a.format(ckpt=ckpt)
        if a.startswith("--config."):
            field, value = a[len("--config."):].split("=", 1)
            group, name = field.split(".")
            c[group][name] = value
        elif a != "--init-from":
            c.finetune.init_from = a
    before = snapshot(wd)
    with pytest.raises(UserError) as e:
        train_and_evaluate(c, str(wd), **QUIET)
    assert message in cli._one_line(e.value)
    assert snapshot(wd) == before


@pytest.mark.slow
@pytest.mark.parametrize("args, message", CLI_BAD, ids=["missing", "other model", "corrupt"])
def test_bad_checkpoints_on_the_command_line_exit_2_and_touch_nothing(tmp_path, args, message):
    ckpt, wd = _bad_checkpoint_setup(tmp_path, args)
    before = snapshot(wd)
    p = _train_cli(wd, *[a.format(ckpt=ckpt) for a in args])
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert snapshot(wd) == before


def test_readme_checkpoint_example_runs():
    import re
    text = (REPO / "README.md").read_text()
    section = text.split("## Checkpoints, resuming and fine-tuning", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})


@pytest.mark.slow
def test_an_empty_ocdbt_manifest_is_one_line_on_the_command_line(tmp_path):
    p = _train_cli(tmp_path, "--config.train.epochs=1")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    latest = checkpoint.latest_step(str(tmp_path / "checkpoints"))
    (tmp_path / "checkpoints" / str(latest) / "state" / "manifest.ocdbt").write_bytes(b"")
    before = snapshot(tmp_path)
    p = _train_cli(tmp_path)  # two epochs: resumes from the emptied checkpoint
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2, err[-2000:]
    # one line: before, TensorStore's writer callbacks added "Event loop is closed" tracebacks
    assert err.strip().splitlines() == [next(x for x in err.splitlines() if x)], err
    assert f"checkpoint {tmp_path}/checkpoints/{latest} cannot be read, it is corrupt" in err
    assert snapshot(tmp_path) == before
