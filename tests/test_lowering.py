"""Backend choice per lowering: one trace lowers the CPU fast paths for CPUs and XLA's own
convolutions for CUDA. Checked on the CPU by cross-lowering (no GPU needed): the train step,
the evaluation forward and the exported artifact, for every model of the zoo."""

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from jaxcnn import export, inference, models
from jaxcnn.config import default_config
from jaxcnn.data.pipeline import Batch
from jaxcnn.models.airbench import Whitening
from jaxcnn.models.layers import CPU_CONV_SCOPE, CPU_MICRO_BATCH_SCOPE
from jaxcnn.steps import Preprocess, StepConfig, TrainState, forward, train_step

MODELS = {"cnn": {}, "resnet20": {}, "resnet18": {}, "airbench": {"widths": (8, 16, 16)}}
# The zoo from the papers, full size: tracing and lowering their train steps takes seconds each
# (DenseNet-BC's 99 convolutions the longest), so they run in the slow set. ResNet-56 and -110
# are resnet20's code with more blocks (7 and 15 s more here for nothing new).
ZOO = ["alexnet", "vgg11_bn", "vgg16_bn", "densenet_bc_100", "resnet50"]
NAMES = [*MODELS, *(pytest.param(name, marks=pytest.mark.slow) for name in ZOO)]
B = 64  # a batch the CNN's CPU inference splits into micro-batches


def _setup(name):
    # Shapes only: lowering needs no values, and initialising a deep model on a CPU takes long.
    model = nnx.eval_shape(lambda: models.create(name, num_classes=10, rngs=nnx.Rngs(0),
                                                 **MODELS.get(name, {})))
    tx = optax.sgd(0.1)
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, model_state,
                       jax.eval_shape(tx.init, params))
    cfg = StepConfig(graphdef, tx, Preprocess((0.5,) * 3, (0.5,) * 3), 10, 2, True)
    images = jax.ShapeDtypeStruct((B, 32, 32, 3), jnp.uint8)
    batch = Batch(images, jax.ShapeDtypeStruct((B,), jnp.int32))
    n_convs = sum(isinstance(m, nnx.Conv | Whitening) for _, m in nnx.iter_graph(model))
    return model, cfg, state, images, batch, n_convs


def _lowered(name, platform):
    """StableHLO (with source locations) of the train step and the forward, for `platform`."""
    _, cfg, state, images, batch, n_convs = _setup(name)
    step = jax.jit(lambda s, b: train_step(s, b, jax.random.key(0), cfg))
    fwd = jax.jit(lambda s, x: forward(cfg, s.params, s.model_state, x))
    texts = [f.trace(state, x).lower(lowering_platforms=(platform,)).as_text(debug_info=True)
             for f, x in ((step, batch), (fwd, images))]
    return texts, n_convs


def _assert_portable(text: str):
    assert "f64" not in text  # no float64 sneaked in (GPUs run it slowly, TPUs not at all)
    assert "callback" not in text.lower()  # no host round trip


@pytest.mark.parametrize("name", NAMES)
def test_cuda_lowering_has_xla_convolutions_only(name):
    (step, fwd), n_convs = _lowered(name, "cuda")
    for text in (step, fwd):
        assert CPU_CONV_SCOPE not in text and CPU_MICRO_BATCH_SCOPE not in text
        _assert_portable(text)
    # the forward: one XLA convolution per conv layer, no micro-batch loop, and matmuls only
    # for the dense layers (no im2col matmul for a first conv)
    assert fwd.count("stablehlo.convolution") == n_convs
    assert "stablehlo.while" not in fwd
    n_dense = {"cnn": 2}.get(name, 1)
    assert fwd.count("stablehlo.dot_general") == n_dense


@pytest.mark.parametrize("name", list(MODELS))
def test_cpu_lowering_keeps_the_fast_path(name):
    (step, fwd), _ = _lowered(name, "cpu")
    assert CPU_CONV_SCOPE in step and CPU_CONV_SCOPE in fwd
    _assert_portable(step)
    # the CNN's inference runs its conv stack over micro-batches of 16 on CPUs
    assert (CPU_MICRO_BATCH_SCOPE in fwd) == (name == "cnn")


def test_exported_artifact_for_cuda_carries_no_cpu_path():
    model = models.create("cnn", num_classes=10, rngs=nnx.Rngs(0))
    config = default_config()
    run = inference.Run(model, config, tuple(map(str, range(10))),
                        {"image_shape": (32, 32, 3)})
    serve, _ = export.inference_fn(run)
    spec = jax.ShapeDtypeStruct((jax.export.symbolic_shape("b")[0], 32, 32, 3), jnp.uint8)
    cuda = jax.export.export(jax.jit(serve), platforms=("cuda",))(spec)
    text = cuda.mlir_module()
    assert cuda.platforms == ("cuda",)
    assert "stablehlo.while" not in text and text.count("stablehlo.convolution") == 2
    assert text.count("stablehlo.dot_general") == 2
    _assert_portable(text)
    both = jax.export.export(jax.jit(serve), platforms=("cpu", "cuda"))(spec)
    assert both.platforms == ("cpu", "cuda")  # one artifact, each platform its own path
