"""A trained run as ONNX in onnxruntime against JAX: logits, accuracy, CPU latency, throughput.

    python3 results/onnx-2026-11-29/measure.py <workdir> results/onnx-2026-11-29/seed-cnn.json

Exports the run (`jaxcnn.onnx_export`, into a temporary directory), runs the run's test split
(`inference.run_dataset`) through both, times batch 1 (latency) and batch 256 (throughput),
and profiles onnxruntime's operators at batch 256. JAX is the run's own forward
(`export.inference_fn`: `steps.forward`, jitted, the CPU convolution path); onnxruntime is its
CPU provider with default threads. Timings alternate JAX and onnxruntime repeat by repeat, so
that load from other processes on the machine falls on both; the JSON keeps every repeat and
the load average around them.
"""

import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jaxlib
import numpy as np
import onnxruntime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxcnn import export, inference, onnx_export  # noqa: E402

REPEATS = 7
LATENCY_CALLS = 200  # batch-1 calls per repeat
THROUGHPUT_CALLS = 10  # batch-256 calls per repeat


def timed(f, x, calls: int) -> float:
    """Seconds per call of `f(x)`, over `calls` calls."""
    t = time.perf_counter()
    for _ in range(calls):
        f(x)
    return (time.perf_counter() - t) / calls


def op_profile(path: str, x: np.ndarray, calls: int = 5) -> dict:
    """onnxruntime's own per-operator kernel time, ms per call, largest first."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level, options.enable_profiling = 3, True
    sess = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(calls):
        sess.run(None, {onnx_export.INPUT: x})
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    ms = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ms[e["args"]["op_name"]] += e["dur"] / 1e3 / calls
    return {op: round(t, 3) for op, t in ms.most_common()}


def main(workdir: str, out_json: str) -> None:
    run = inference.load_run(workdir)
    data = inference.run_dataset(run)
    x_NxHxWxC, labels_N = data.test_images, data.test_labels
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        meta = onnx_export.export_run(run, d)
        export_s = time.perf_counter() - t
        size = os.path.getsize(os.path.join(d, onnx_export.ARTIFACT))
        sess = onnx_export.session(os.path.join(d, onnx_export.ARTIFACT))

        def ort_logits(x):
            return onnx_export.predict(sess, x)["logits"]

        serve, _ = export.inference_fn(run)
        jitted = jax.jit(serve)

        def jax_logits(x):
            return np.asarray(jitted(x)["logits"])

        # the whole test split: JAX through the evaluation's batching, onnxruntime by 256
        jax_NxK = inference.predict_logits(run.model, x_NxHxWxC, run.config)
        ort_NxK = np.concatenate([ort_logits(x_NxHxWxC[i:i + 256])
                                  for i in range(0, len(x_NxHxWxC), 256)])
        diff_NxK = np.abs(ort_NxK - jax_NxK)
        agree = {
            "images": int(len(x_NxHxWxC)),
            "max_abs_logit_diff": float(diff_NxK.max()),
            "mean_abs_logit_diff": float(diff_NxK.mean()),
            "max_abs_logit": float(np.abs(jax_NxK).max()),
            "argmax_disagreements": int((ort_NxK.argmax(-1) != jax_NxK.argmax(-1)).sum()),
            "accuracy_jax": float((jax_NxK.argmax(-1) == labels_N).mean()),
            "accuracy_onnxruntime": float((ort_NxK.argmax(-1) == labels_N).mean()),
        }
        print(json.dumps(agree))

        x1, x256 = x_NxHxWxC[:1], x_NxHxWxC[:256]
        for f in (jax_logits, ort_logits):  # compile and warm up
            for x in (x1, x256):
                f(x), f(x)
        times = {k: [] for k in ("jax_b1", "onnxruntime_b1", "jax_b256", "onnxruntime_b256")}
        load_before = os.getloadavg()
        for _ in range(REPEATS):
            times["jax_b1"].append(timed(jax_logits, x1, LATENCY_CALLS))
            times["onnxruntime_b1"].append(timed(ort_logits, x1, LATENCY_CALLS))
            times["jax_b256"].append(timed(jax_logits, x256, THROUGHPUT_CALLS))
            times["onnxruntime_b256"].append(timed(ort_logits, x256, THROUGHPUT_CALLS))
        load_after = os.getloadavg()
        profile = op_profile(os.path.join(d, onnx_export.ARTIFACT), x256)

    speed = {}
    for engine in ("jax", "onnxruntime"):
        b1, b256 = times[f"{engine}_b1"], times[f"{engine}_b256"]
        speed[engine] = {
            "latency_b1_ms_median": 1e3 * statistics.median(b1),
            "latency_b1_ms_repeats": [1e3 * s for s in b1],
            "throughput_b256_img_per_s_median": 256 / statistics.median(b256),
            "throughput_b256_img_per_s_repeats": [256 / s for s in b256],
        }
    result = {
        "run": {"model": run.config.model.name, "step": run.meta.get("step"),
                "data": run.config.data.name, "tta_level": meta["tta_level"],
                "config_precision": run.config.precision},
        "export": {"seconds": export_s, "bytes": size, "opset": meta["opset"],
                   "check": meta["check"]},
        "test_split": agree,
        "speed": speed,
        "onnxruntime_ms_per_op_type_b256": profile,
        "timing": {"repeats": REPEATS, "batch1_calls_per_repeat": LATENCY_CALLS,
                   "batch256_calls_per_repeat": THROUGHPUT_CALLS,
                   "loadavg_before": load_before, "loadavg_after": load_after,
                   "onnxruntime_threads": "default (intra-op: physical cores)",
                   "jax": "jax.jit of export.inference_fn(run): steps.forward, CPU path"},
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "jax2onnx": meta["jax2onnx_version"], "onnx": meta["onnx_version"],
                     "onnxruntime": meta["onnxruntime_version"]},
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(out_json, "w") as f:
        f.write(json.dumps(result, indent=2) + "\n")
    print(json.dumps(speed, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
