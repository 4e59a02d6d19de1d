"""Plots of a run into `<workdir>/plots/`: `python scripts/plot.py runs/digits_cnn`.

Writes curves.png (loss and accuracy per epoch, from metrics.jsonl), confusion_matrix.png,
per_class.png (precision, recall and F1 of each class, as scripts/evaluate.py prints them) and
predictions.png (the run's latest checkpoint on its test set); scripts/train.py writes the same
at the end of a run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402
from jaxcnn.errors import UserError  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import app, flags
    flags.DEFINE_integer("num_images", 32, "test images in predictions.png")
    flags.DEFINE_bool("debug", False, "show full tracebacks")
    app.define_help_flags()
    args = flags.FLAGS(argv)[1:]
    if len(args) != 1:
        raise UserError(f"give exactly one run workdir, got {len(args)} arguments: "
                        "scripts/plot.py <workdir>")

    from absl import logging
    logging.set_verbosity(logging.ERROR)  # Orbax's warnings are not for users
    from jaxcnn import plots
    for path in plots.plot_run(args[0], num_images=flags.FLAGS.num_images):
        print(path)
    return 0


if __name__ == "__main__":
    cli.run(main)
