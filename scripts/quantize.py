"""int8 post-training quantization of a run: `python scripts/quantize.py runs/x [--out DIR]`.

Calibrates the activation scales on `--calibration_images` training images (default the run's
quant.calibration_images, evenly spaced over the training split), writes the int8 run to `--out`
(default `<workdir>_int8`: config.json + checkpoints/<step>, which evaluate.py, predict.py,
export.py and serve.py read like any run), evaluates the float and the int8 model on the
run's test set through the engine's evaluation, and prints `int8 test_accuracy=<value>` last.
A run trained with quant.mode=qat is quantized the same way, from its QAT-trained weights.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import flags
    flags.DEFINE_string("out", None, "directory of the int8 run (default <workdir>_int8)")
    flags.DEFINE_integer("calibration_images", None, "training images that calibrate the "
                         "activation scales (default the run's quant.calibration_images)")
    path = cli.run_workdir(argv, "scripts/quantize.py <workdir> [--out DIR]")
    FLAGS = flags.FLAGS
    import numpy as np

    from jaxcnn import evaluation, inference, quantize
    from jaxcnn.errors import UserError
    run = inference.load_run(path)
    workdir = os.path.dirname(os.path.dirname(run.meta["checkpoint"]))
    out = FLAGS.out or workdir.rstrip("/") + "_int8"
    if os.path.exists(os.path.join(out, "checkpoints")):  # before the minutes of work below
        raise UserError(f"{out} already holds checkpoints: give a new --out directory")
    n = FLAGS.calibration_images or run.config.quant.calibration_images
    if n < 1:
        raise UserError(f"--calibration_images must be at least 1, got {n}")
    data = inference.run_dataset(run)
    total = len(data.train_labels)
    rows = np.linspace(0, total - 1, min(n, total)).astype(np.int64)
    q = quantize.quantize_run(run, data.train_images[rows])
    ckpt = quantize.save_run(q, out)
    print(f"wrote {ckpt}: {quantize.int8_fraction(q.model):.2%} of the stored numbers int8, "
          f"{quantize.stored_bytes(q.model):,} bytes of weights (float: "
          f"{quantize.stored_bytes(run.model):,}); calibrated on {len(rows)} training images")
    accuracy = {}
    source = "qat" if run.config.quant.mode == "qat" else "float"  # qat: fake-quantized
    for name, r in ((source, run), ("int8", q)):
        m = evaluation.evaluate(r.model, data.test_images, data.test_labels, r.config)
        accuracy[name] = m["accuracy"]
        print(f"{name} test_accuracy={m['accuracy']:.4f} test_loss={m['loss']:.4f}")
    print(f"int8 test_accuracy={accuracy['int8']:.4f}")
    return 0


if __name__ == "__main__":
    cli.run(main)
