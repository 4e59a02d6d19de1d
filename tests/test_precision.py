"""precision=bf16: bfloat16 convolutions and matmuls, float32 parameters, optimizer and loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcnn import models
from jaxcnn.config import check_config, compute_dtype, default_config
from jaxcnn.data import load
from jaxcnn.data.pipeline import Batch
from jaxcnn.errors import UserError
from jaxcnn.steps import Preprocess, StepConfig, create_state, train_step

STEPS, BATCH = 30, 32


def loss_curve(precision: str, images, labels) -> tuple[np.ndarray, jax.Array, jnp.dtype]:
    """Per-step losses of the seed CNN + Adam on the same batches, from the same init."""
    config = default_config()
    config.precision = precision
    dtype = compute_dtype(config)
    # A narrower seed CNN: bf16 matmuls are slow on CPUs, and the test is about numerics.
    model = models.create("cnn", num_classes=10, width=16, hidden=256, dtype=dtype,
                          rngs=nnx.Rngs(0))
    tx = optax.adam(1e-3)
    graphdef, state = create_state(model, tx)
    cfg = StepConfig(graphdef, tx, Preprocess((0.5,) * 3, (0.5,) * 3, models.dtype_of(dtype)), 10)
    step = jax.jit(functools.partial(train_step, cfg=cfg))
    losses = []
    for i in range(STEPS):
        j = (i * BATCH) % (len(labels) - BATCH)
        state, m = step(state, Batch(images[j:j + BATCH], labels[j:j + BATCH]),
                        jax.random.key(i))
        losses.append(float(m["loss"] / m["count"]))
    logits = jax.eval_shape(model, jax.ShapeDtypeStruct((2, 32, 32, 3), cfg.preprocess.dtype))
    return np.array(losses), state, logits.dtype


def test_bf16_loss_curve_follows_float32():
    data = load("digits")
    f32, _, f32_logits = loss_curve("float32", data.train_images, data.train_labels)
    bf16, state16, bf16_logits = loss_curve("bf16", data.train_images, data.train_labels)
    assert (f32_logits, bf16_logits) == (jnp.float32, jnp.bfloat16)
    # Parameters and optimizer state stay float32 in both.
    assert {x.dtype for x in jax.tree.leaves((state16.params, state16.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    assert f32[-1] < 0.5 * f32[0]  # the run really learns
    # Stated tolerance: every step's loss within 0.05 + 5% of float32's (measured: <= 0.015).
    np.testing.assert_allclose(bf16, f32, rtol=0.05, atol=0.05)
    assert not np.array_equal(bf16, f32)  # and bf16 really ran in lower precision


def test_unknown_precision_refused():
    config = default_config()
    config.precision = "fp8"
    with pytest.raises(UserError, match="precision must be float32 or bf16"):
        check_config(config)


@pytest.mark.parametrize("field", ["dtype", "param_dtype"])
def test_float16_without_loss_scaling_is_refused(field):
    config = default_config()
    config.model[field] = "float16"
    with pytest.raises(UserError, match=f"model.{field} must be float32 or bfloat16.*loss "
                                        "scaling"):
        check_config(config)
