"""The EMA of the weights (`train.ema_decay`, jaxcnn/ema.py): the average against one computed
by hand, with gradient accumulation and pruning; evaluation, checkpoints, resuming and
`load_run` of an EMA run use the average."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import QUIET, small_digits
from flax import nnx
from ml_collections import ConfigDict

from jaxcnn import checkpoint, ema, evaluation, inference, models, parallel, prune
from jaxcnn.config import check_config, default_config
from jaxcnn.errors import UserError
from jaxcnn.steps import create_state, step_config

GRADS = [{"w": np.array([1.0, -2.0, 0.5], np.float32), "b": np.array(3.0, np.float32)},
         {"w": np.array([-0.5, 1.0, 2.0], np.float32), "b": np.array(-1.0, np.float32)},
         {"w": np.array([2.0, 0.0, -1.0], np.float32), "b": np.array(0.5, np.float32)},
         {"w": np.array([0.0, 3.0, 1.0], np.float32), "b": np.array(2.0, np.float32)}]
P0 = {"w": np.array([0.1, 0.2, -0.3], np.float32), "b": np.array(0.4, np.float32)}


def _hand_average(grads, lr: float, decay: float):
    """SGD in float64 and the average of its iterates as the ema.py docstring defines it."""
    p = {k: v.astype(np.float64) for k, v in P0.items()}
    e = dict(p)
    for t, g in enumerate(grads):
        p = {k: p[k] - lr * g[k] for k in p}
        d = min(decay, (1 + t) / (10 + t))
        e = {k: d * e[k] + (1 - d) * p[k] for k in p}
    return p, e


def _run(tx, grads):
    params = {k: jnp.asarray(v) for k, v in P0.items()}
    state, update = tx.init(params), jax.jit(tx.update)
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_average_is_the_hand_computed_one_and_training_is_unchanged():
    # decay 0.2: the warm-up (0.1, 0.18) for the first two updates, then 0.2 itself
    params, state = _run(ema.averaged(optax.sgd(0.1), 0.2), GRADS)
    want_p, want_e = _hand_average(GRADS, 0.1, 0.2)
    plain, _ = _run(optax.sgd(0.1), GRADS)
    for k in P0:
        np.testing.assert_array_equal(params[k], plain[k])  # the wrapper leaves updates alone
        np.testing.assert_allclose(params[k], want_p[k], rtol=1e-6, atol=1e-7)
        # float32 against float64 over 4 updates of values near 1: a few ulps
        np.testing.assert_allclose(state.ema_params[k], want_e[k], rtol=1e-6, atol=1e-7)
        assert not np.allclose(state.ema_params[k], params[k], atol=1e-3)  # it lags, visibly
    assert int(state.count) == 4


def test_with_accumulation_one_average_per_update():
    tx = optax.MultiSteps(ema.averaged(optax.sgd(0.1), 0.2), every_k_schedule=2)
    _, state = _run(tx, [g for g in GRADS for _ in range(2)])  # each gradient twice: mean = it
    found = ema.find(state)
    assert int(found.count) == 4
    _, want_e = _hand_average(GRADS, 0.1, 0.2)
    for k in P0:
        np.testing.assert_allclose(found.ema_params[k], want_e[k], rtol=1e-6, atol=1e-7)


def test_pruned_weights_are_zero_in_the_average():
    cfg = ConfigDict({"sparsity": 0.5, "scope": "layer", "start_epoch": 0, "end_epoch": 0})
    params = {"kernel": jnp.arange(1.0, 9.0).reshape(2, 4), "bias": jnp.ones(4)}
    tx = ema.averaged(prune.pruned(optax.sgd(0.01), cfg, updates_per_epoch=10), 0.9)
    state, update = tx.init(params), jax.jit(tx.update)
    for _ in range(3):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    kept = np.asarray(state.inner.masks["kernel"]) > 0
    assert kept.sum() == 4  # the 4 smallest of 8 pruned
    average = np.asarray(state.ema_params["kernel"])
    assert (average[~kept] == 0).all() and (average[kept] != 0).all()
    assert (np.asarray(params["kernel"])[~kept] == 0).all()


def test_decay_must_be_in_0_1():
    for bad in (1.0, -0.1, float("nan")):
        c = default_config()
        c.train.ema_decay = bad
        with pytest.raises(UserError, match="train.ema_decay must be >= 0 and < 1"):
            check_config(c)
    with pytest.raises(ValueError, match="0 < decay < 1"):
        ema.averaged(optax.sgd(0.1), 0.0)


def _random_cnn(rng) -> nnx.Module:
    """A small seed CNN with numpy-random weights: no compiled initialisers to wait for."""
    graphdef, shapes = nnx.split(nnx.eval_shape(
        lambda: models.CNN(10, width=8, hidden=32, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, jax.tree.map(
        lambda x: rng.normal(0, 0.1, x.shape).astype(x.dtype), shapes))


def test_evaluation_uses_the_average():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 32, 32, 3), np.uint8), np.arange(16) % 10
    model = _random_cnn(rng)
    graphdef, state = create_state(model, ema.averaged(optax.sgd(0.1), 0.9))
    raw = state.params
    other = jax.tree.map(lambda p: p * 1.5 + 0.01, raw)  # an average unlike the weights
    cfg = step_config(default_config(), graphdef, None, 3, 10)
    evaluate = evaluation.Evaluator(images, labels, cfg, 8, parallel.make_mesh(jax.devices()))

    def run(params, average):  # one state structure: one compilation
        return evaluate(state._replace(params=params,
                                       opt_state=state.opt_state._replace(ema_params=average)))

    with_ema, of_average, of_raw = run(raw, other), run(other, other), run(raw, raw)
    assert with_ema["loss"] == of_average["loss"]  # the average is what is evaluated ...
    np.testing.assert_array_equal(with_ema["confusion_matrix"], of_average["confusion_matrix"])
    assert abs(with_ema["loss"] - of_raw["loss"]) > 1e-3  # ... not the weights
    assert ema.evaluated(state._replace(opt_state=None)).params is raw  # no EMA: as is


def test_checkpoint_weights_take_the_average_by_name():
    arrays = {"params/fc/kernel": 1, "params/fc/bias": 2, "model_state/bn/mean": 3,
              "opt_state/inner_opt_state/ema_params/fc/kernel": 10,
              "opt_state/inner_opt_state/ema_params/fc/bias": 20}
    out = ema.checkpoint_weights(arrays)
    assert (out["params/fc/kernel"], out["params/fc/bias"], out["model_state/bn/mean"]) == (
        10, 20, 3)
    plain = {"params/fc/kernel": 1}
    assert ema.checkpoint_weights(plain) == plain


# ---------------------------------------------------------------- an EMA run, end to end

def _config(epochs=2):
    c = default_config()
    c.data.name = "digits"
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = epochs, 32, 100
    c.train.ema_decay = 0.9
    c.train.log_every_steps = 0
    return c


def _small_cnn() -> nnx.Module:
    return models.CNN(10, width=8, hidden=32, rngs=nnx.Rngs(0))


def _train(workdir, **kw):
    from jaxcnn import train_and_evaluate
    return train_and_evaluate(_config(), str(workdir), dataset=small_digits(256),
                              model=_small_cnn(),
                              **QUIET, **kw)


@pytest.fixture(scope="module")
def ema_runs(tmp_path_factory):
    """The same EMA run straight and stopped after step 5 of 16, then resumed."""
    straight = tmp_path_factory.mktemp("ema_straight")
    resumed = tmp_path_factory.mktemp("ema_resumed")
    first = _train(straight)
    assert _train(resumed, stop_at_step=5).stopped == "stop_at_step"
    second = _train(resumed)
    return straight, first, resumed, second


@pytest.mark.slow
def test_resumed_equals_straight(ema_runs):
    straight, first, resumed, second = ema_runs
    a, _ = checkpoint.load_arrays(str(straight))
    b, _ = checkpoint.load_arrays(str(resumed))
    assert set(a) == set(b) and any("/ema_params/" in k for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # the average too, bit for bit
    assert [r["test_loss"] for r in first.history] == [r["test_loss"] for r in second.history]


@pytest.mark.slow
def test_run_evaluates_and_loads_the_average(ema_runs):
    straight, first, _, _ = ema_runs
    arrays, _ = checkpoint.load_arrays(str(straight))
    run = inference.load_run(str(straight), model=_small_cnn())
    loaded = {checkpoint.path_name(k): np.asarray(v) for k, v in
              jax.tree_util.tree_flatten_with_path(nnx.state(run.model, nnx.Param))[0]}
    for name, v in loaded.items():
        np.testing.assert_array_equal(v, arrays[f"opt_state/ema_params/{name}"], err_msg=name)
    assert not np.allclose(loaded["fc2/kernel"], arrays["params/fc2/kernel"], atol=1e-4)
    # the run's final test metrics are those of the average: evaluate.py's path gives them
    data = small_digits(256)
    m = evaluation.evaluate(run.model, data.test_images, data.test_labels, run.config)
    assert m["loss"] == pytest.approx(first.final["test_loss"], rel=1e-6)
    assert m["accuracy"] == first.final["test_accuracy"]
    raw = nnx.clone(run.model)
    inference.load_weights(raw, arrays, "raw")  # params/..., the weights as trained
    r = evaluation.evaluate(raw, data.test_images, data.test_labels, run.config)
    assert abs(r["loss"] - m["loss"]) > 1e-4
