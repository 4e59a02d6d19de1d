"""Export a trained run as a `jax.export` artifact: StableHLO that needs neither flax nor jaxcnn.

    from jaxcnn import export, inference
    export.export_run(inference.load_run("runs/digits_cnn"), "runs/digits_cnn/export")

writes two files into the output directory:
  model.jax_export  `jax.export.Exported.serialize()` bytes of `uint8 BxHxWxC images ->
                    {"logits": float32 BxK, "probabilities": float32 BxK}`, with normalisation
                    inside, the weights as constants, a symbolic batch size B (any B >= 1), and
                    lowered for every platform in `platforms` (default cpu and cuda)
  model.json        what a caller needs around it: class names, image shape, input dtype,
                    mean/std (already applied inside; for reference), the JAX version that
                    wrote it, the platforms it runs on, and the artifact's sha256, which
                    `serving.load` checks: the two files must come from one export

`jaxcnn/serving.py` loads and runs it with only jax, numpy and Pillow; `jaxcnn/onnx_export.py`
writes the same model as ONNX instead (`scripts/export.py --format onnx`). JAX guarantees that a
serialized artifact can be deserialized and run by a JAX up to 6 months newer, or up to 3 weeks
older, than the JAX that exported it (docs/export/export.md, "Compatibility guarantees").
"""

import datetime
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import jaxlib
from jax import export as jax_export

from jaxcnn import ownership
from jaxcnn.errors import UserError
from jaxcnn.inference import Run, forward_config
from jaxcnn.steps import forward

ARTIFACT = "model.jax_export"
METADATA = "model.json"
PLATFORMS = ("cpu", "cuda")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for


def inference_fn(run: Run, *, tta_level: int | None = None):
    """`uint8 BxHxWxC -> {"logits", "probabilities"}` of `run`'s model, weights closed over:
    `steps.forward`, the evaluation's own forward, with the run's test-time augmentation (or
    `tta_level`)."""
    cfg, params, model_state = forward_config(run.model, run.config, run.meta["image_shape"],
                                              tta_level=tta_level)

    def serve(images_BxHxWxC):
        logits_BxK = forward(cfg, params, model_state, images_BxHxWxC)
        return {"logits": logits_BxK, "probabilities": jax.nn.softmax(logits_BxK, axis=-1)}

    return serve, cfg


def export_run(run: Run, out_dir: str, *, platforms=PLATFORMS, tta_level: int | None = None
               ) -> dict:
    """Write `model.jax_export` and `model.json` for `run` into `out_dir`; returns the metadata.

    The artifact computes what the run's evaluation computes: the run's test-time augmentation
    (`train.tta_level`) is inside unless `tta_level` says otherwise (0: one view, the fastest)."""
    unknown = sorted(set(platforms) - set(KNOWN_PLATFORMS))
    if unknown or not platforms:
        raise UserError(f"cannot export for platform(s) {', '.join(unknown) or '(none)'}: "
                        f"choose among {', '.join(KNOWN_PLATFORMS)}")
    _refuse_onnx_export(out_dir)
    h, w, c = (int(d) for d in run.meta["image_shape"])
    # One symbolic dimension, the batch: the same artifact serves 1 image or 10,000.
    (b,) = jax_export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, h, w, c), jnp.uint8)
    serve, cfg = inference_fn(run, tta_level=tta_level)
    try:
        exported = jax_export.export(jax.jit(serve), platforms=tuple(platforms))(spec)
    except ValueError as e:  # e.g. an unknown platform name
        raise UserError(f"cannot export for platforms {', '.join(platforms)}: "
                        f"{str(e).splitlines()[0]}") from None
    blob = bytes(exported.serialize())
    meta = {**describe(run, cfg, blob, ARTIFACT, "jax.export", "the artifact"),
            "platforms": list(exported.platforms),
            "calling_convention_version": exported.calling_convention_version,
            "jaxlib_version": jaxlib.__version__}
    write(out_dir, ARTIFACT, blob, meta)
    return meta


def describe(run: Run, cfg, blob: bytes, artifact: str, fmt: str, inside: str) -> dict:
    """model.json's fields of every format: what the file is, what it takes and gives, where it
    comes from (`inside`: where the normalisation is, "the artifact" or "the graph")."""
    h, w, c = (int(d) for d in run.meta["image_shape"])
    mean, std, _ = cfg.preprocess
    return {
        "format": fmt,
        "artifact": artifact,
        "artifact_sha256": hashlib.sha256(blob).hexdigest(),
        "class_names": list(run.class_names),
        "image_shape": [h, w, c],
        "input_dtype": "uint8",
        "input": "images: uint8 BxHxWxC, RGB, 0..255; any batch size B >= 1",
        "outputs": {"logits": "float32 BxK", "probabilities": "float32 BxK, softmax of logits"},
        "mean": list(mean), "std": list(std),
        "normalization": f"inside {inside}: (x / 255 - mean) / std",
        "tta_level": cfg.tta_level,
        "resize": "bilinear (Pillow), after conversion to RGB",
        "jax_version": jax.__version__,
        "exported_on": datetime.date.today().isoformat(),
        "model": run.config.model.name,
        "checkpoint": run.meta.get("checkpoint"),
        "step": run.meta.get("step"),
    }


def write(out_dir: str, artifact: str, blob: bytes, meta: dict) -> None:
    """The model file and its model.json, each written whole or not at all."""
    os.makedirs(out_dir, exist_ok=True)
    ownership.write_atomic(os.path.join(out_dir, artifact), blob)
    ownership.write_atomic(os.path.join(out_dir, METADATA), json.dumps(meta, indent=2) + "\n")


def _refuse_onnx_export(out_dir: str) -> None:
    """An ONNX export's model.json would be replaced, and its consumers would misread it."""
    from jaxcnn import onnx_export
    if os.path.exists(os.path.join(out_dir, onnx_export.ARTIFACT)):
        raise UserError(f"{out_dir} holds an ONNX export ({onnx_export.ARTIFACT}), whose "
                        f"{METADATA} a jax export would replace: give another --out")
