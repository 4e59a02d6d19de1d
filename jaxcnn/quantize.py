"""int8 quantization on qwix: post-training (PTQ) of a trained run, and quantization-aware
training (QAT).

    from jaxcnn import inference, quantize
    run = inference.load_run("runs/cifar10_cnn")
    q = quantize.quantize_run(run, calibration_images_NxHxWxC)   # a Run, int8 inside
    quantize.save_run(q, "runs/cifar10_cnn_int8")   # evaluate / predict / export / serve it

PTQ (`quantize_run`, `scripts/quantize.py`): every convolution and dense layer takes int8
weights (one scale per output channel, absmax) and int8 activations (one static scale per
layer input, the mean over calibration batches of their absmax, from N training images). The
weights are stored as int8 with their scales; the forward computes in int8 with int32
accumulation where XLA does (`lax.conv_general_dilated`, `lax.dot_general` on int8 operands).

QAT (`quant.mode=qat`, usually with `finetune.init_from` a trained run and `finetune.keep_head`):
training runs fake-quantized, int8 weights and int8 activations rounded in the forward pass,
gradients passed straight through (qwix's QtProvider). Activations use per-batch (dynamic)
ranges while training: qwix updates static-range statistics inside its convolution's custom
VJP, which a jitted NNX step cannot do (`TraceContextError`). `scripts/quantize.py` then turns
the trained run into PTQ int8 as for any run, calibrating the static ranges.

Airbench's whitening layer stays float32: its kernel is computed from the data (not a
parameter), and it is 0.01% of the network's weights.

A quantized model traces XLA's own convolutions (`layers.xla_convolutions`): qwix intercepts
`lax.conv_general_dilated` and swaps the kernel for its int8 form, which the CPU convolution
path's im2col reshape would hide from it.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcnn import checkpoint, ownership
from jaxcnn.data.pipeline import normalize
from jaxcnn.errors import UserError
from jaxcnn.models.layers import xla_convolutions

SKIP = "whiten"  # module paths matching this stay float (airbench's data-derived whitening)
CALIBRATION_BATCH = 250


def _qwix():
    try:
        import qwix
    except ImportError:
        raise UserError("quantization needs qwix: pip install -e '.[deploy]'") from None
    return qwix


def rules(*, static_activations: bool) -> list:
    """int8 weights (per output channel) and int8 activations, everywhere but `SKIP`."""
    qwix = _qwix()
    return [qwix.QuantizationRule(module_path=f".*{SKIP}.*"),  # no qtype: left in float
            qwix.QuantizationRule(module_path=".*", weight_qtype="int8", act_qtype="int8",
                                  act_static_scale=static_activations)]


def _with_xla_convolutions(model: nnx.Module) -> nnx.Module:
    """`model` (cloned) whose every call traces XLA's own convolutions (see the module doc)."""
    model = nnx.clone(model)
    cls = type(model)
    if getattr(cls, "_jaxcnn_xla_only", False):
        return model

    def call(self, *args, **kwargs):
        with xla_convolutions():
            return cls.__call__(self, *args, **kwargs)

    model.__class__ = type(cls.__name__, (cls,), {"__call__": call, "_jaxcnn_xla_only": True})
    return model


def qat(model: nnx.Module, image_shape_HxWxC) -> nnx.Module:
    """`model` fake-quantized for training: int8 weights and (per-batch) int8 activations in
    the forward pass, straight-through gradients. Same parameters as `model`."""
    qwix = _qwix()
    sample = jnp.zeros((1, *image_shape_HxWxC), jnp.float32)
    return qwix.quantize_model(_with_xla_convolutions(model),
                               qwix.QtProvider(rules(static_activations=False)), sample,
                               train=False)


def ptq(model: nnx.Module, calibration_NxHxWxC: np.ndarray, preprocess) -> nnx.Module:
    """The int8 PTQ model of float (or QAT-trained) `model`: weights quantized, activation
    scales calibrated on the uint8 images `calibration_NxHxWxC`, normalised by `preprocess`
    (the run's `steps.Preprocess`) as in training."""
    qwix = _qwix()
    static = rules(static_activations=True)
    x = np.asarray(calibration_NxHxWxC)
    if len(x) == 0:
        raise UserError("calibration needs at least one image")
    base = getattr(type(model), "_unquantized_type", None)
    if base is not None:  # a QAT model: calibrate the float network with its trained weights
        model = _float_twin(model, base)
    prep = preprocess._replace(dtype=jnp.float32)
    first = normalize(jnp.asarray(x[:1]), *prep)
    observed = qwix.quantize_model(_with_xla_convolutions(model), qwix.QtProvider(static),
                                   first, train=False)
    # Eagerly, batch by batch: qwix's statistics are Variables updated in place, which a jitted
    # call would have to return (and its conv custom VJP does not allow under jit, above).
    for i in range(0, len(x), CALIBRATION_BATCH):
        observed(normalize(jnp.asarray(x[i:i + CALIBRATION_BATCH]), *prep), train=False)
    return qwix.quantize_model(observed, qwix.PtqProvider(static), first, train=False)


def _float_twin(model: nnx.Module, base: type) -> nnx.Module:
    twin = nnx.clone(model)
    twin.__class__ = base
    return twin


def structure(model: nnx.Module, image_shape_HxWxC) -> nnx.Module:
    """An int8 PTQ model shaped like `ptq`'s (values arbitrary), to load a saved one into."""
    qwix = _qwix()
    sample = jnp.zeros((1, *(int(d) for d in image_shape_HxWxC)), jnp.float32)
    # PtqProvider alone (no statistics pass): it makes every activation scale from the sample,
    # a placeholder the checkpoint's values replace. Traceable, so it runs under eval_shape.
    return qwix.quantize_model(_with_xla_convolutions(model),
                               qwix.PtqProvider(rules(static_activations=True)), sample,
                               train=False)


def int8_fraction(model: nnx.Module) -> float:
    """The fraction of `model`'s stored numbers that are int8."""
    leaves = jax.tree.leaves(nnx.state(model))
    total = sum(x.size for x in leaves)
    return sum(x.size for x in leaves if x.dtype == jnp.int8) / max(total, 1)


def stored_bytes(model: nnx.Module) -> int:
    """Bytes of `model`'s arrays: what its weights take in memory and in an export."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model)))


# ---------------------------------------------------------------- quantized runs

def quantize_run(run, calibration_NxHxWxC: np.ndarray):
    """`run` (an `inference.Run`) with its model replaced by the int8 PTQ model."""
    from jaxcnn.inference import Run
    from jaxcnn.steps import preprocess_of
    if run.config.quant.mode == "ptq":
        raise UserError(f"{run.meta['checkpoint']} is already int8 (quant.mode=ptq): quantize "
                        "the float run it came from")
    prep = preprocess_of(run.config, int(run.meta["image_shape"][-1]))
    model = ptq(run.model, calibration_NxHxWxC, prep)
    config = run.config.copy_and_resolve_references()
    config.quant.mode = "ptq"
    config.quant.calibration_images = len(calibration_NxHxWxC)
    meta = {**run.meta, "quantized_from": run.meta["checkpoint"]}
    return Run(model, config, run.class_names, meta)


def save_run(run, out_dir: str) -> str:
    """Write quantized `run` as a run directory (config.json, checkpoints/<step>) that
    `inference.load_run`, evaluate, predict, export and serve read; returns the checkpoint path.
    Refuses an `out_dir` that already holds checkpoints: nothing saved is overwritten."""
    step = int(run.meta.get("step") or 0)
    ckpt = os.path.join(out_dir, "checkpoints", str(step))
    if os.path.exists(os.path.join(out_dir, "checkpoints")):
        raise UserError(f"{out_dir} already holds checkpoints: give a new --out directory")
    os.makedirs(os.path.dirname(ckpt), exist_ok=True)
    ownership.write_atomic(os.path.join(out_dir, "config.json"),
                           json.dumps(run.config.to_dict(), indent=2, default=list) + "\n")
    _, params, rest = nnx.split(run.model, nnx.Param, ...)
    keep = ("model", "num_classes", "class_names", "image_shape", "step", "quantized_from")
    meta = {k: list(v) if isinstance(v, tuple) else v for k, v in run.meta.items() if k in keep}
    checkpoint.save(ckpt, {"params": params, "model_state": rest}, meta)
    return ckpt
