"""The training engine: one step lowers the loss, runs are reproducible, eval counts every image."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import small_digits
from flax import nnx

from jaxcnn import models
from jaxcnn.config import default_config
from jaxcnn.data.pipeline import Batch
from jaxcnn.errors import UserError
from jaxcnn.optim import make_optimizer, make_schedule
from jaxcnn.steps import Preprocess, StepConfig, create_state, eval_step, train_step
from jaxcnn.train import train_and_evaluate


def _cfg(graphdef, tx, crop=0, flip=False):
    return StepConfig(graphdef, tx, Preprocess((0.5,) * 3, (0.5,) * 3), 10, crop, flip)


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return Batch(jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3)), jnp.uint8),
                 jnp.asarray(rng.integers(0, 10, n), jnp.int32))


@pytest.mark.parametrize("name", ["cnn", "resnet20"])
def test_train_step_lowers_the_loss_on_a_fixed_batch(name):
    model = models.create(name, num_classes=10, rngs=nnx.Rngs(0))
    tx = optax.adam(1e-3)
    graphdef, state = create_state(model, tx)
    cfg = _cfg(graphdef, tx)
    batch = _batch()
    step = jax.jit(lambda s: train_step(s, batch, jax.random.key(0), cfg))
    losses = []
    for _ in range(6):
        state, m = step(state)
        losses.append(float(m["loss"] / m["count"]))
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.8 * losses[0], losses
    assert int(state.step) == 6
    ev = eval_step(state, batch, jnp.ones(32), cfg)
    assert int(ev["count"]) == 32


def test_batchnorm_statistics_update_in_training_only():
    model = models.create("resnet20", num_classes=10, rngs=nnx.Rngs(0))
    tx = optax.sgd(0.1)
    graphdef, state = create_state(model, tx)
    cfg = _cfg(graphdef, tx)
    new, _ = jax.jit(lambda s: train_step(s, _batch(), jax.random.key(0), cfg))(state)
    before = jax.tree.leaves(state.model_state)
    after = jax.tree.leaves(new.model_state)
    # training moves every running mean and variance (19 BatchNorms x 2) ...
    assert len(before) == 38
    assert all(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    # ... inference uses them and leaves them exactly as they were: an image's logits do not
    # depend on the rest of its batch (batch statistics would make them)
    model = nnx.merge(graphdef, new.params, new.model_state)
    apply = nnx.jit(lambda m, x, train: m(x, train=train), static_argnums=2)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(apply(model, x, False)[:1], apply(model, x[:1], False),
                                   rtol=1e-5, atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in
               zip(after, jax.tree.leaves(nnx.state(model, nnx.BatchStat)), strict=True))
    apply(model, x, True)  # and training mode would have moved them: the check can fail
    assert not all(np.array_equal(a, b) for a, b in
                   zip(after, jax.tree.leaves(nnx.state(model, nnx.BatchStat)), strict=True))


def test_eval_mask_counts_only_real_images():
    model = models.create("cnn", num_classes=10, rngs=nnx.Rngs(0))
    graphdef, state = create_state(model, optax.adam(1e-3))
    batch = _batch(8)
    mask = jnp.asarray([1, 1, 1, 0, 0, 0, 0, 0], jnp.float32)
    full = eval_step(state, Batch(batch.image[:3], batch.label[:3]), jnp.ones(3),
                     _cfg(graphdef, None))
    masked = eval_step(state, batch, mask, _cfg(graphdef, None))
    assert int(masked["count"]) == 3
    np.testing.assert_allclose(masked["loss"], full["loss"], rtol=1e-5)
    assert int(masked["correct"]) == int(full["correct"])


def test_schedules():
    c = default_config().optim
    c.learning_rate, c.warmup_epochs = 0.1, 1
    for name, end in [("constant", 0.1), ("cosine", 0.0), ("linear", 0.0)]:
        c.schedule = name
        s = make_schedule(c, 10, 5)
        assert float(s(0)) == 0.0 and abs(float(s(10)) - 0.1) < 1e-7
        assert abs(float(s(50)) - end) < 1e-7, name
    c.schedule, c.warmup_epochs = "onecycle", 0.0
    s = make_schedule(c, 10, 10)  # peak at 30% of 100 steps
    assert abs(float(s(30)) - 0.1) < 1e-7 and float(s(15)) < 0.1 and float(s(100)) == 0.0


def test_optimizers_and_weight_decay():
    c = default_config().optim
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.zeros(3)}
    for name in ("adam", "adamw", "sgd"):
        c.name, c.weight_decay = name, 0.1
        tx = make_optimizer(c, optax.constant_schedule(0.5))
        updates, _ = tx.update(grads, tx.init(params), params)
        assert float(updates["w"][0]) < 0, name  # decay pulls weights towards 0
    c.name = "lion"
    with pytest.raises(UserError, match="unknown optim.name 'lion'"):
        make_optimizer(c, optax.constant_schedule(0.5))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_decay_norm_and_bias_false_decays_kernels_only(name):
    """Goyal et al.'s decay: conv and dense kernels shrink, BatchNorm scales and offsets and
    every bias do not move (zero gradients: the decay is the whole update)."""
    model = models.create("resnet20", num_classes=10, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    c = default_config().optim
    c.name, c.weight_decay, c.momentum, c.decay_norm_and_bias = name, 0.1, 0.0, False
    tx = make_optimizer(c, optax.constant_schedule(0.5))
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    flat = {jax.tree_util.keystr(k): (p, u) for (k, p), u in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(updates), strict=True)}
    one_d = [k for k, (p, _) in flat.items() if p.ndim == 1]
    assert sum("scale" in k for k in one_d) == 19 and sum("bias" in k for k in one_d) == 20
    for k, (p, u) in flat.items():
        if p.ndim == 1:
            assert not np.any(np.asarray(u)), k
        elif name == "adam":  # L2 in the gradient g, then Adam's first step: -lr g/(|g|+eps)
            g = 0.1 * np.asarray(p, np.float64)
            np.testing.assert_allclose(u, -0.5 * g / (np.abs(g) + 1e-8), rtol=1e-5, err_msg=k)
        else:  # sgd's L2 and adamw's decoupled decay: -lr x wd x p
            np.testing.assert_allclose(u, -0.05 * np.asarray(p), rtol=1e-6, err_msg=k)
    c.decay_norm_and_bias = True  # PyTorch's default: every parameter decays
    tx = make_optimizer(c, optax.constant_schedule(0.5))
    updates, _ = tx.update(zeros, tx.init(params), params)
    scales = [u for (k, p), u in zip(jax.tree_util.tree_leaves_with_path(params),
                                     jax.tree.leaves(updates), strict=True)
              if "scale" in jax.tree_util.keystr(k)]
    assert all(np.all(np.asarray(u) < 0) for u in scales)  # scales start at 1: pulled to 0


def _config(**train):
    c = default_config()
    c.data.name = "digits"
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 2, 64, 64
    c.data.crop_padding, c.data.flip = 2, True
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def test_same_seed_same_run_and_metrics_files(tmp_path):
    data = small_digits(512)
    a = train_and_evaluate(_config(), str(tmp_path / "a"), dataset=data, progress=False,
                           log=lambda *_: None)
    b = train_and_evaluate(_config(), str(tmp_path / "b"), dataset=data, progress=False,
                           log=lambda *_: None)
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    for ra, rb in zip(a.history, b.history, strict=True):
        assert [ra[k] for k in keys] == [rb[k] for k in keys]
    rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(keys) | {"epoch", "images_per_sec"} <= set(rows[0])
    assert rows[-1]["step"] == 2 * (512 // 64)
    saved = json.load(open(tmp_path / "a" / "config.json"))
    assert saved["train"]["batch_size"] == 64 and saved["data"]["crop_padding"] == 2
    assert a.history[-1]["test_accuracy"] > 0.5  # digits is learnt within two short epochs


def test_streamed_input_matches_on_device(tmp_path):
    data = small_digits(512)
    runs = []
    for on_device in ("yes", "no"):
        c = _config(epochs=1)
        c.data.on_device = on_device
        runs.append(train_and_evaluate(c, None, dataset=data, progress=False,
                                       log=lambda *_: None))
    a, b = (r.history[0] for r in runs)
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
    assert abs(a["test_loss"] - b["test_loss"]) < 1e-5
    assert a["test_accuracy"] == b["test_accuracy"]


def test_eval_counts_every_test_image_with_a_ragged_last_batch():
    data = small_digits(512)  # 100 test images, eval batch 64: last batch is padded
    r = train_and_evaluate(_config(epochs=1), None, dataset=data, progress=False,
                           log=lambda *_: None)
    trained = r.model
    logits = trained(((jnp.asarray(data.test_images, jnp.float32) / 255) - 0.5) / 0.5)
    want = float((np.asarray(logits).argmax(-1) == data.test_labels).mean())
    assert r.final["test_accuracy"] == pytest.approx(want, abs=1e-9)


def test_bad_run_settings():
    data = small_digits(512)
    with pytest.raises(UserError, match="larger than the 512 training images"):
        train_and_evaluate(_config(batch_size=1024), None, dataset=data, progress=False)
    c = _config()
    c.optim.learning_rate = 0.0
    with pytest.raises(UserError, match="learning_rate must be > 0"):
        train_and_evaluate(c, None, dataset=data, progress=False)
    c = _config()
    c.optim.learning_rate = 1e6  # diverges
    c.optim.name = "sgd"
    with pytest.raises(UserError, match="diverged"):
        train_and_evaluate(c, None, dataset=data, progress=False, log=lambda *_: None)


def test_a_masked_remainder_step_equals_a_step_on_the_real_rows_alone():
    model = models.create("cnn", num_classes=10, width=8, hidden=32, rngs=nnx.Rngs(0))
    tx = optax.adam(1e-3)
    graphdef, state = create_state(model, tx)
    step = jax.jit(train_step, static_argnums=3)
    cfg = _cfg(graphdef, tx)
    full = _batch(32)
    mask = jnp.asarray(np.arange(32) < 12, jnp.float32)
    padded, m_padded = step(state, full._replace(mask=mask), jax.random.key(0), cfg)
    real = Batch(full.image[:12], full.label[:12])
    alone, m_alone = step(state, real, jax.random.key(0), cfg)
    assert float(m_padded["count"]) == 12
    np.testing.assert_allclose(m_padded["loss"], m_alone["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(padded.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("on_device", ["yes", "no"])
def test_drop_remainder_false_trains_on_every_image_each_epoch(on_device):
    data = small_digits(500)  # 7 batches of 64 and one of 52 real rows
    c = _config(epochs=1, drop_remainder=False)
    c.data.on_device = on_device
    r = train_and_evaluate(c, None, dataset=data, progress=False, log=lambda *_: None)
    assert r.history[0]["step"] == 8
    correct = r.history[0]["train_accuracy"] * 500  # correct / count, count = all 500 images
    assert correct == pytest.approx(round(correct), abs=1e-6)


def test_drop_remainder_false_is_refused_with_batchnorm():
    c = _config(drop_remainder=False)
    c.model.name = "resnet20"
    with pytest.raises(UserError, match="drop_remainder=false.*BatchNorm"):
        train_and_evaluate(c, None, dataset=small_digits(500), progress=False)


def test_a_run_that_fails_in_its_first_epoch_leaves_metrics_jsonl_as_it_was(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "test_accuracy": 0.5}\n')
    c = _config()
    c.optim.learning_rate, c.optim.name = 1e6, "sgd"  # diverges in epoch 1
    with pytest.raises(UserError, match="diverged"):
        train_and_evaluate(c, str(tmp_path), dataset=small_digits(512), progress=False,
                           log=lambda *_: None)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1, "test_accuracy": 0.5}\n'
    # a run that finishes an epoch replaces the old rows with its own
    r = train_and_evaluate(_config(epochs=1), str(tmp_path / "ok"), dataset=small_digits(512),
                           progress=False, log=lambda *_: None)
    rows = [json.loads(x) for x in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [json.loads(json.dumps(r.history[0]))]
