"""Train and evaluate a CNN: `python scripts/train.py --config configs/<name>.py --workdir runs/x`.

Override any config field on the command line: `--config.train.epochs=3`,
`--config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz`. `--devices all|N|0,2,5`.
Rerunning with the same `--workdir` resumes from its latest checkpoint. SIGTERM or SIGINT saves a
checkpoint at the next step boundary and exits with 128 + the signal number (143, 130).
`--init-from runs/pretrained` fine-tunes a trained network with a new head.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402


def main(argv: list[str]) -> int:
    cli.check_overrides(argv)
    from absl import flags
    flags.DEFINE_string("workdir", None, "where config.json, metrics.jsonl and checkpoints/ go "
                        "(default runs/<config name>); an existing one is resumed")
    flags.DEFINE_string("init_from", None, "fine-tune: a trained run's workdir or checkpoint "
                        "directory; sets config.finetune.init_from")
    flags.DEFINE_string("devices", "all", "all, a count N, or device ids such as 0,2,5")
    flags.DEFINE_bool("progress", True, "show a progress bar per epoch")
    flags.DEFINE_integer("profile", None, "trace this many steps after compilation with "
                         "jax.profiler into the workdir (sets config.train.profile_steps)")
    flags.DEFINE_string("coordinator", None, "host:port of process 0, for a multi-host run "
                        "(SLURM, Open MPI and Kubernetes launches are detected without it)")
    flags.DEFINE_integer("num_processes", None, "number of processes of a multi-host run")
    flags.DEFINE_integer("process_id", None, "this process's index, 0..num_processes-1")
    flags.DEFINE_bool("debug", False, "show full tracebacks")
    flags.DEFINE_bool("plots", True, "draw the run's plots into <workdir>/plots at the end "
                      "(--noplots: skip them; scripts/plot.py draws them later)")
    cli.define_config_flag(os.path.join(cli.REPO_CONFIGS, "cifar10_cnn.py"))
    config = cli.parse(argv)
    FLAGS = flags.FLAGS

    from absl import logging
    # Orbax logs its warnings and errors (with tracebacks, from its threads); they are not for
    # users: a failure reaches the run as an exception, and the run says it in one line.
    logging.set_verbosity(logging.FATAL)

    from jaxcnn import parallel
    from jaxcnn.config import check_config
    from jaxcnn.train import train_and_evaluate
    check_config(config)  # before the distributed runtime starts with its fields
    how = parallel.initialize_distributed(FLAGS.coordinator, FLAGS.num_processes,
                                          FLAGS.process_id,
                                          peer_timeout_s=config.train.peer_timeout_s)
    if parallel.is_main_process():
        print(f"jaxcnn: {how}")
    config_name = os.path.splitext(os.path.basename(FLAGS["config"].config_filename))[0]
    workdir = FLAGS.workdir or os.path.join("runs", config_name)
    if FLAGS.init_from:
        config.finetune.init_from = FLAGS.init_from
    if FLAGS.profile is not None:
        config.train.profile_steps = FLAGS.profile
    result = train_and_evaluate(config, workdir, devices=FLAGS.devices,
                                progress=FLAGS.progress)
    if result.stopped:
        return 128 + signal.Signals[result.stopped].value
    if parallel.is_main_process() and FLAGS.plots:
        from jaxcnn import plots
        print(f"plots: {', '.join(plots.plot_run(workdir, model=result.model, config=config))}")
    if parallel.is_main_process():
        print(f"final test_accuracy={result.final['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    cli.run(main)
