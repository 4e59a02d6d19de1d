"""Parameters per layer and FLOPs per image of a model: `python scripts/summary.py resnet20`.

    python3 scripts/summary.py cnn --num-classes 10 --image 32x32x3

Nothing is initialised or run: the model is built abstractly and its forward pass traced, so
even resnet18 takes well under a second after the imports.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402
from jaxcnn.errors import UserError  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import app, flags

    from jaxcnn import models, summary
    flags.DEFINE_integer("num_classes", 10, "outputs of the classifier head (--num-classes)")
    flags.DEFINE_string("image", "32x32x3", "input image shape, HxWxC")
    flags.DEFINE_bool("debug", False, "show full tracebacks")
    app.define_help_flags()
    argv = [a.replace("--num-classes", "--num_classes", 1) for a in argv]
    args = flags.FLAGS(argv)[1:]
    if len(args) != 1:
        raise UserError(f"give one model name ({', '.join(models.MODELS)}), e.g. "
                        "scripts/summary.py resnet20")
    name = args[0]
    image = summary.parse_image_shape(flags.FLAGS.image)
    if flags.FLAGS.num_classes < 1:
        raise UserError(f"--num-classes must be >= 1, got {flags.FLAGS.num_classes}")
    model = summary.abstract_model(name, flags.FLAGS.num_classes, image)
    print(f"{name}, {flags.FLAGS.num_classes} classes")
    print(summary.table(model, image))
    return 0


if __name__ == "__main__":
    cli.run(main)
