"""The model zoo from the papers: exact parameter counts and forward FLOPs against the published
figures, and (slow) each family through the engine, export and fine-tuning.

Counts and FLOPs come from abstract models (`summary.abstract_model`: shapes, no values), so
they cost tracing only; the two deepest models (DenseNet-BC-100, ResNet-110) take seconds to
trace and run in the slow set.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import QUIET, small_digits
from flax import nnx

from jaxcnn import checkpoint, export, inference, models, serving, summary
from jaxcnn.config import default_config
from jaxcnn.data import Dataset
from jaxcnn.errors import UserError
from jaxcnn.train import train_and_evaluate


def _cifar_resnet_macs(n: int) -> int:
    """He et al.'s CIFAR ResNet-(6n+2) at 32x32, by hand: stem, three stages of 2n 3x3 convs
    (the first of stages 2 and 3 strided, from half the channels), head."""
    macs = 32 * 32 * 16 * 27
    for cin, cout, size in ((16, 16, 32), (16, 32, 16), (32, 64, 8)):
        macs += size * size * cout * 9 * cin + (2 * n - 1) * size * size * cout * 9 * cout
    return macs + 64 * 10


ALEXNET_MACS = (8 * 8 * 64 * 11 * 11 * 3  # conv1, 11x11/4 with padding 5: 32 -> 8
                + 4 * 4 * 192 * 5 * 5 * 64  # conv2 after a 2x2 pool
                + 2 * 2 * (384 * 9 * 192 + 256 * 9 * 384 + 256 * 9 * 256)  # conv3-5
                + 256 * 10)  # head, after the last pool: 1x1x256

# name: (classes, image, exact parameters, exact multiply-adds, the published figure of
# multiply-adds and the digits it is published to). Sources in each model's docstring.
ZOO = {
    "alexnet": (10, 32, 2_472_266, ALEXNET_MACS, None),
    "vgg11_bn": (10, 32, 9_231_114, 152_769_536, None),
    # Li et al. 2017 (Pruning Filters for Efficient ConvNets), Table 2: VGG-16 3.13e8
    "vgg16_bn": (10, 32, 14_728_266, 313_201_664, (3.13e8, 1e6)),
    # ~0.29 G multiply-adds, the figure usually quoted (the paper gives none for CIFAR)
    "densenet_bc_100": (10, 32, 769_162, 287_929_692, (0.29e9, 1e7)),
    # Li et al. 2017, Table 2: ResNet-56 1.25e8, ResNet-110 2.53e8
    "resnet56": (10, 32, 853_018, _cifar_resnet_macs(9), (1.25e8, 1e6)),
    "resnet110": (10, 32, 1_727_962, _cifar_resnet_macs(18), (2.53e8, 1e6)),
    # torchvision: 25,557,032 parameters, 4.09 GFLOPS (multiply-adds) at 224x224
    "resnet50": (1000, 224, 25_557_032, 4_089_184_256, (4.09e9, 1e7)),
}
DEEP = {"densenet_bc_100", "resnet110"}  # seconds of tracing each


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n
                                  for n in ZOO])
def test_parameters_and_flops_match_the_references(name):
    classes, size, params, macs, published = ZOO[name]
    model = summary.abstract_model(name, classes, (size, size, 3))
    s = summary.summarize(model, (size, size, 3))
    assert models.count_params(model) == s.params == params
    assert s.flops == 2 * macs  # summary counts 2 x multiply-adds
    if published is not None:
        figure, unit = published
        assert round(macs / unit) == round(figure / unit), (macs, figure)


def test_resnet_counts_from_their_blocks():
    # ResNet-110 option A (no projection parameters); its option-B variant (1x1 projection +
    # BN at the two downsampling blocks, as MemCNN's table counts it) has 1,730,714.
    assert 1_727_962 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64) == 1_730_714
    assert _cifar_resnet_macs(3) == 40_551_040  # ResNet-20, summary's figure in test_summary


def test_image_sizes_and_too_small_images():
    wide = summary.abstract_model("alexnet", 10, (64, 48, 1))
    assert wide.conv1.kernel.shape == (11, 11, 1, 64)
    assert wide.head.kernel.shape == (2 * 1 * 256, 10)  # 64x48 -> 16x12 -> three pools: 2x1
    assert summary.abstract_model("vgg11_bn", 10, (40, 40, 3)).head.kernel.shape == (512, 10)
    for name, shape, message in (("alexnet", (28, 28, 3), "at least 29x29"),
                                 ("vgg16_bn", (32, 16, 3), "at least 32x32"),
                                 ("densenet_bc_100", (3, 8, 3), "at least 4x4")):
        with pytest.raises(UserError, match=message):
            summary.abstract_model(name, 10, shape)


# ---- slow: each family through the engine, export and fine-tuning
#
# Small members of each family (the classes and code paths of the registered models, a
# fraction of their layers) keep compilation to seconds; the full-size models' CUDA lowering
# is in tests/test_lowering.py. He et al.'s CIFAR ResNets share resnet20's code, which
# tests/test_finetune.py and test_train.py run.
TINY = {
    "alexnet": dict(),  # 2.5M parameters, but only five convs
    "vgg11_bn": dict(layers=(8, "M", 16, "M", 16, "M", 16, "M", 16, "M")),
    "densenet_bc_100": dict(depth=10, growth=4),  # one bottleneck layer per block
    "resnet50": dict(stage_sizes=(1, 1, 1, 1), widths=(4, 4, 8, 8)),
}


def _data(size: int, classes: int) -> Dataset:
    d = small_digits(train=1437, test=360)
    keep = np.flatnonzero(d.train_labels < classes)[:8 * classes]
    test = np.flatnonzero(d.test_labels < classes)[:20]
    up = size // 32

    def grow(x):  # nearest-neighbour upscaling keeps the digits' pixels exact
        return np.repeat(np.repeat(x, up, axis=1), up, axis=2)

    return Dataset(grow(d.train_images[keep]), d.train_labels[keep], grow(d.test_images[test]),
                   d.test_labels[test], d.class_names[:classes], f"digits-{classes}")


def _config(name: str):
    c = default_config()
    c.model.name = name
    c.optim.name, c.optim.learning_rate = "sgd", 0.01
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 1, 8, 20
    c.train.steps_per_call = 1  # one compiled step, no loop
    c.checkpoint.async_save = False
    return c


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_trains_exports_and_fine_tunes(name, tmp_path):
    size = 64 if name == "resnet50" else 32

    def tiny(classes):
        return models.MODELS[name](classes, image_size=size, rngs=nnx.Rngs(0), **TINY[name])

    # one epoch of 2 steps through the engine, checkpointed
    first, model = _data(size, 2), tiny(2)
    init = [np.array(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]  # host copies
    pre = train_and_evaluate(_config(name), str(tmp_path / "pre"), dataset=first, model=model,
                             **QUIET)
    assert np.isfinite(pre.final["train_loss"]) and np.isfinite(pre.final["test_loss"])
    trained = jax.tree.leaves(nnx.state(pre.model, nnx.Param))
    assert any(not np.array_equal(a, b) for a, b in zip(init, trained, strict=True))

    # the export (cpu and cuda in one artifact) computes the evaluation's figures: its logits
    # on the test images give the run's final test loss and accuracy
    run = inference.load_run(str(tmp_path / "pre"), model=nnx.eval_shape(lambda: tiny(2)))
    meta = export.export_run(run, str(tmp_path / "export"))
    assert meta["platforms"] == ["cpu", "cuda"]
    served = serving.classify(serving.load(str(tmp_path / "export")), first.test_images)
    logits = served["logits"].astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    labels = first.test_labels
    assert abs(-log_p[np.arange(len(labels)), labels].mean() - pre.final["test_loss"]) < 1e-4
    assert abs((logits.argmax(1) == labels).mean() - pre.final["test_accuracy"]) < 1e-6

    # a linear probe on 3 classes: a new head, the backbone exactly as saved
    c = _config(name)
    c.finetune.init_from, c.finetune.mode = str(tmp_path / "pre"), "linear_probe"
    r = train_and_evaluate(c, None, dataset=_data(size, 3), model=tiny(3), **QUIET)
    head = type(r.model).HEAD
    assert getattr(r.model, head).out_features == 3
    saved, _ = checkpoint.load_arrays(str(tmp_path / "pre"))
    n = 0
    for group, tree in (("params", nnx.state(r.model, nnx.Param)),
                        ("model_state", nnx.state(r.model, nnx.BatchStat))):
        for keys, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
            path = checkpoint.path_name(keys)
            if not path.startswith(f"{head}/"):
                np.testing.assert_array_equal(v, saved[f"{group}/{path}"], err_msg=path)
                n += 1
    assert n == len([k for k in saved if k.split("/")[0] in ("params", "model_state")
                     and k.split("/")[1] != head])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(ZOO) - DEEP))
def test_full_size_shapes_and_dtypes(name):
    """bfloat16 compute, float32 parameters, logits B x K, in both modes (traced only). The deep
    two: ResNet-110 is ResNet-56's code, DenseNet-BC's full trace is in test_lowering.py."""
    classes, size = ZOO[name][:2]
    model = nnx.eval_shape(lambda: models.create(name, num_classes=7, dtype="bfloat16",
                                                 rngs=nnx.Rngs(0), image_shape=(size, size, 3)))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    for train in (True, False):
        y = jax.eval_shape(lambda s, x, t=train: nnx.merge(graphdef, s)(x, train=t), state, x)
        assert (y.shape, y.dtype) == ((2, 7), jnp.bfloat16)
    params = nnx.state(model, nnx.Param)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}


CONFIGS = {"alexnet": "cifar10_alexnet", "vgg11_bn": "cifar10_vgg11_bn",
           "vgg16_bn": "cifar10_vgg16_bn", "densenet_bc_100": "cifar10_densenet_bc_100",
           "resnet56": "cifar10_resnet56", "resnet110": "cifar10_resnet110"}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_cifar_model_has_a_config(name):
    import importlib

    from jaxcnn.config import check_config
    config = importlib.import_module(f"configs.{CONFIGS[name]}").get_config()
    check_config(config)
    assert config.model.name == name and config.data.crop_padding == 4 and config.data.flip


@pytest.mark.slow
def test_pooling_and_strided_convs_match_pytorch():
    """The references' PyTorch layers (floor-mode pools, padding k // 2 on both sides of a
    strided conv, max pool 3x3/2 with padding 1), on odd and even sizes."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the bench extra)")
    import torch.nn.functional as F

    from jaxcnn.models.layers import avg_pool_2x2, max_pool_2x2
    from jaxcnn.models.resnet import _tv_conv, max_pool_3x3_s2

    rng = np.random.default_rng(0)
    for size in (7, 8):
        x = rng.normal(size=(2, size, size, 4)).astype(np.float32)
        t = torch.from_numpy(x.transpose(0, 3, 1, 2))

        def nhwc(y):
            return y.numpy().transpose(0, 2, 3, 1)

        np.testing.assert_array_equal(max_pool_2x2(x), nhwc(F.max_pool2d(t, 2)))
        np.testing.assert_allclose(avg_pool_2x2(x), nhwc(F.avg_pool2d(t, 2)), atol=1e-6)
        np.testing.assert_array_equal(max_pool_3x3_s2(x), nhwc(F.max_pool2d(t, 3, 2, 1)))
        for k in (3, 7):  # ResNet-50's 3x3/2 and its 7x7/2 stem
            conv = _tv_conv(4, 5, k, 2, jnp.float32, jnp.float32, nnx.Rngs(0))
            w = np.asarray(conv.kernel[...]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            want = F.conv2d(t, torch.from_numpy(w), stride=2, padding=k // 2)
            np.testing.assert_allclose(conv(x), nhwc(want), rtol=1e-5, atol=1e-5)
