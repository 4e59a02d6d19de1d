"""scripts/bench.py end to end: a tiny jaxcnn-only run reports its rows with sane numbers."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = [sys.executable, str(REPO / "scripts" / "bench.py")]
# One row of each kind (train, infer, latency). The ResNet-20 row (its recipe from configs/)
# cost 17 s of the test's 49 s on two CPU cores, for the same measuring code.
ROWS = ["train cnn b64", "infer cnn b1024", "infer cnn b1"]

pytestmark = pytest.mark.slow


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_run_writes_every_row_as_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""))
    p = subprocess.run([*BENCH, "--quick", "--no-torch", "--rows", ",".join(ROWS),
                        "--steps", "2", "--repeats", "2", "--warmup", "0", "--scaling",
                        "--cpu-devices", "2", "--json", str(out)], capture_output=True,
                       text=True, timeout=600, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    rows = {r["name"]: r for r in res["rows"]}
    assert list(rows) == ROWS
    assert [r["kind"] for r in rows.values()] == ["train", "infer", "latency"]
    for name, r in rows.items():
        e = r["engine"]
        assert r["pytorch"] is None, name
        assert e["repeats"] == 2 and len(e["samples"]) == len(e["seconds"]) == 2, name
        for key in ("images_per_s", "min", "max", "compile_s", "first_call_s"):
            assert _positive(e[key]), (name, key, e[key])
        assert e["min"] <= e["images_per_s"] <= e["max"], name
        if r["kind"] == "train":  # the loop's steps per call, and its one-per-step twin
            assert e["steps_per_call"] == 16 and r["one_per_step"]["steps_per_call"] == 1
            assert e["calls"] * e["steps_per_call"] >= 2
        else:
            assert r["one_per_step"] is None
    assert rows["infer cnn b1"]["engine"]["ms_per_call"] > 0  # latency: each call waited for
    assert res["machine"]["jax_backend"] and res["machine"]["versions"]["jax"]
    for name in rows:  # the Markdown table on stdout has the same rows
        assert f"| {name} |" in p.stdout, name
    scaling = res["scaling"]  # one row per mesh size that exists (JAX_PLATFORMS may pick a GPU)
    assert [r["devices"] for r in scaling][:1] == [1] and scaling[0]["speedup"] == 1.0
    assert all(_positive(r["images_per_s"]) for r in scaling)
    if res["machine"]["jax_backend"] == "cpu":
        assert [r["devices"] for r in scaling] == [1, 2]
        assert "| 2 |" in p.stdout and "overhead" in p.stdout


def _image_folder(root: pathlib.Path, classes: int = 2, per_class: int = 48) -> pathlib.Path:
    """train/<class>/<i>.jpg (and 2 per class in test/): random 24x20 JPEGs, larger than the
    16x16 crop."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, c in [("train", c) for c in range(classes)] + [("test", c) for c in range(classes)]:
        d = root / split / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class if split == "train" else 2):
            x = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(x).save(d / f"{i:03d}.jpg", quality=90)
    return root


def test_input_run_times_grain_and_pytorch_per_worker_count(tmp_path):
    import importlib.util
    if not (importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision")):
        pytest.skip("the PyTorch side needs torch and torchvision: pip install -e '.[bench]'")
    data = _image_folder(tmp_path / "folder")
    out = tmp_path / "bench-input.json"
    p = subprocess.run([*BENCH, "--input", "--input-data", str(data), "--input-workers", "0,1",
                        "--input-images", "64", "--input-batch", "16", "--input-size", "16",
                        "--repeats", "2", "--input-cache", str(tmp_path / "cache"),
                        "--json", str(out)], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    info = res["machine"]
    assert (info["images"], info["batch_size"], info["image_size"]) == (64, 16, 16)
    assert info["versions"]["grain"] and info["versions"]["torchvision"]
    assert [r["workers"] for r in res["rows"]] == [0, 1]
    for r in res["rows"]:
        for side in ("jaxcnn", "pytorch"):
            s = r[side]
            # the first batch (and one per worker) starts the timer: the rest is timed
            assert s["images_timed"] == 64 - 16 * max(1, r["workers"]), (r["name"], side)
            assert len(s["samples"]) == len(s["seconds"]) == len(s["first_batches_s"]) == 2
            assert all(_positive(x) for x in s["samples"] + s["first_batches_s"])
            assert s["min"] <= s["images_per_s"] <= s["max"]
        assert f"| {r['workers']} | " in p.stdout  # the table on stdout has the row
    assert "jaxcnn (Grain)" in p.stdout and "PyTorch DataLoader" in p.stdout
