"""The learning-rate range test: `python scripts/lr_find.py --config configs/digits_cnn.py`.

Trains the config's run from its initial weights while the learning rate grows geometrically
from --low to --high over --steps optimizer steps, stops once the smoothed loss diverges (4x its
minimum, or back above its start after falling), and writes lr_find.json, lr_find.csv and
lr_find.png to --out (jaxcnn/lr_find.py says how). The last line printed is the suggested
rate: the steepest descent of the smoothed loss. Override config fields as in training:
`--config.train.batch_size=128`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402


def main(argv: list[str]) -> int:
    cli.check_overrides(argv)
    from absl import flags
    flags.DEFINE_float("low", 1e-7, "the first learning rate")
    flags.DEFINE_float("high", 10.0, "the last learning rate, reached at the last step")
    flags.DEFINE_integer("steps", 100, "optimizer steps from --low to --high")
    flags.DEFINE_string("out", None, "where the files go (default runs/lr_find_<config name>)")
    flags.DEFINE_string("devices", "all", "all, a count N, or device ids such as 0,2,5")
    flags.DEFINE_bool("debug", False, "show full tracebacks")
    cli.define_config_flag(os.path.join(cli.REPO_CONFIGS, "cifar10_cnn.py"))
    config = cli.parse(argv)
    FLAGS = flags.FLAGS
    from jaxcnn import lr_find
    lr_find.check(FLAGS.low, FLAGS.high, FLAGS.steps)  # before the data is loaded
    from jaxcnn.config import check_config
    check_config(config)
    name = os.path.splitext(os.path.basename(FLAGS["config"].config_filename))[0]
    out = FLAGS.out or os.path.join("runs", f"lr_find_{name}")
    result = lr_find.range_test(config, low=FLAGS.low, high=FLAGS.high, steps=FLAGS.steps,
                                devices=FLAGS.devices)
    paths = lr_find.write(result, out, title=f"learning-rate range test: {name}")
    i = int(result.smoothed.argmin())
    print(f"{len(result.lrs)} of {FLAGS.steps} steps from {FLAGS.low:g} to {FLAGS.high:g} "
          f"({result.stopped}); lowest smoothed loss {result.smoothed[i]:.4f} at "
          f"lr={result.lrs[i]:.3g}")
    print(f"wrote {', '.join(paths)}")
    print(f"suggested optim.learning_rate={result.suggested:.3g} (steepest descent of the "
          "smoothed loss)")
    return 0


if __name__ == "__main__":
    cli.run(main)
