"""Evaluate a saved model: `python scripts/evaluate.py runs/digits_cnn [--data SPEC]`.

Prints the accuracy, loss, per-class accuracy and confusion matrix (rows: true class, columns:
predicted) of a run's latest checkpoint (or the `checkpoints/<step>` directory given), on the
run's own data set, subset by its `data.classes` / `data.train_per_class` as in training, or on
another data set spec (`--data folder:photos.tar.gz`) whose classes include the run's.
`--json out.json` also writes every figure as JSON. It evaluates through the engine's own
evaluation (`jaxcnn.evaluation`, the run's normalisation, batch size and test-time
augmentation), so on the run's own test set it prints exactly the run's final test_accuracy.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import flags
    flags.DEFINE_string("data", None, "another data set spec (default: the run's data.name)")
    flags.DEFINE_enum("split", "test", ["test", "train"], "which split to evaluate")
    flags.DEFINE_string("json", None, "also write the results to this JSON file")
    flags.DEFINE_integer("batch_size", None, "evaluation batch (default train.eval_batch_size)")
    flags.DEFINE_integer("tta_level", None, "test-time augmentation 0, 1 or 2 (default: the "
                         "run's train.tta_level)")
    path = cli.run_workdir(argv, "scripts/evaluate.py <workdir> [--data SPEC]")
    FLAGS = flags.FLAGS
    from jaxcnn import evaluation, inference
    run = inference.load_run(path)
    data = inference.run_dataset(run, FLAGS.data)
    images, labels = ((data.test_images, data.test_labels) if FLAGS.split == "test"
                      else (data.train_images, data.train_labels))
    config = run.config.copy_and_resolve_references()
    if FLAGS.batch_size:
        config.train.eval_batch_size = FLAGS.batch_size
    if FLAGS.tta_level is not None:
        config.train.tta_level = FLAGS.tta_level
    from jaxcnn.config import check_config
    check_config(config)
    m = evaluation.evaluate(run.model, images, labels, config)
    m.update(inference.per_class(m["confusion_matrix"]), tta_level=config.train.tta_level)
    print(f"{run.meta['checkpoint']} on {data.name} ({FLAGS.split}, {m['count']} images, "
          f"tta_level={m['tta_level']}): accuracy={m['accuracy']:.4f} loss={m['loss']:.4f}")
    print(format_report(m, run.class_names))
    if FLAGS.json:
        out = {"checkpoint": run.meta["checkpoint"], "data": data.name, "split": FLAGS.split,
               "class_names": list(run.class_names),
               **{k: v for k, v in m.items() if k != "confusion_matrix"},
               "confusion_matrix": m["confusion_matrix"].tolist()}
        with open(FLAGS.json, "w") as f:
            f.write(json.dumps(out, indent=2) + "\n")
    return 0


def format_report(m: dict, class_names) -> str:
    """Per-class precision, recall (= accuracy of the class) and F1 with the class's image
    count, their macro averages, then the confusion matrix (rows true, columns predicted)."""
    w = max(len(n) for n in [*class_names, "macro"])
    lines = [f"  {'class':<{w}}  precision  recall      f1  images"]
    lines += [f"  {n:<{w}}  {p:9.4f}  {r:6.4f}  {f:6.4f}  {c:6d}" for n, p, r, f, c in
              zip(class_names, m["per_class_precision"], m["per_class_recall"],
                  m["per_class_f1"], m["per_class_count"], strict=True)]
    lines.append(f"  {'macro':<{w}}  {m['macro_precision']:9.4f}  {m['macro_recall']:6.4f}  "
                 f"{m['macro_f1']:6.4f}  {sum(m['per_class_count']):6d}")
    cm = m["confusion_matrix"]
    cw = max(4, len(str(cm.max())), *(len(str(i)) for i in range(len(class_names))))
    lines.append("confusion matrix (rows: true class, columns: predicted; column i = class i):")
    lines.append(" " * (w + 2) + " ".join(f"{i:>{cw}}" for i in range(len(class_names))))
    lines += [f"  {n:<{w}}" + " ".join(f"{v:>{cw}}" for v in row)
              for n, row in zip(class_names, cm, strict=True)]
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
