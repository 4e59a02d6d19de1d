"""scripts/bench.py end to end: a tiny jaxcnn-only run reports every row with sane numbers."""

import json
import math
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = [sys.executable, str(REPO / "scripts" / "bench.py")]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_run_writes_every_row_as_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""))
    p = subprocess.run([*BENCH, "--quick", "--no-torch", "--steps", "1", "--per-call", "1",
                        "--repeats", "2", "--warmup", "0", "--scaling", "--cpu-devices", "2",
                        "--json", str(out)], capture_output=True, text=True,
                       timeout=300, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    rows = {r["name"]: r for r in res["rows"]}
    assert list(rows) == ["train b64", "train b512", "infer b1024", "infer b1"]
    for name, r in rows.items():
        j = r["jaxcnn"]
        assert r["pytorch"] is None and r["ratio"] is None, name
        assert j["steps"] == 1 and j["repeats"] == 2 and len(j["samples"]) == 2, name
        for key in ("images_per_s", "min", "max", "first_call_s"):
            assert _positive(j[key]), (name, key, j[key])
        assert all(_positive(x) for x in j["samples"]), (name, j["samples"])
        assert j["min"] <= j["images_per_s"] <= j["max"], name
        assert ("epoch_s" in j) == (r["kind"] == "train"), name
    assert _positive(rows["train b64"]["jaxcnn"]["epoch_s"])
    assert res["machine"]["jax_backend"] and res["machine"]["versions"]["jax"]
    # The Markdown table on stdout has the same rows.
    for name in rows:
        assert f"| {name} |" in p.stdout, name
    # The scaling table: one row per mesh size that exists (JAX_PLATFORMS may pick a GPU).
    scaling = res["scaling"]
    assert [r["devices"] for r in scaling][:1] == [1] and scaling[0]["speedup"] == 1.0
    assert all(_positive(r["images_per_s"]) for r in scaling)
    if res["machine"]["jax_backend"] == "cpu":
        assert [r["devices"] for r in scaling] == [1, 2]
        assert "| 2 |" in p.stdout and "overhead" in p.stdout
