"""Magnitude pruning (jaxcnn/prune.py): masks, the cubic schedule, the Optax wrapper, and pruned
training that resumes exactly."""

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import QUIET, small_digits
from flax import nnx
from ml_collections import ConfigDict

from jaxcnn import evaluation, export, inference, prune, serving, train_and_evaluate
from jaxcnn.config import default_config


def _params():
    k = jax.random.split(jax.random.key(0), 3)
    return {"conv": {"kernel": jax.random.normal(k[0], (3, 3, 2, 4)), "bias": jnp.ones(4)},
            "fc": {"kernel": 10 * jax.random.normal(k[1], (8, 5)), "bias": jnp.ones(5)}}


def _cfg(**kw):
    return ConfigDict({"sparsity": 0.5, "scope": "layer", "start_epoch": 0, "end_epoch": 0,
                       **kw})


def test_layer_masks_prune_the_smallest_of_every_kernel_exactly():
    params = _params()
    masks = prune.masks_for(params, jnp.float32(0.75), "layer")
    for name, n in (("conv", 72), ("fc", 40)):
        m, w = masks[name]["kernel"], params[name]["kernel"]
        assert int(m.sum()) == n - int(0.75 * n)
        assert jnp.abs(w)[m == 1].min() > jnp.abs(w)[m == 0].max()  # the smallest went
        assert masks[name]["bias"].shape == ()  # never pruned
    # global: one threshold; fc's weights are 10x larger, so conv loses far more than 75%
    g = prune.masks_for(params, jnp.float32(0.75), "global")
    assert int(g["conv"]["kernel"].sum() + g["fc"]["kernel"].sum()) == 112 - 84
    assert int(g["conv"]["kernel"].sum()) < 72 - 54


def test_schedule_is_cubic_from_start_to_end_epoch():
    c = _cfg(sparsity=0.8, start_epoch=2, end_epoch=6)
    got = [float(prune.sparsity_at(e, c)) for e in range(8)]
    want = [0, 0, 0, 0.8 * (1 - 0.75 ** 3), 0.8 * (1 - 0.5 ** 3), 0.8 * (1 - 0.25 ** 3), 0.8, 0.8]
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert float(prune.sparsity_at(0, _cfg(sparsity=0.9))) == pytest.approx(0.9)  # one shot


def test_wrapper_keeps_pruned_weights_at_zero_and_the_rest_as_the_inner_optimizer():
    params, inner = _params(), optax.adam(0.1)
    tx = prune.pruned(inner, _cfg(sparsity=0.5), updates_per_epoch=3)
    state, ref_state = tx.init(params), inner.init(params)
    p, ref = params, params
    for i in range(5):
        g = jax.tree.map(lambda x, i=i: jnp.cos(x + i), p)
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
        if i == 0:  # the unpruned weights, from the same start, move as plain Adam moves them
            masks = state.masks
        ru, ref_state = inner.update(jax.tree.map(lambda g, m: g * m, g, masks), ref_state, ref)
        ref = optax.apply_updates(ref, ru)
        ref = jax.tree.map(lambda x, m: x * m, ref, masks)
    for name in ("conv", "fc"):
        w, m = p[name]["kernel"], state.masks[name]["kernel"]
        assert int((w == 0).sum()) == int((m == 0).sum()) == w.size // 2
        np.testing.assert_array_equal(w, ref[name]["kernel"])
        np.testing.assert_array_equal(p[name]["bias"], ref[name]["bias"])
    assert prune.sparsity_of(p)["total"] == pytest.approx(0.5)


def _config(**prune_fields):
    config = default_config()
    config.data.name = "digits"
    config.train.epochs = 3
    config.train.batch_size = 32
    for k, v in prune_fields.items():
        config.prune[k] = v
    return config


@pytest.mark.slow
def test_gradual_pruning_reaches_its_sparsity_and_resumes_exactly(tmp_path):
    config = _config(sparsity=0.8, start_epoch=0, end_epoch=2, scope="layer")
    data = small_digits(320, 100)  # 10 steps an epoch
    straight = train_and_evaluate(config, str(tmp_path / "straight"), dataset=data, **QUIET)
    stopped = train_and_evaluate(config, str(tmp_path / "resumed"), dataset=data,
                                 stop_at_step=15, **QUIET)
    assert stopped.stopped == "stop_at_step"
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"), dataset=data, **QUIET)
    for a, b in zip(jax.tree.leaves(nnx.state(straight.model)),
                    jax.tree.leaves(nnx.state(resumed.model)), strict=True):
        np.testing.assert_array_equal(a, b)
    s = prune.sparsity_of(nnx.state(straight.model, nnx.Param))
    for name in ("conv1/kernel", "conv2/kernel", "fc1/kernel", "fc2/kernel"):
        assert s[name] == pytest.approx(0.8, abs=1e-3), s  # floor(0.8 n) of each kernel
    assert straight.final["test_accuracy"] > 0.5


@pytest.mark.slow
def test_one_shot_pruning_of_a_trained_run_then_fine_tuning(tmp_path):
    data = small_digits(320, 100)
    base = _config()
    train_and_evaluate(base, str(tmp_path / "base"), dataset=data, **QUIET)
    config = _config(sparsity=0.9, scope="global")
    config.train.epochs = 1
    config.finetune.init_from = str(tmp_path / "base")
    config.finetune.keep_head = True
    result = train_and_evaluate(config, str(tmp_path / "pruned"), dataset=data, **QUIET)
    assert prune.sparsity_of(nnx.state(result.model, nnx.Param))["total"] == pytest.approx(
        0.9, abs=1e-4)
    assert result.final["test_accuracy"] > 0.5
    # the pruned run loads, evaluates as trained, and exports with its zeros (which compress)
    run = inference.load_run(str(tmp_path / "pruned"))
    m = evaluation.evaluate(run.model, data.test_images, data.test_labels, run.config)
    assert m["accuracy"] == pytest.approx(result.final["test_accuracy"], abs=1e-6)
    sizes = {}
    for name in ("base", "pruned"):
        out = tmp_path / f"{name}_export"
        export.export_run(inference.load_run(str(tmp_path / name)), str(out), platforms=("cpu",))
        sizes[name] = len(gzip.compress((out / export.ARTIFACT).read_bytes()))
        if name == "pruned":
            logits = serving.classify(serving.load(str(out)), data.test_images[:5])["logits"]
            np.testing.assert_allclose(
                logits, inference.predict_logits(run.model, data.test_images[:5], run.config),
                atol=1e-5)
    assert sizes["pruned"] < 0.5 * sizes["base"], sizes
