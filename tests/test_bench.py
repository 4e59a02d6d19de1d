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
ROWS = ["train cnn b64", "train resnet20 b64", "infer cnn b1024", "infer cnn b1"]

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
