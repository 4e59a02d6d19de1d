"""Export a saved model: `python scripts/export.py runs/x [--format jax|onnx] [--out DIR]`.

--format jax (default) writes `model.jax_export` (a serialized `jax.export` artifact: uint8
images of any batch size in, logits and probabilities out, normalisation inside, lowered for
CPU and CUDA) and `model.json` (class names, image shape, versions) into <workdir>/export. Run
it with `jaxcnn/serving.py`, which needs only jax, numpy and Pillow:
    python jaxcnn/serving.py runs/x/export img.png --top-k 3

--format onnx writes `model.onnx` (the same inputs and outputs, named `images`, `logits` and
`probabilities`) and its `model.json` into <workdir>/onnx, for onnxruntime or any ONNX runtime
(`jaxcnn/onnx_export.py`; needs the deploy extra: pip install -e '.[deploy]').
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402

FORMATS = ("jax", "onnx")


def main(argv: list[str]) -> int:
    from absl import flags
    flags.DEFINE_enum("format", "jax", FORMATS, "jax: a jax.export artifact (jaxcnn/serving.py "
                      "runs it); onnx: an ONNX model (onnxruntime runs it)")
    flags.DEFINE_string("out", None, "output directory (default <workdir>/export for jax, "
                        "<workdir>/onnx for onnx)")
    flags.DEFINE_list("platforms", ["cpu", "cuda"], "platforms to lower for (cpu, cuda, rocm, "
                      "tpu): the artifact runs on each of them (--format jax only)")
    flags.DEFINE_integer("tta_level", None, "test-time augmentation inside the artifact: 0, 1 "
                         "or 2 (default: the run's train.tta_level, as its evaluation)")
    path = cli.run_workdir(argv, "scripts/export.py <workdir> [--format jax|onnx] [--out DIR]")
    FLAGS = flags.FLAGS
    from jaxcnn.errors import UserError
    if FLAGS.tta_level not in (None, 0, 1, 2):
        raise UserError(f"--tta_level must be 0, 1 or 2, got {FLAGS.tta_level}")
    if FLAGS.format == "onnx" and FLAGS["platforms"].present:
        raise UserError("--platforms is for --format jax: an ONNX model runs wherever an ONNX "
                        "runtime does")
    from jaxcnn import inference
    run = inference.load_run(path)
    workdir = os.path.dirname(os.path.dirname(run.meta["checkpoint"]))
    if FLAGS.format == "onnx":
        return _onnx(run, FLAGS.out or os.path.join(workdir, "onnx"), FLAGS.tta_level)
    from jaxcnn import export
    out = FLAGS.out or os.path.join(workdir, "export")
    meta = export.export_run(run, out, platforms=tuple(FLAGS.platforms),
                             tta_level=FLAGS.tta_level)
    print(f"exported {run.meta['checkpoint']} to {out}/{export.ARTIFACT} "
          f"({os.path.getsize(os.path.join(out, export.ARTIFACT)):,} bytes, "
          f"{len(meta['class_names'])} classes, {'x'.join(map(str, meta['image_shape']))} "
          f"uint8 images, tta_level {meta['tta_level']}, platforms {', '.join(meta['platforms'])}, "
          f"jax {meta['jax_version']})")
    return 0


def _onnx(run, out: str, tta_level: int | None) -> int:
    from jaxcnn import onnx_export
    meta = onnx_export.export_run(run, out, tta_level=tta_level)
    print(f"exported {run.meta['checkpoint']} to {out}/{onnx_export.ARTIFACT} "
          f"({os.path.getsize(os.path.join(out, onnx_export.ARTIFACT)):,} bytes, "
          f"{len(meta['class_names'])} classes, {'x'.join(map(str, meta['image_shape']))} "
          f"uint8 images, tta_level {meta['tta_level']}, opset {meta['opset']}, onnxruntime "
          f"agrees within {meta['check']['max_abs_logit_diff']:.1g} on "
          f"{meta['check']['images']} images, jax2onnx {meta['jax2onnx_version']})")
    return 0


if __name__ == "__main__":
    cli.run(main)
