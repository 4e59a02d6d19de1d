"""Data parallelism: device selection, 1 vs N devices, and a real two-process run on localhost.

The session has two CPU devices (conftest.py), so 1 vs 2 devices runs in process (fast set).
Runs on 8 devices, or over two processes, start subprocesses with their own forced CPU devices
(JAX_NUM_CPU_DEVICES must be set before JAX starts): the slow set.
"""

import json
import pathlib
import socket

import jax
import numpy as np
import pytest
from conftest import QUIET, python_json, small_digits, train_cli
from flax import nnx

from jaxcnn import parallel
from jaxcnn.config import default_config
from jaxcnn.errors import UserError
from jaxcnn.train import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_select_devices_on_this_machine():
    n = len(jax.devices())
    assert parallel.select_devices("all") == jax.devices()
    assert parallel.select_devices("1") == jax.devices()[:1]
    with pytest.raises(UserError, match=f"this machine has {n}"):
        parallel.select_devices(str(n + 1))
    with pytest.raises(UserError, match="not understood"):
        parallel.select_devices("two")
    with pytest.raises(UserError, match="ids must be distinct"):
        parallel.select_devices("0,0")


def test_batch_must_divide_by_the_devices():
    assert len(jax.devices()) >= 2  # conftest.py asks for two CPU devices
    mesh = parallel.make_mesh(jax.devices()[:2])
    parallel.check_batch_size(8, mesh)
    with pytest.raises(UserError, match="train.batch_size=7 does not divide by the 2 devices"):
        parallel.check_batch_size(7, mesh)
    with pytest.raises(UserError, match="train.batch_size=7 does not divide by the 2 devices"):
        train_and_evaluate(_sgd_config("cnn", batch_size=7), None, devices="2",
                           dataset=small_digits(), **QUIET)
    parallel.check_batch_size(7, parallel.make_mesh(jax.devices()[:1]))  # one device: any


def _sgd_config(model: str, batch_size: int = 64):
    c = default_config()
    c.model.name = model
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 1, batch_size, 48
    c.data.crop_padding, c.data.flip = 2, True
    # SGD, not Adam: its step is proportional to the gradient, so a rounding difference stays a
    # rounding difference (Adam's normalised step can blow a near-zero one up).
    c.optim.name, c.optim.learning_rate = "sgd", 0.01
    return c


@pytest.mark.parametrize("model, tol, loss_rtol", [
    ("cnn", 1e-5, 1e-6),
    # fp32, 4 SGD steps: only the order of the batch reductions differs. ResNet-20's first step
    # differs by ~1e-5 at most, but BatchNorm at init amplifies rounding over the next steps
    # (seen: parameters 1.6e-4 apart, the epoch's train loss 5.5e-6 relative).
    ("resnet20", 1e-3, 2e-5)])
def test_one_and_two_devices_train_the_same_in_process(model, tol, loss_rtol):
    data = small_digits()
    runs = {d: train_and_evaluate(_sgd_config(model), None, devices=d, dataset=data, **QUIET)
            for d in ("1", "2")}
    one, two = (jax.tree.leaves(nnx.state(runs[d].model)) for d in ("1", "2"))
    assert max(float(np.abs(a - b).max()) for a, b in zip(one, two, strict=True)) < tol
    assert runs["1"].final["test_accuracy"] == runs["2"].final["test_accuracy"]
    assert runs["2"].final["train_loss"] == pytest.approx(runs["1"].final["train_loss"],
                                                          rel=loss_rtol)


# The worker: train a few steps on 1 and on 8 devices in one process, report the differences.
_EQUIVALENCE = """
    import json, jax, numpy as np
    from jaxcnn.config import default_config
    from jaxcnn.data import Dataset, load
    from jaxcnn.errors import UserError
    from jaxcnn.train import train_and_evaluate
    from jaxcnn import parallel
    from flax import nnx

    d = load("digits")
    data = Dataset(d.train_images[:256], d.train_labels[:256], d.test_images[:100],
                   d.test_labels[:100], d.class_names, "digits-small")
    out = {}
    for model in ("cnn", "resnet20"):
        c = default_config()
        c.model.name = model
        c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 1, 64, 48
        c.data.crop_padding, c.data.flip = 2, True
        # SGD, not Adam: its step is proportional to the gradient, so a rounding difference
        # stays a rounding difference (Adam's normalised step can blow a near-zero one up).
        c.optim.name, c.optim.learning_rate = "sgd", 0.01
        runs = {}
        # ResNet-20 (BatchNorm) on 1 and 8 devices; the CNN also on a non-contiguous pair.
        for devices in ("1", "all", "0,3") if model == "cnn" else ("1", "all"):
            r = train_and_evaluate(c, None, devices=devices, dataset=data, progress=False,
                                   log=lambda *_: None)
            runs[devices] = r
        ref = jax.tree.leaves(nnx.state(runs["1"].model))
        for devices, r in runs.items():
            leaves = jax.tree.leaves(nnx.state(r.model))
            out[f"{model}/{devices}"] = {
                "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(ref, leaves)),
                "test_correct": round(r.final["test_accuracy"] * 100),
                "train_loss": r.final["train_loss"]}
    out["devices"] = len(jax.devices())
    out["mesh_2"] = [d.id for d in parallel.select_devices("2")]
    out["mesh_0,3"] = [d.id for d in parallel.select_devices("0,3")]
    c = default_config()
    c.train.batch_size = 60
    try:
        train_and_evaluate(c, None, devices="all", dataset=data, progress=False)
    except UserError as e:
        out["refused"] = str(e)
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_one_device_and_eight_devices_train_the_same():
    out = python_json(_EQUIVALENCE, 8)
    assert out["devices"] == 8
    assert out["mesh_2"] == [0, 1] and out["mesh_0,3"] == [0, 3]
    for model in ("cnn", "resnet20"):
        ref = out[f"{model}/1"]
        for devices in ("all", "0,3") if model == "cnn" else ("all",):
            got = out[f"{model}/{devices}"]
            # fp32, 4 SGD steps: only the order of the batch reductions differs. For the CNN that
            # stays ~1e-6. ResNet-20's first step also differs by ~1e-5 at most, but BatchNorm
            # at init amplifies rounding over the next steps (seen: 1.6e-4 on arrays of scale ~1).
            tol = 1e-5 if model == "cnn" else 1e-3
            assert got["max_abs_diff"] < tol, (model, devices, got)
            assert got["test_correct"] == ref["test_correct"], (model, devices)
            assert abs(got["train_loss"] - ref["train_loss"]) < 1e-5
    assert "train.batch_size=60 does not divide by the 8 devices" in out["refused"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(args, devices, workdir):
    return train_cli("--config", "configs/digits_cnn.py", "--workdir", workdir, "--noprogress",
                     "--noplots", *args, devices=devices)


def _rows(workdir):
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("on_device", ["yes", "no"])
def test_two_processes_match_one_process_with_four_devices(tmp_path, on_device):
    args = ["--config.train.epochs=1", f"--config.data.on_device={on_device}"]
    port = _free_port()
    # One workdir for both processes, as on hosts sharing a file system: Orbax writes each
    # checkpoint together from every process.
    procs = [_train([*args, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)], 2, tmp_path / "multi") for i in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "over 2 process(es)" in outs[0][0] and "final test_accuracy=" in outs[0][0]
    # only process 0 prints (Gloo's own connection lines aside, which its threads may split
    # mid-line: "[Gloo] Rank " / "2 is connected to 3 peer ranks...") and writes metrics, once
    assert [x for x in outs[1][0].splitlines()
            if x.strip() and not x.startswith("[Gloo]") and "peer ranks" not in x] == []
    assert len(_rows(tmp_path / "multi")) == 1
    single = _train(args, 4, tmp_path / "single")
    out, err = single.communicate(timeout=240)
    assert single.returncode == 0, err[-3000:]
    a, b = _rows(tmp_path / "multi")[-1], _rows(tmp_path / "single")[-1]
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
    assert abs(a["test_loss"] - b["test_loss"]) < 1e-5
    assert a["test_accuracy"] == b["test_accuracy"]


@pytest.mark.slow
def test_digits_config_on_eight_devices_reaches_the_one_device_accuracy(tmp_path):
    runs = {}
    for devices in (1, 8):
        # The digits config, cut from 10 epochs to 5 to keep the suite short (0.97 by then).
        p = _train(["--devices", "all", "--config.train.epochs=5"], devices,
                   tmp_path / str(devices))
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
        runs[devices] = _rows(tmp_path / str(devices))[-1]["test_accuracy"]
    assert runs[8] >= 0.95
    assert abs(runs[8] - runs[1]) <= 1 / 360 + 1e-9  # at most one of 360 test images apart
