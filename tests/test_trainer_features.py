"""Trainer features users of other trainers expect: gradient accumulation, a profiler trace."""

import jax
import numpy as np
import pytest
from conftest import QUIET, small_digits
from flax import nnx

from jaxcnn import models, train_and_evaluate
from jaxcnn.config import default_config
from jaxcnn.errors import UserError


def _config(batch_size, accum):
    c = default_config()
    c.data.name = "digits"
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 1, batch_size, 100
    c.train.grad_accum_steps = accum
    c.optim.schedule, c.optim.warmup_epochs = "cosine", 0.5  # a rate that changes per update
    return c


def _model():
    return models.CNN(10, width=8, hidden=32, rngs=nnx.Rngs(0))


def test_accumulating_two_batches_of_32_equals_one_batch_of_64():
    data = small_digits(256)  # 8 steps of 32 = 4 updates of 64 per epoch, in the same order
    big = train_and_evaluate(_config(64, 1), None, dataset=data, model=_model(), **QUIET)
    acc = train_and_evaluate(_config(32, 2), None, dataset=data, model=_model(), **QUIET)
    for a, b in zip(jax.tree.leaves(nnx.state(big.model)), jax.tree.leaves(nnx.state(acc.model)),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
    for a, b in zip(big.history, acc.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["test_accuracy"] == b["test_accuracy"]
    # and it is not the same as 8 updates of 32: the test can tell them apart
    small = train_and_evaluate(_config(32, 1), None, dataset=data, model=_model(), **QUIET)
    assert not np.allclose(nnx.state(small.model)["fc2"]["kernel"][...],
                           nnx.state(acc.model)["fc2"]["kernel"][...], atol=1e-4)


def test_accumulation_must_divide_the_epoch():
    with pytest.raises(UserError, match="train.grad_accum_steps=3 does not divide the 8 steps of "
                                        "an epoch: use a divisor of 8"):
        train_and_evaluate(_config(32, 3), None, dataset=small_digits(256), **QUIET)


def test_profile_steps_write_a_trace_tensorboard_reads(tmp_path):
    c = _config(64, 1)
    c.train.profile_steps = 2
    train_and_evaluate(c, str(tmp_path), dataset=small_digits(256), model=_model(), **QUIET)
    traces = list((tmp_path / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    c.train.profile_steps = -1
    with pytest.raises(UserError, match="train.profile_steps must be an integer >= 0, got -1"):
        train_and_evaluate(c, None, dataset=small_digits(256), **QUIET)
