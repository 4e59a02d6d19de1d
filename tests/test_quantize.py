"""int8 quantization (jaxcnn/quantize.py, scripts/quantize.py): PTQ of every zoo model, a
saved int8 run read back exactly and served through evaluate / predict / export, QAT training
that resumes exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import QUIET, python, small_digits
from flax import nnx

from jaxcnn import evaluation, export, inference, models, quantize, serving, train_and_evaluate
from jaxcnn.config import default_config
from jaxcnn.errors import UserError
from jaxcnn.steps import Preprocess

PREP = Preprocess((0.5,) * 3, (0.25,) * 3, jnp.float32)


def _images(n, seed=0, shape=(32, 32, 3)):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs, float_leaves", [
    ("cnn", dict(width=4, hidden=16), 0),
    ("resnet20", {}, 0),  # BatchNorm, identity (zero-padded) shortcuts
    ("resnet18", dict(widths=(8, 16, 32, 64)), 0),  # projection shortcuts
    # airbench's whitening kernel is data-derived (not a Param) and stays float: 3x2x2x24
    ("airbench", dict(widths=(8, 8, 8)), 2 * 2 * 3 * 24),
])
def test_ptq_quantizes_every_conv_and_dense_kernel(name, kwargs, float_leaves):
    model = models.create(name, num_classes=5, rngs=nnx.Rngs(0), **kwargs)
    q = quantize.ptq(model, _images(16), PREP)
    kernels = {k: v for k, v in _flat(nnx.state(q)).items() if "kernel" in k}
    int8 = {k for k, v in kernels.items() if v.dtype == jnp.int8}
    n_float = sum(v.size for k, v in kernels.items() if v.dtype != jnp.int8 and "scale" not in k)
    assert int8 and n_float == float_leaves, sorted(kernels)
    # int8 logits track the float ones: argmax agreement on the calibration distribution
    x = _images(64, seed=1)
    from jaxcnn.data.pipeline import normalize
    y0 = model(normalize(jnp.asarray(x), *PREP), train=False)
    y1 = q(normalize(jnp.asarray(x), *PREP), train=False)
    # a random, untrained network on random images: int8 rounding moves its logits by a
    # fifth of their spread at most (a trained one: tests below and results/quantize-*)
    rel = float(jnp.sqrt(jnp.mean((y1 - y0) ** 2) / jnp.mean((y0 - y0.mean()) ** 2)))
    assert rel < 0.2, rel
    assert quantize.stored_bytes(q) < 0.45 * quantize.stored_bytes(model)


def _flat(state):
    return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in p): v
            for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def test_ptq_of_an_already_int8_run_is_refused(tmp_path):
    run = inference.Run(None, default_config(), ("a",), {"checkpoint": "x"})
    run.config.quant.mode = "ptq"
    with pytest.raises(UserError, match="already int8"):
        quantize.quantize_run(run, _images(1))


@pytest.fixture(scope="module")
def digits_float_run(tmp_path_factory):
    config = default_config()
    config.data.name = "digits"
    config.train.epochs = 2
    config.train.batch_size = 32
    workdir = tmp_path_factory.mktemp("digits_float")
    train_and_evaluate(config, str(workdir), dataset=small_digits(320, 200), **QUIET)
    return workdir, config


@pytest.mark.slow
def test_quantize_cli_writes_an_int8_run_that_evaluates_exports_and_serves(digits_float_run,
                                                                            tmp_path):
    workdir, _ = digits_float_run
    out = tmp_path / "int8"
    p = python("scripts/quantize.py", workdir, "--out", out, "--calibration_images", 64)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("int8 test_accuracy=")
    accuracy = float(last.split("=")[1])
    run = inference.load_run(str(out))
    assert run.config.quant.mode == "ptq" and run.config.quant.calibration_images == 64
    assert quantize.int8_fraction(run.model) > 0.95
    data = inference.run_dataset(run)
    m = evaluation.evaluate(run.model, data.test_images, data.test_labels, run.config)
    assert m["accuracy"] == pytest.approx(accuracy, abs=5e-5)
    float_run = inference.load_run(str(workdir))
    f = evaluation.evaluate(float_run.model, data.test_images, data.test_labels,
                            float_run.config)
    assert abs(m["accuracy"] - f["accuracy"]) <= 0.02  # 200 images: at most 4 flips
    # the jax.export artifact computes the int8 forward
    meta = export.export_run(run, str(tmp_path / "export"), platforms=("cpu",))
    model = serving.load(str(tmp_path / "export"))
    logits = inference.predict_logits(run.model, data.test_images[:7], run.config)
    np.testing.assert_allclose(serving.classify(model, data.test_images[:7])["logits"], logits,
                               atol=1e-4)
    assert meta["model"] == "cnn"
    # scripts/bench_deploy.py measures both runs side by side
    bench = python("scripts/bench_deploy.py", workdir, out, "--repeats", 2, "--json",
                   tmp_path / "bench.json")
    assert bench.returncode == 0, bench.stderr[-2000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["quant_mode"] for r in rows] == ["float32", "ptq"]
    assert rows[1]["test_accuracy"] == pytest.approx(m["accuracy"], abs=5e-5)
    assert rows[0]["test_accuracy"] == pytest.approx(f["accuracy"], abs=5e-5)
    assert rows[1]["artifact_bytes"] < 0.4 * rows[0]["artifact_bytes"]  # int8: 1/4 of float32
    # a second quantization into the same directory is refused; nothing there changes
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    again = python("scripts/quantize.py", workdir, "--out", out)
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    # an int8 run does not train
    config = json.loads((out / "config.json").read_text())
    assert config["quant"]["mode"] == "ptq"


def _qat_config(init_from):
    config = default_config()
    config.data.name = "digits"
    config.train.epochs = 2
    config.train.batch_size = 32
    config.quant.mode = "qat"
    config.finetune.init_from = str(init_from)
    config.finetune.keep_head = True
    # One step per compiled call in both runs: calls of other lengths fuse qwix's rounding
    # differently and differ in the last bit (1.5e-8 seen); the same program is bit-exact.
    config.train.steps_per_call = 1
    return config


@pytest.mark.slow
def test_qat_resumes_exactly_and_quantizes(digits_float_run, tmp_path):
    workdir, _ = digits_float_run
    config = _qat_config(workdir)
    data = small_digits(320, 200)
    straight = train_and_evaluate(config, str(tmp_path / "straight"), dataset=data, **QUIET)
    first = train_and_evaluate(config, str(tmp_path / "resumed"), dataset=data,
                               stop_at_step=13, **QUIET)
    assert first.stopped == "stop_at_step"
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"), dataset=data, **QUIET)
    for a, b in zip(jax.tree.leaves(nnx.state(straight.model)),
                    jax.tree.leaves(nnx.state(resumed.model)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["test_accuracy"] for r in straight.history] == [
        r["test_accuracy"] for r in resumed.history]
    # the run evaluates as trained (fake-quantized), and converts to int8
    run = inference.load_run(str(tmp_path / "straight"))
    m = evaluation.evaluate(run.model, data.test_images, data.test_labels, run.config)
    assert m["accuracy"] == pytest.approx(straight.final["test_accuracy"], abs=1e-6)
    q = quantize.quantize_run(run, data.train_images[:64])
    qm = evaluation.evaluate(q.model, data.test_images, data.test_labels, q.config)
    assert abs(qm["accuracy"] - m["accuracy"]) <= 0.02


def test_training_an_int8_run_is_refused():
    config = default_config()
    config.quant.mode = "ptq"
    from jaxcnn import train
    with pytest.raises(UserError, match="does not train"):
        train.build(config, dataset=small_digits(64, 32))
