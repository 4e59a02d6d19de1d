"""What deploying a run costs: accuracy, artifact size, latency and throughput of its export.

    python scripts/bench_deploy.py runs/cifar10_cnn runs/cifar10_cnn_int8 [--json out.json]

For every run (a float run, an int8 run written by scripts/quantize.py, a pruned run): its test
accuracy through the engine's evaluation, then its `jax.export` artifact (CPU) as served:
the file's size, raw and gzip-compressed (pruned zeros compress; int8 weights are a quarter of
float32), the latency of one blocking call on 1 image (median and spread over `--repeats`
calls) and the throughput of calls on 256 images. All runs are measured in one process, one
after another, so their ratios compare like with like; absolute times are this machine's.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn import cli  # noqa: E402


def main(argv: list[str]) -> int:
    from absl import app, flags
    flags.DEFINE_string("json", None, "also write the rows as JSON to this file")
    flags.DEFINE_integer("repeats", 50, "timed calls at batch 1 (batch 256: a fifth of them)")
    app.define_help_flags()
    runs = flags.FLAGS(argv)[1:]
    FLAGS = flags.FLAGS
    if not runs:
        from jaxcnn.errors import UserError
        raise UserError("give one or more run workdirs: scripts/bench_deploy.py runs/x [runs/y]")
    rows = [measure(path, FLAGS.repeats) for path in runs]
    print(format_rows(rows))
    if FLAGS.json:
        import json
        import platform

        import jax
        doc = {"command": " ".join(["python3", "scripts/bench_deploy.py", *argv[1:]]),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
               "python": platform.python_version(), "jax": jax.__version__, "rows": rows}
        with open(FLAGS.json, "w") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
    return 0


def measure(path: str, repeats: int) -> dict:
    import gzip
    import tempfile
    import time

    import numpy as np
    from flax import nnx

    from jaxcnn import evaluation, export, inference, prune, quantize, serving
    run = inference.load_run(path)
    data = inference.run_dataset(run)
    m = evaluation.evaluate(run.model, data.test_images, data.test_labels, run.config)
    with tempfile.TemporaryDirectory() as out:
        export.export_run(run, out, platforms=("cpu",))
        blob = open(os.path.join(out, export.ARTIFACT), "rb").read()
        model = serving.load(out)
    times = {}
    for batch, n in ((1, repeats), (256, max(3, repeats // 5))):
        x = data.test_images[:batch]
        np.asarray(model.exported.call(x)["logits"])  # compiled and warm
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            np.asarray(model.exported.call(x)["logits"])  # blocks until the result is here
            t.append(time.perf_counter() - t0)
        times[batch] = np.asarray(t)
    params = nnx.state(run.model, nnx.Param)
    return {
        "run": path, "checkpoint": run.meta["checkpoint"], "model": run.config.model.name,
        "quant_mode": run.config.quant.mode or "float32",
        "int8_fraction": quantize.int8_fraction(run.model),
        "sparsity": prune.sparsity_of(params)["total"],
        "test_accuracy": m["accuracy"], "test_images": m["count"],
        "artifact_bytes": len(blob), "artifact_gzip_bytes": len(gzip.compress(blob, 6)),
        "latency_b1_ms_median": 1e3 * float(np.median(times[1])),
        "latency_b1_ms_p10_p90": [1e3 * float(np.percentile(times[1], q)) for q in (10, 90)],
        "throughput_b256_img_s_median": 256 / float(np.median(times[256])),
        "throughput_b256_img_s_min_max": [256 / float(times[256].max()),
                                          256 / float(times[256].min())],
    }


def format_rows(rows: list[dict]) -> str:
    head = (f"{'run':<34} {'mode':<8} {'sparsity':>8} {'test acc':>8} {'artifact':>11} "
            f"{'gzip':>11} {'b1 ms':>7} {'b256 img/s':>10}")
    lines = [head] + [
        f"{os.path.basename(r['run'].rstrip('/')):<34} {r['quant_mode']:<8} "
        f"{r['sparsity']:8.3f} {r['test_accuracy']:8.4f} {r['artifact_bytes']:11,} "
        f"{r['artifact_gzip_bytes']:11,} {r['latency_b1_ms_median']:7.2f} "
        f"{r['throughput_b256_img_s_median']:10,.0f}" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
