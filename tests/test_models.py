"""Models: exact parameter counts, output shapes and dtypes, and the CPU conv/pool fast paths."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import models
from jaxcnn.errors import UserError
from jaxcnn.models.layers import conv_cpu, conv_general_dilated, max_pool_2x2, micro_batch_size


@pytest.mark.parametrize("name, classes, count", [
    ("cnn", 10, 4_224_970),  # the seed network, layer for layer
    ("cnn", 100, 4_317_220),  # 1024 x 90 more weights and 90 more biases
    ("resnet20", 10, 269_722),  # He et al. 2016, option-A shortcuts: "0.27M"
    ("resnet18", 10, 11_173_962),  # the CIFAR ResNet-18
])
def test_parameter_counts(name, classes, count):
    model = models.create(name, num_classes=classes, rngs=nnx.Rngs(0))
    assert models.count_params(model) == count


# The zoo from the papers takes seconds each to build: tests/test_zoo.py checks it (slow).
ZOO = {"alexnet", "vgg11_bn", "vgg16_bn", "densenet_bc_100", "resnet56", "resnet110", "resnet50"}


@pytest.mark.parametrize("name", sorted(set(models.MODELS) - ZOO))
def test_output_shapes_and_dtypes(name):
    model = models.create(name, num_classes=7, dtype="bfloat16", rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
    for train in (True, False):  # traced, shapes only: running bf16 on a CPU is slow
        y = jax.eval_shape(lambda s, x, t=train: nnx.merge(graphdef, s)(x, train=t), state, x)
        assert y.shape == (3, 7)
        assert y.dtype == jnp.bfloat16
    params = nnx.state(model, nnx.Param)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}


def test_cnn_other_input_sizes():
    model = models.create("cnn", num_classes=10, image_size=28, in_channels=1,
                          rngs=nnx.Rngs(0))
    assert model(jnp.zeros((2, 28, 28, 1))).shape == (2, 10)


def test_unknown_model_and_bad_classes():
    with pytest.raises(UserError, match="unknown model 'vgg'.*cnn"):
        models.create("vgg", num_classes=10, rngs=nnx.Rngs(0))
    with pytest.raises(UserError, match="num_classes"):
        models.create("cnn", num_classes=0, rngs=nnx.Rngs(0))


def test_init_is_pytorch_default_and_seeded():
    a = models.create("cnn", num_classes=10, rngs=nnx.Rngs(1))
    b = models.create("cnn", num_classes=10, rngs=nnx.Rngs(1))
    c = models.create("cnn", num_classes=10, rngs=nnx.Rngs(2))
    np.testing.assert_array_equal(a.fc1.kernel[...], b.fc1.kernel[...])
    assert not np.array_equal(a.fc1.kernel[...], c.fc1.kernel[...])
    # PyTorch's default for Conv2d and Linear, weights and biases: U(-b, b), b = 1/sqrt(fan_in)
    # (kaiming_uniform with a=sqrt(5) for the weights), fan_in = in_channels x 3 x 3 for a conv.
    fan_in = {"conv1": 3 * 9, "conv2": 32 * 9, "fc1": 4096, "fc2": 1024}
    biases = []
    for layer, n in fan_in.items():
        bound = 1 / np.sqrt(n)
        k = np.asarray(getattr(a, layer).kernel[...])
        b = np.asarray(getattr(a, layer).bias[...])
        assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound, layer
        assert abs(k.std() * np.sqrt(3) / bound - 1) < 0.05, layer  # uniform: std = b / sqrt(3)
        assert np.abs(b).max() <= bound, layer
        biases.append(b / bound)
    biases = np.concatenate(biases)  # 1,130 values, each U(-1, 1) once scaled
    assert abs(biases.std() * np.sqrt(3) - 1) < 0.1 and abs(biases.mean()) < 0.1


# Every convolution shape of the zoo: 3x3 stride 1 (im2col below 9 input channels), 3x3 stride
# 2 (ResNets, even and odd sizes), 1x1 stride 2 (ResNet-18's projections), 2x2 VALID (airbench).
CONVS = [(8, 3, 5, 3, 1, "SAME"), (8, 32, 5, 3, 1, "SAME"), (8, 16, 32, 3, 2, "SAME"),
         (9, 16, 32, 3, 2, "SAME"), (8, 16, 32, 1, 2, "VALID"), (8, 3, 24, 2, 1, "VALID"),
         (7, 12, 6, 3, 2, "VALID"), (8, 4, 6, 3, 2, "SAME")]


@pytest.mark.parametrize("size, cin, cout, k, stride, padding", CONVS)
def test_cpu_conv_matches_xla_conv_and_its_gradients(size, cin, cout, k, stride, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    pads = tuple(jax.lax.padtype_to_pads((size, size), (k, k), (stride, stride), padding))

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                            dimension_numbers=dn)

    def wrapped(x, w):  # what nnx.Conv calls: conv_cpu on CPUs, XLA's conv elsewhere
        return conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn)

    def grads(conv):
        return jax.grad(lambda x, w: jnp.sin(conv(x, w)).sum(), argnums=(0, 1))(x, w)

    # "highest": a GPU runner would otherwise compare TF32 convolutions at float32 tolerances
    with jax.default_matmul_precision("highest"):
        for conv in (lambda x, w: conv_cpu(x, w, (stride, stride), pads), wrapped):
            np.testing.assert_allclose(conv(x, w), ref(x, w), rtol=1e-5, atol=1e-4)
            for got, want in zip(grads(conv), grads(ref), strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_max_pool_matches_flax():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    np.testing.assert_array_equal(max_pool_2x2(x), linen.max_pool(x, (2, 2), (2, 2)))
    g = jax.grad(lambda x: (max_pool_2x2(x) ** 2).sum())(x)
    g_ref = jax.grad(lambda x: (linen.max_pool(x, (2, 2), (2, 2)) ** 2).sum())(x)
    np.testing.assert_array_equal(g, g_ref)


def test_micro_batch_sizes():
    assert micro_batch_size(1024) == 16
    assert micro_batch_size(1000) == 20  # the divisor nearest 16 in [8, 32]
    assert micro_batch_size(32) is None  # small batches run whole
    assert micro_batch_size(257) is None  # prime: no micro-batch divides it


def test_cnn_inference_in_micro_batches_equals_whole_batch():
    model = models.create("cnn", num_classes=10, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (192, 32, 32, 3))  # 12 micro-batches of 16
    whole = jax.jit(lambda x: model(x, train=True))(x)  # the training path runs whole batches
    micro = jax.jit(lambda x: model(x, train=False))(x)
    np.testing.assert_allclose(micro, whole, rtol=0, atol=1e-5)
    lowered = jax.jit(lambda x: model(x)).trace(x).lower(lowering_platforms=("cpu",))
    assert "while" in lowered.as_text()  # really looped when lowered for a CPU
