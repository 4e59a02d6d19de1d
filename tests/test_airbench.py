"""airbench's recipe: the network, whitening, dirac init, alternating flip, TTA, its optimizer,
lookahead, and a tiny run of configs/cifar10_airbench.py through train_and_evaluate."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.cifar10_airbench import get_config
from jaxcnn import inference, lookahead, models, optim, tta
from jaxcnn.config import check_config
from jaxcnn.data import load
from jaxcnn.data.pipeline import Batch, alternating_flip, random_crop
from jaxcnn.errors import UserError
from jaxcnn.models.airbench import whitening_kernel
from jaxcnn.train import train_and_evaluate

TINY = (8, 16, 16)  # widths of the small network the tests train


@pytest.fixture(scope="module")
def tiny_model():
    return models.create("airbench", num_classes=10, rngs=nnx.Rngs(0), widths=TINY)


def _patches(x_NxHxWxC):
    """Every 2x2 patch, flattened in (dy, dx, c) order (numpy, float64)."""
    x = np.asarray(x_NxHxWxC, np.float64)
    n, h, w, c = x.shape
    return np.concatenate([x[:, i:h - 1 + i, j:w - 1 + j] for i in range(2) for j in range(2)],
                          -1).reshape(-1, 4 * c)


def _second_moment(p_PxD):
    return p_PxD.T @ p_PxD / len(p_PxD)


def _correlated_images(n=64, size=16):
    """Smooth colour noise: neighbouring pixels and channels strongly correlated."""
    z = np.random.default_rng(0).normal(size=(n, size + 2, size + 2, 3))
    z = z @ np.asarray([[1.0, 0.6, 0.3], [0.0, 0.8, 0.5], [0.0, 0.0, 0.6]])
    x = (z[:, :-2, :-2] + z[:, 1:-1, 1:-1] + z[:, 2:, 2:] + z[:, 1:-1, :-2]) / 2
    return jnp.asarray(x, jnp.float32)


def test_parameter_count_is_airbench94s():
    abstract = nnx.eval_shape(lambda: models.create("airbench", num_classes=10,
                                                    rngs=nnx.Rngs(0)))
    # whitening bias 24; conv groups 13,824 + 36,864 + 128, 147,456 + 589,824 + 512,
    # 589,824 + 589,824 + 512 (BatchNorm: biases only); head 256 x 10, no bias
    assert models.count_params(abstract) == 1_971_352
    assert abstract.whiten.kernel.shape == (2, 2, 3, 24)
    assert not isinstance(abstract.whiten.kernel, nnx.Param)  # frozen: no gradient, no decay


def test_whitening_init_whitens_the_patches_it_was_set_from(tiny_model):
    x = _correlated_images()
    patches_PxD = _patches(x)
    assert np.abs(_second_moment(patches_PxD) - np.eye(12)).max() > 0.5  # far from white
    nnx.jit(lambda m, v: m.init_from_data(v))(tiny_model, x)  # as the engine runs it: jitted
    w = np.asarray(tiny_model.whiten.kernel[...], np.float64)
    np.testing.assert_allclose(w[..., 12:], -w[..., :12])  # the negated copy, for the GELU
    y_PxD = patches_PxD @ w[..., :12].reshape(12, 12)  # the conv as a matmul over patches
    # identity up to eps=5e-4 against eigenvalues > 0.05
    np.testing.assert_allclose(_second_moment(y_PxD), np.eye(12), atol=0.01)
    conv = jax.jit(lambda v: tiny_model.whiten(v) - tiny_model.whiten.bias[...])(x)
    np.testing.assert_allclose(np.asarray(conv)[..., :12].reshape(-1, 12), y_PxD, atol=1e-4)


def test_whitening_filters_run_from_the_largest_to_the_smallest_variance():
    x = _correlated_images()
    eigenvalues = np.linalg.eigvalsh(_second_moment(_patches(x)))  # ascending
    w_DxD = np.asarray(jax.jit(whitening_kernel)(x), np.float64)[..., :12].reshape(12, 12)
    directions_DxD = w_DxD / np.linalg.norm(w_DxD, axis=0)
    variance_D = np.diag(_second_moment(_patches(x) @ directions_DxD))
    np.testing.assert_allclose(variance_D, eigenvalues[::-1], rtol=1e-3)


def test_dirac_init_makes_each_conv_an_identity_on_its_first_channels(tiny_model):
    group = tiny_model.blocks[1]  # 8 -> 16 channels, then 16 -> 16
    x8, x16 = (np.random.default_rng(1).normal(size=(2, 6, 6, c)).astype(np.float32)
               for c in (8, 16))
    y = np.asarray(jax.jit(lambda v: group.conv1(v))(x8))
    np.testing.assert_allclose(y[..., :8], x8, atol=1e-6)  # outputs 0..7 copy inputs 0..7
    assert np.abs(y[..., 8:]).max() > 0.01  # the other 8 outputs: PyTorch's random init
    np.testing.assert_allclose(jax.jit(lambda v: group.conv2(v))(x16), x16, atol=1e-6)


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    n = 64
    images = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 1)).astype(np.uint8)
    rows = np.arange(n, dtype=np.int32)
    flip = jax.jit(alternating_flip)
    key = jax.random.key(3)

    def mirrored_rows(epoch, order):
        """Which rows of the data set the flip mirrors in `epoch`, given in batch `order`."""
        out = np.asarray(flip(key, Batch(images[order], rows[order], rows[order]), epoch).image)
        mirrored = np.asarray([np.array_equal(o, i[:, ::-1])
                               for o, i in zip(out, images[order], strict=True)])
        kept = np.asarray([np.array_equal(o, i) for o, i in zip(out, images[order], strict=True)])
        assert (mirrored != kept).all()  # each image exactly one or the other
        result = np.zeros(n, bool)
        result[order] = mirrored
        return result

    e0 = mirrored_rows(0, rows)
    assert 16 < e0.sum() < 48  # a random half, roughly
    np.testing.assert_array_equal(mirrored_rows(1, rows), ~e0)  # the others next epoch
    np.testing.assert_array_equal(mirrored_rows(2, rows[::-1]), e0)  # by row, in any order
    np.testing.assert_array_equal(mirrored_rows(5, np.roll(rows, 7)), ~e0)


def test_translate_is_a_window_of_the_reflect_padded_image():
    x = jnp.asarray(np.random.default_rng(1).integers(0, 256, (16, 6, 6, 2)), jnp.uint8)
    out = np.asarray(random_crop(jax.random.key(2), x, 2, "reflect"))
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    offsets = set()
    for o, p in zip(out, padded, strict=True):
        hits = [(i, j) for i in range(5) for j in range(5)
                if np.array_equal(o, p[i:i + 6, j:j + 6])]
        assert hits, "a crop is not a window of the reflect-padded image"
        offsets.add(hits[0])
    assert len(offsets) > 4


@pytest.mark.parametrize("field, value", [("data.flip", "sideways"), ("data.crop_fill", "edge"),
                                          ("train.tta_level", 3), ("optim.bias_lr_scale", 0.0),
                                          ("optim.lookahead_every", -1)])
def test_bad_recipe_fields_are_refused(field, value):
    c = get_config()
    group, name = field.split(".")
    c[group][name] = value
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        check_config(c)


def test_tta_levels_average_the_views(tiny_model):
    x = jax.random.normal(jax.random.key(4), (4, 32, 32, 3))

    apply = jax.jit(lambda v: tiny_model(v, train=False))

    mirrored = x[:, :, ::-1]
    np.testing.assert_allclose(tta.predict(apply, x, 0), apply(x), atol=1e-6)
    np.testing.assert_allclose(tta.predict(apply, x, 1), (apply(x) + apply(mirrored)) / 2,
                               atol=1e-5)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [padded[:, :32, :32], padded[:, 2:, 2:]]
    want = (0.5 * (apply(x) + apply(mirrored)) / 2
            + sum(0.25 * (apply(v) + apply(v[:, :, ::-1])) / 2 for v in views))
    np.testing.assert_allclose(tta.predict(apply, x, 2), want, atol=1e-5)
    assert float(jnp.abs(tta.predict(apply, x, 2) - apply(x)).max()) > 1e-4


def test_optimizer_groups_in_airbench_units(tiny_model):
    """One Nesterov step from zero momentum moves p by -(1 + m) x lr x (g + l2 x p)."""
    c = get_config()
    c.train.batch_size, c.optim.lookahead_every = 512, 0
    spe, m = 10, c.optim.momentum
    schedule = optim.make_schedule(c.optim, spe, c.train.epochs)
    tx = optim.make_train_optimizer(c, schedule, tiny_model, spe)
    params = nnx.state(tiny_model, nnx.Param)
    grads = jax.tree.map(jnp.ones_like, params)
    lr = 11.5 * 512 / 1024 / (1 + 1 / (1 - m)) * 0.2  # per 1024; the schedule starts at 0.2
    l2 = 0.0153 / 11.5  # decay per 1024 examples, as an L2 coefficient

    def value(tree, *path):
        return np.asarray(functools.reduce(lambda t, k: t[k], path, tree)[...])

    updates, state = tx.update(grads, tx.init(params), params)
    kernel = value(params, "blocks", 0, "conv1", "kernel")
    np.testing.assert_allclose(value(updates, "blocks", 0, "conv1", "kernel"),
                               -(1 + m) * lr * (1 + l2 * kernel), rtol=1e-5)
    bias = value(params, "blocks", 0, "norm1", "bias")  # BatchNorm: 64 x lr, same decay step
    np.testing.assert_allclose(value(updates, "blocks", 0, "norm1", "bias"),
                               -(1 + m) * 64 * lr * (1 + l2 / 64 * bias), rtol=1e-5)
    # the whitening bias learns for whiten_bias_epochs=3 epochs (30 steps), then never moves
    for step in range(1, 31):
        updates, state = tx.update(grads, state, params)
        moved = np.abs(value(updates, "whiten", "bias")).max()
        assert (moved > 0) == (step < 30), step
    assert np.abs(value(updates, "head", "kernel")).max() > 0


class _AirbenchLookahead:
    """airbench94.py's `LookaheadState`, in numpy: a copy of every float tensor of the network,
    lerped towards it and copied back into it."""

    def __init__(self, net):
        self.net_ema = {k: v.copy() for k, v in net.items()}

    def update(self, net, decay):
        for ema_param, net_param in zip(self.net_ema.values(), net.values(), strict=True):
            ema_param += (1 - decay) * (net_param - ema_param)  # .lerp_(net_param, 1 - decay)
            net_param[...] = ema_param  # net_param.copy_(ema_param)


def _airbench_loop(net, grad, epochs, steps_per_epoch, lr, momentum, every, start_epochs):
    """The weights after each step of airbench94.py's `main` loop (its lookahead lines), with
    torch.optim.SGD(momentum) as the optimizer: every epoch, every step."""
    total_train_steps = epochs * steps_per_epoch
    buf = {k: np.zeros_like(v) for k, v in net.items()}
    lookahead_state, current_steps, history = None, 0, []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            g = grad(net, current_steps)
            for k in net:  # optimizer.step(): buf = m * buf + g; p -= lr * buf
                buf[k] = momentum * buf[k] + g[k]
                net[k] -= lr * buf[k]
            current_steps += 1
            if epoch >= start_epochs and current_steps % every == 0:
                if lookahead_state is None:
                    lookahead_state = _AirbenchLookahead(net)
                else:
                    base_rho = 0.95 ** every
                    rho = base_rho * (current_steps / total_train_steps) ** 3.0
                    lookahead_state.update(net, decay=rho)
            if current_steps >= total_train_steps:
                break
            if current_steps % steps_per_epoch:
                history.append({k: v.copy() for k, v in net.items()})
        if lookahead_state is not None:
            lookahead_state.update(net, decay=1.0)  # copy back after each epoch
        history.append({k: v.copy() for k, v in net.items()})
    return history


def test_lookahead_is_airbench94s():
    """jaxcnn's optimizer with lookahead, step for step against airbench94.py's own loop
    (KellerJordan/cifar10-airbench: class LookaheadState and the `ema` lines of main): no
    averaging before epoch `start`, the average created at the first multiple of `every` from
    then on, synced every `every` steps with the cubic decay, copied back after every epoch."""
    epochs, spe, every, start, lr, m = 6, 4, 3, 2, 0.05, 0.5
    # steps 1-8 plain; 9 creates the average; 12, 15, 18, 21 sync; 12, 16, 20, 24 copy back
    c = get_config()
    c.optim.name, c.optim.learning_rate, c.optim.momentum, c.optim.nesterov = "sgd", lr, m, False
    c.optim.schedule, c.optim.weight_decay, c.optim.decoupled_hparams = "constant", 0.0, False
    c.optim.bias_lr_scale, c.optim.whiten_bias_epochs = 1.0, 0
    c.optim.lookahead_every, c.optim.lookahead_start_epochs = every, start
    c.train.epochs = epochs
    tx = optim.make_train_optimizer(c, optim.make_schedule(c.optim, spe, epochs), None, spe)

    targets = np.random.default_rng(0).normal(size=(epochs * spe, 3, 2))

    def grad(net, step):  # 0.5 |w - target_step|^2 + 0.5 b^2 x |w|^2: moves, and not linearly
        w, b = net["w"], net["b"]
        return {"w": w - targets[step] + b[0] ** 2 * w, "b": b * (w ** 2).sum()}

    init = {"w": np.ones((3, 2)), "b": np.asarray([0.5, -1.0])}
    want = _airbench_loop({k: v.copy() for k, v in init.items()}, grad, epochs, spe, lr, m,
                          every, start)
    p = {k: jnp.asarray(v, jnp.float32) for k, v in init.items()}
    state = tx.init(p)
    update = jax.jit(tx.update)
    for step in range(epochs * spe):
        updates, state = update(grad({k: np.asarray(v, np.float64) for k, v in p.items()}, step),
                                state, p)
        p = optax.apply_updates(p, updates)
        for k in p:  # float32 here against float64 there, over 24 steps
            np.testing.assert_allclose(p[k], want[step][k], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{k} after step {step + 1}")
    # the lookahead did act: without it the weights end elsewhere
    plain = _airbench_loop({k: v.copy() for k, v in init.items()}, grad, epochs, spe, lr, m,
                           every, epochs)
    assert np.abs(plain[-1]["w"] - want[-1]["w"]).max() > 1e-2


def test_lookahead_starting_after_the_run_leaves_the_optimizer_alone():
    """The 2-epoch CPU cut of the airbench recipe (start 3) never averages."""
    inner = optax.sgd(0.1, momentum=0.85, nesterov=True)
    tx = lookahead.lookahead(inner, every=5, steps_per_epoch=4, epochs=2, start_epochs=3)
    p = {"w": jnp.asarray([1.0, -2.0])}
    s, s_inner = tx.init(p), inner.init(p)
    for step in range(8):
        g = {"w": p["w"] - step}
        u, s = tx.update(g, s, p)
        u_inner, s_inner = inner.update(g, s_inner, p)
        np.testing.assert_array_equal(u["w"], u_inner["w"])
        p = optax.apply_updates(p, u)


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("airbench"))


@pytest.fixture(scope="module")
def tiny_run(tiny_workdir):
    c = get_config()
    c.data.name = "digits"
    c.model.airbench.widths = TINY
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 2, 128, 360
    c.train.log_every_steps, c.train.tta_level = 0, 1
    c.train.steps_per_call = 1  # 11 steps an epoch: one compiled step, not loops of 8, 2 and 1
    return train_and_evaluate(c, tiny_workdir, progress=False, log=lambda *_: None,
                              dataset=load("digits"))


def test_tiny_run_learns_and_reports_its_time(tiny_run):
    h = tiny_run.history
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    final = tiny_run.final
    assert final["test_accuracy"] > 0.2  # chance: 0.1 (2 epochs x 11 steps on digits)
    assert final["tta_level"] == 1 and 0.1 < final["test_accuracy_no_tta"] < 1
    assert final["run_seconds"] == pytest.approx(final["init_seconds"] + final["train_seconds"]
                                                 + final["final_eval_seconds"])
    assert final["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in h))
    assert final["compile_seconds"] > 0


def test_tiny_run_loads_back_with_its_model_options(tiny_run, tiny_workdir):
    run = inference.load_run(tiny_workdir)  # widths (8, 16, 16) from the run's config
    assert models.count_params(run.model) == models.count_params(tiny_run.model)
    data = load("digits")
    # predictions use the run's test-time augmentation (level 1), as its final evaluation did
    for level, key in ((None, "test_accuracy"), (0, "test_accuracy_no_tta")):
        logits = inference.predict_logits(run.model, data.test_images, run.config,
                                          tta_level=level)
        accuracy = float((np.asarray(logits).argmax(-1) == data.test_labels).mean())
        assert accuracy == pytest.approx(tiny_run.final[key], abs=1e-9), key
