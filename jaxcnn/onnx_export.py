"""Export a trained run as ONNX, through jax2onnx: a model for onnxruntime or any ONNX runtime.

    from jaxcnn import inference, onnx_export
    onnx_export.export_run(inference.load_run("runs/digits_cnn"), "runs/digits_cnn/onnx")

writes two files into the output directory:
  model.onnx  one ONNX file, weights inside: input `images` (uint8 BxHxWxC, RGB 0..255, B
              dynamic), outputs `logits` and `probabilities` (float32 BxK). It computes
              `steps.forward`, the evaluation's own forward: normalisation inside,
              BatchNorm in inference mode, the run's test-time augmentation (or `tta_level`)
  model.json  class names, image shape, mean/std, TTA level, opset, versions and the sha256
              of model.onnx, as `jaxcnn.export` writes for its artifact (format "onnx")

How: `steps.forward` is traced once into a jaxpr with a symbolic batch size, with XLA's own
convolutions (`layers.xla_convolutions`: the CPU convolution path switches per platform, which
ONNX cannot express), and jax2onnx converts that jaxpr primitive by primitive. It gets the
jaxpr, not the model, because its flax shims (which replace nnx.Conv, BatchNorm and Linear
while it traces) drop the doubled batch of test-time augmentation; from a jaxpr, the graph
holds what XLA runs. Before anything is written, the graph runs in onnxruntime on a few
images and must give the JAX logits (`CHECK_RTOL`), or the export is refused. Runs that
compute in bfloat16 (config precision) are refused: onnxruntime's CPU Conv takes no bfloat16.

Needs the `deploy` extra (jax2onnx, onnx, onnxruntime); without it, one line says so.
"""

import contextlib
import importlib.metadata
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export
from jax.extend import core as jax_core

from jaxcnn.errors import UserError
from jaxcnn.export import describe, inference_fn, write
from jaxcnn.inference import Run, predict_logits
from jaxcnn.models import layers

ARTIFACT = "model.onnx"
METADATA = "model.json"
INPUT, OUTPUTS = "images", ("logits", "probabilities")
# Opset 18 (ONNX 1.13, 2022): onnxruntime >= 1.14 and most other runtimes read it. jax2onnx 0.13
# writes ReduceMax with axes as an input (opset 18), so 17 fails the ONNX checker.
OPSET = 18
CHECK_IMAGES = 8  # random images the export must agree on in onnxruntime and JAX
CHECK_RTOL = 1e-3  # |onnx - jax| <= CHECK_RTOL * (1 + |jax|) per logit: float32 rounding
INSTALL = "pip install -e '.[deploy]'"


def export_run(run: Run, out_dir: str, *, tta_level: int | None = None,
               opset: int = OPSET) -> dict:
    """Write `model.onnx` and `model.json` for `run` into `out_dir`; returns the metadata.

    The graph computes what the run's evaluation computes: the run's test-time augmentation
    (`train.tta_level`) is inside unless `tta_level` says otherwise (0: one view, the fastest).
    """
    jax2onnx, onnx, ort = deploy_modules()
    _refuse_other_export(out_dir)
    serve, cfg = inference_fn(run, tta_level=tta_level)
    dtype = jnp.dtype(cfg.preprocess.dtype).name
    if dtype != "float32":
        raise UserError(f"this run computes in {dtype} (config precision), which onnxruntime's "
                        "CPU convolutions lack, and an ONNX export computes as the run does: "
                        "export it with --format jax")
    h, w, c = (int(d) for d in run.meta["image_shape"])
    # One symbolic dimension, the batch: the same graph serves 1 image or 10,000.
    (b,) = jax_export.symbolic_shape("B")
    spec = jax.ShapeDtypeStruct((b, h, w, c), jnp.uint8)
    with layers.xla_convolutions():
        traced = jax.make_jaxpr(lambda x: _outputs(serve(x)))(spec)
    proto = _convert(jax2onnx, traced, spec, run.config.model.name, opset)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise UserError(f"jax2onnx wrote an invalid ONNX graph for model "
                        f"{run.config.model.name!r} ({str(e).splitlines()[0][:200]})") from None
    blob = proto.SerializeToString()
    check = _check(blob, run, cfg.tta_level)
    meta = {**describe(run, cfg, blob, ARTIFACT, "onnx", "the graph"),
            "opset": opset,
            "check": check,
            "jax2onnx_version": _version("jax2onnx"),
            "onnx_version": onnx.__version__,
            "onnxruntime_version": ort.__version__}
    write(out_dir, ARTIFACT, blob, meta)
    return meta


def _outputs(out: dict) -> tuple[jax.Array, jax.Array]:
    """The graph's outputs in the order of `OUTPUTS`."""
    return tuple(out[k] for k in OUTPUTS)


def deploy_modules():
    """(jax2onnx, onnx, onnxruntime); a missing one is a UserError naming the install command."""
    try:
        import jax2onnx
        import onnx
        import onnxruntime
    except ImportError as e:
        raise UserError(f"ONNX export needs jax2onnx, onnx and onnxruntime ({e.name} is "
                        f"missing): {INSTALL}") from None
    return jax2onnx, onnx, onnxruntime


def _refuse_other_export(out_dir: str) -> None:
    """A jax.export artifact's model.json would be replaced, and serving would refuse it."""
    from jaxcnn import export
    if os.path.exists(os.path.join(out_dir, export.ARTIFACT)):
        raise UserError(f"{out_dir} holds a jax.export artifact ({export.ARTIFACT}), whose "
                        f"{METADATA} an ONNX export would replace: give another --out")


def _convert(jax2onnx, traced: jax_core.ClosedJaxpr, spec: jax.ShapeDtypeStruct, model: str,
             opset: int):
    """jax2onnx's ModelProto of `traced`; whatever it cannot convert is one line."""
    try:
        with _quiet("jax2onnx", "onnx_ir"), _primitive_plugins_only():
            return jax2onnx.to_onnx(
                lambda x: _replay(traced.jaxpr, traced.consts, x), [spec],
                model_name=f"jaxcnn_{model}", opset=opset, input_names=[INPUT],
                output_names=list(OUTPUTS))
    except Exception as e:  # noqa: BLE001 - the converter's errors come in many types
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"jax2onnx {_version('jax2onnx')} cannot convert model {model!r} "
                        f"({type(e).__name__}: {first}): export it with --format jax") from None


def _replay(jaxpr: jax_core.Jaxpr, consts, *args) -> list:
    """Evaluate `jaxpr`, with nested jit calls inlined and zero padding (`pad`) written as
    concatenation: jax2onnx 0.13's Pad lowering fails on a symbolic batch (ResNet-20's
    shortcuts pad channels)."""
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(v):
        return v.val if isinstance(v, jax_core.Literal) else env[v]

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in ("jit", "pjit"):
            inner = eqn.params["jaxpr"]
            outs = _replay(inner.jaxpr, inner.consts, *ins)
        elif name == "pad" and _plain_padding(eqn.params["padding_config"]):
            outs = [_pad_by_concatenation(*ins, eqn.params["padding_config"])]
        else:
            outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _plain_padding(config) -> bool:
    return all(lo >= 0 and hi >= 0 and interior == 0 for lo, hi, interior in config)


def _pad_by_concatenation(x: jax.Array, value: jax.Array, config) -> jax.Array:
    """`lax.pad(x, value, config)` for non-negative edge padding, as constant blocks
    concatenated along each axis (the same values)."""
    for axis, (lo, hi, _) in enumerate(config):
        edge = [x.shape[:axis] + (n,) + x.shape[axis + 1:] for n in (lo, hi)]
        lo_block, hi_block = (jnp.broadcast_to(value.astype(x.dtype), e) for e in edge)
        parts = [lo_block] * bool(lo) + [x] + [hi_block] * bool(hi)
        x = jnp.concatenate(parts, axis=axis) if len(parts) > 1 else x
    return x


@contextlib.contextmanager
def _primitive_plugins_only():
    """jax2onnx with its plugins for JAX primitives only, all a jaxpr needs.

    jax2onnx imports all of its plugins on first use, 6 s on 2 CPU cores, 5 of them building the
    equinox examples' models. Here it imports the `plugins/jax` tree and is told the rest is
    done, until the conversion ends: a later full use imports the others then. Where its
    (private) registry looks different, it imports everything itself: correct, only slower."""
    try:
        from jax2onnx.plugins import plugin_system as ps
        before = ps._already_imported_plugins
        if not before:
            ps._import_tree(pathlib.Path(ps.__file__).parent / "jax", "jax2onnx.plugins.jax")
            ps._already_imported_plugins = True
    except (ImportError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        ps._already_imported_plugins = before


def _check(blob: bytes, run: Run, tta_level: int) -> dict:
    """Run the graph in onnxruntime on `CHECK_IMAGES` random images and compare with
    `inference.predict_logits`; a graph that computes something else is refused."""
    h, w, c = (int(d) for d in run.meta["image_shape"])
    x = np.random.default_rng(0).integers(0, 256, (CHECK_IMAGES, h, w, c), np.uint8)
    try:
        got_BxK = predict(session(blob), x)["logits"]
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are its own types
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"onnxruntime cannot run the graph jax2onnx wrote ({first}): export "
                        "it with --format jax") from None
    want_BxK = predict_logits(run.model, x, run.config, tta_level=tta_level)
    diff = float(np.max(np.abs(got_BxK - want_BxK)))
    if not np.all(np.abs(got_BxK - want_BxK) <= CHECK_RTOL * (1 + np.abs(want_BxK))):
        raise UserError(f"the ONNX graph's logits differ from JAX's by up to {diff:.3g} on "
                        f"{CHECK_IMAGES} random images: jax2onnx converted this model wrongly; "
                        "export it with --format jax")
    return {"images": CHECK_IMAGES, "max_abs_logit_diff": diff, "rtol": CHECK_RTOL,
            "runtime": "onnxruntime cpu"}


def session(model: bytes | str):
    """An onnxruntime CPU session of an exported model (its bytes or path), warnings off."""
    ort = deploy_modules()[2]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: shape-merge notes are not for users
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def predict(sess, images_BxHxWxC: np.ndarray) -> dict[str, np.ndarray]:
    """{"logits", "probabilities"}: float32 BxK of an onnxruntime session on uint8 images."""
    outs = sess.run(list(OUTPUTS), {INPUT: np.asarray(images_BxHxWxC, np.uint8)})
    return dict(zip(OUTPUTS, outs, strict=True))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _quiet(*names: str):
    """Loggers `names` at ERROR for the duration: converter notes are not for users."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
