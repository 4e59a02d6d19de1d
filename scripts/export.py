"""Export a saved model for serving: `python scripts/export.py runs/x [--out runs/x/export]`.

Writes `model.jax_export` (a serialized `jax.export` artifact: uint8 images of any batch size
in, logits and probabilities out, normalisation inside, lowered for CPU and CUDA) and
`model.json` (class names, image shape, versions). Run it with `jaxcnn/serving.py`, which needs
only jax, numpy and Pillow:  python jaxcnn/serving.py runs/x/export img.png --top-k 3
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import flags
    flags.DEFINE_string("out", None, "output directory (default <workdir>/export)")
    flags.DEFINE_list("platforms", ["cpu", "cuda"], "platforms to lower for (cpu, cuda, rocm, "
                      "tpu): the artifact runs on each of them")
    flags.DEFINE_integer("tta_level", None, "test-time augmentation inside the artifact: 0, 1 "
                         "or 2 (default: the run's train.tta_level, as its evaluation)")
    path = cli.run_workdir(argv, "scripts/export.py <workdir> [--out DIR]")
    FLAGS = flags.FLAGS
    from jaxcnn import export, inference
    run = inference.load_run(path)
    workdir = os.path.dirname(os.path.dirname(run.meta["checkpoint"]))
    out = FLAGS.out or os.path.join(workdir, "export")
    if FLAGS.tta_level not in (None, 0, 1, 2):
        from jaxcnn.errors import UserError
        raise UserError(f"--tta_level must be 0, 1 or 2, got {FLAGS.tta_level}")
    meta = export.export_run(run, out, platforms=tuple(FLAGS.platforms),
                             tta_level=FLAGS.tta_level)
    print(f"exported {run.meta['checkpoint']} to {out}/{export.ARTIFACT} "
          f"({os.path.getsize(os.path.join(out, export.ARTIFACT)):,} bytes, "
          f"{len(meta['class_names'])} classes, {'x'.join(map(str, meta['image_shape']))} "
          f"uint8 images, tta_level {meta['tta_level']}, platforms {', '.join(meta['platforms'])}, "
          f"jax {meta['jax_version']})")
    return 0


if __name__ == "__main__":
    cli.run(main)
