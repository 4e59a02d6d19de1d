"""Classify image files with a saved model: `python scripts/predict.py runs/x a.png b.jpg`.

Prints, per image, its `--top-k` (default 3) classes with their probabilities; `--json out.json`
also writes them as JSON (`--json -`: JSON on stdout instead of the text). Images of any size
and mode (RGBA, grey, palette, CMYK, 16-bit) are converted as the folder loader converts
training images: to RGB, then resized to the model's input size with Pillow's bilinear filter.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402
from jaxcnn.errors import UserError  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import app, flags
    flags.DEFINE_integer("top_k", 3, "classes to show per image")
    flags.DEFINE_string("json", None, "also write the results to this JSON file ('-': stdout)")
    flags.DEFINE_bool("debug", False, "show full tracebacks")
    app.define_help_flags()
    argv = [cli._underscored(a) if a.startswith("--") else a for a in argv]  # --top-k
    args = flags.FLAGS(argv)[1:]
    FLAGS = flags.FLAGS
    if len(args) < 2:
        raise UserError("give a run's workdir (or checkpoint directory) and at least one image: "
                        "scripts/predict.py <workdir> img1.png [img2.jpg ...]")
    if FLAGS.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {FLAGS.top_k}")
    workdir, paths = args[0], args[1:]
    for p in paths:  # before loading the model: a typo fails at once
        if not os.path.isfile(p):
            raise UserError(f"image {p} does not exist or is not a file: check the path")

    from absl import logging
    logging.set_verbosity(logging.ERROR)
    import jax

    from jaxcnn import inference, serving
    run = inference.load_run(workdir)
    images = inference.prepare_images(paths, run.meta["image_shape"])
    probs = jax.nn.softmax(inference.predict_logits(run.model, images, run.config), axis=-1)
    results = serving.top_k(probs, run.class_names, min(FLAGS.top_k, len(run.class_names)))
    if FLAGS.json != "-":
        print(serving.format_top_k(paths, results))
    if FLAGS.json:
        text = json.dumps([{"image": p, "top_k": r} for p, r in zip(paths, results, strict=True)],
                          indent=2) + "\n"
        if FLAGS.json == "-":
            sys.stdout.write(text)
        else:
            with open(FLAGS.json, "w") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    cli.run(main)
