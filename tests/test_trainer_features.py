"""Trainer features users of other trainers expect: gradient accumulation, a profiler trace,
class weights."""

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


@pytest.fixture(scope="module")
def data():
    return small_digits(256)  # 8 steps of 32 = 4 steps of 64 per epoch, in the same order


@pytest.fixture(scope="module")
def plain(data):
    """The plain run: batches of 64, one update each, equal class weights."""
    return train_and_evaluate(_config(64, 1), None, dataset=data, model=_model(), **QUIET)


def test_accumulating_two_batches_of_32_equals_one_batch_of_64(data, plain):
    big = plain
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


def test_accumulation_must_divide_the_epoch(data):
    with pytest.raises(UserError, match="train.grad_accum_steps=3 does not divide the 8 steps of "
                                        "an epoch: use a divisor of 8"):
        train_and_evaluate(_config(32, 3), None, dataset=data, **QUIET)


def test_profile_steps_write_a_trace_tensorboard_reads(tmp_path):
    c = _config(64, 1)
    c.train.profile_steps = 2
    train_and_evaluate(c, str(tmp_path), dataset=small_digits(256), model=_model(), **QUIET)
    traces = list((tmp_path / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    c.train.profile_steps = -1
    with pytest.raises(UserError, match="train.profile_steps must be an integer >= 0, got -1"):
        train_and_evaluate(c, None, dataset=small_digits(256), **QUIET)


def test_class_weights_balanced_and_listed():
    from jaxcnn.steps import class_weights
    labels = np.array([0, 0, 0, 1, 2, 2])  # 6 images: 3, 1, 2
    assert class_weights("balanced", labels, 3) == pytest.approx((6 / 9, 6 / 3, 6 / 6))
    assert class_weights("1, 2.5, 3", labels, 3) == (1.0, 2.5, 3.0)
    assert class_weights("", labels, 3) is None
    for bad in ("1,2", "1,0,2", "a,b,c", "1,nan,1"):
        with pytest.raises(UserError, match="must be balanced or 3 positive numbers"):
            class_weights(bad, labels, 3)
    with pytest.raises(UserError, match="class 3 has no training images"):
        class_weights("balanced", labels, 4)


def test_weighted_loss_is_the_weighted_mean_and_the_logged_sums_are_not():
    from jaxcnn.steps import loss_and_metrics
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 3)).astype(np.float32), np.array([0, 0, 0, 1, 2, 2])
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last row is padding
    w = (0.5, 2.0, 4.0)
    per = -jax.nn.log_softmax(logits)[np.arange(6), labels]
    wl = np.array(w)[labels] * mask
    loss, sums = loss_and_metrics(logits, labels, 0.0, mask, w)
    assert float(loss) == pytest.approx(float((per * wl).sum() / wl.sum()), rel=1e-6)
    assert float(sums["loss"]) == pytest.approx(float((per * mask).sum()), rel=1e-6)
    plain, _ = loss_and_metrics(logits, labels, 0.0, mask)
    assert float(plain) != pytest.approx(float(loss), rel=1e-3)


def test_a_run_with_balanced_weights_trains_on_them(data, plain):
    c = _config(64, 1)
    c.data.class_weights = "balanced"
    r = train_and_evaluate(c, None, dataset=data, model=_model(), **QUIET)
    assert r.final["train_loss"] != plain.final["train_loss"]  # another objective, other steps
    c.data.class_weights = "1,2"
    with pytest.raises(UserError, match="data.class_weights='1,2' must be balanced or 10"):
        train_and_evaluate(c, None, dataset=data, **QUIET)
