"""ONNX export: onnxruntime gives `steps.forward`'s logits for every model, at any batch size.

The fast set exports one tiny CNN; the slow set every zoo model (small widths, the real
architectures, each TTA level, BatchNorm statistics set away from their initial values) and
the command line on the session's digits run.
"""

import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO
from flax import nnx

from jaxcnn import export, inference, models, onnx_export
from jaxcnn.config import compute_dtype, default_config
from jaxcnn.errors import UserError
from jaxcnn.inference import Run

onnx = pytest.importorskip("onnx")  # the deploy extra

# onnxruntime vs XLA, float32: the same operations, summed in another order
ATOL = 1e-4


def _run(name: str, *, tta_level: int = 0, num_classes: int = 3, precision="float32",
         **options) -> Run:
    """A model as a run, with the given TTA level and random weights (`_draw`)."""
    config = default_config()
    config.model.name, config.train.tta_level, config.precision = name, tta_level, precision
    if name == "airbench":
        config.model.airbench.widths = options.pop("widths")
    abstract = nnx.eval_shape(lambda: models.create(
        name, num_classes=num_classes, dtype=compute_dtype(config), rngs=nnx.Rngs(0),
        **models.options(config.model), **options))
    graphdef, shapes = nnx.split(abstract)
    rng = np.random.default_rng(0)
    model = nnx.merge(graphdef, jax.tree.map_with_path(lambda p, s: _draw(rng, p, s), shapes))
    names = tuple(f"class{i}" for i in range(num_classes))
    return Run(model, config, names, {"image_shape": (32, 32, 3), "checkpoint": None})


def _draw(rng: np.random.Generator, path, shape: jax.ShapeDtypeStruct) -> np.ndarray:
    """Every array of a model from numpy (no JAX initializer to compile): kernels N(0, 1/fan_in),
    BatchNorm scales and variances in [0.5, 1.5], biases and means N(0, 0.3), so that
    BatchNorm is far from the identity it starts as (a graph that used batch statistics, or
    none, would differ)."""
    name = path[-2].key  # the variable's name: kernel, bias, scale, mean, var
    if len(shape.shape) > 1:
        fan_in = int(np.prod(shape.shape[:-1]))
        x = rng.normal(0, np.sqrt(1 / fan_in), shape.shape)
    elif name in ("scale", "var"):
        x = rng.uniform(0.5, 1.5, shape.shape)
    else:
        x = rng.normal(0, 0.3, shape.shape)
    return x.astype(shape.dtype)


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (n, 32, 32, 3), np.uint8)


def _export_and_compare(run: Run, out, *, atol=ATOL) -> dict:
    """Export `run`, check model.json against the file, and compare onnxruntime with
    `inference.predict_logits` at batch sizes 1 and 5 of one graph (the reference at batch 8,
    the export's own check's shape: one compilation)."""
    meta = onnx_export.export_run(run, str(out))
    blob = (out / "model.onnx").read_bytes()
    assert meta == json.loads((out / "model.json").read_text())
    assert meta["artifact_sha256"] == hashlib.sha256(blob).hexdigest()
    assert meta["format"] == "onnx" and meta["opset"] == onnx_export.OPSET
    assert meta["class_names"] == list(run.class_names) and meta["image_shape"] == [32, 32, 3]
    assert meta["tta_level"] == run.config.train.tta_level
    graph = onnx.load_from_string(blob).graph
    (images,) = graph.input
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert images.type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch
    assert [o.name for o in graph.output] == ["logits", "probabilities"]
    sess = onnx_export.session(str(out / "model.onnx"))
    x = _images(onnx_export.CHECK_IMAGES)
    want = inference.predict_logits(run.model, x, run.config)
    for n in (1, 5):  # one graph, two batch sizes
        got = onnx_export.predict(sess, x[:n])
        np.testing.assert_allclose(got["logits"], want[:n], atol=atol, rtol=0)
        np.testing.assert_allclose(got["probabilities"], jax.nn.softmax(want[:n]), atol=atol)
    return meta


def test_tiny_cnn_in_onnxruntime_gives_the_forward_logits_at_two_batch_sizes(tmp_path):
    _export_and_compare(_run("cnn", tta_level=1, width=4, hidden=8), tmp_path)


def test_refusals_other_formats_directory_bfloat16_and_missing_packages(tmp_path, monkeypatch):
    run = _run("cnn", width=4, hidden=8)
    (tmp_path / "jax").mkdir()
    (tmp_path / "jax" / "model.jax_export").write_bytes(b"")
    with pytest.raises(UserError, match="holds a jax.export artifact"):
        onnx_export.export_run(run, str(tmp_path / "jax"))
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    with pytest.raises(UserError, match="holds an ONNX export"):
        export.export_run(run, str(tmp_path / "onnx"))
    with pytest.raises(UserError, match="computes in bfloat16"):
        onnx_export.export_run(_run("cnn", width=4, hidden=8, precision="bf16"),
                               str(tmp_path / "new"))
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # `import jax2onnx` raises ImportError
    with pytest.raises(UserError, match=r"jax2onnx is missing.*pip install -e '\.\[deploy\]'"):
        onnx_export.export_run(run, str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name, tta_level, options", [
    ("cnn", 2, dict(width=8, hidden=16)),
    ("resnet20", 0, {}),  # option-A shortcuts: zero channel padding
    ("resnet18", 1, dict(widths=(8, 16, 32, 64))),  # projection shortcuts
    ("airbench", 2, dict(widths=(16, 32, 32))),  # whitening conv, GELU, global max pool
])
def test_every_model_in_onnxruntime_gives_the_forward_logits(name, tta_level, options,
                                                              tmp_path):
    meta = _export_and_compare(_run(name, tta_level=tta_level, num_classes=10, **options),
                               tmp_path)
    assert meta["model"] == name


_NO_JAX2ONNX = """
import runpy, sys
sys.modules["jax2onnx"] = None
sys.argv = ["scripts/export.py", *sys.argv[1:]]
runpy.run_path("scripts/export.py", run_name="__main__")
"""


@pytest.mark.slow
def test_export_cli_writes_onnx_of_a_saved_run_and_refuses_bad_input(digits_run, tmp_path):
    workdir = str(digits_run[0])
    out = tmp_path / "onnx"
    export_py = [sys.executable, "scripts/export.py", workdir]
    runs = {
        "onnx": export_py + ["--format", "onnx", "--out", str(out)],
        "unknown_format": export_py + ["--format", "tflite"],
        "platforms": export_py + ["--format", "onnx", "--platforms", "cpu"],
        "no_jax2onnx": [sys.executable, "-c", _NO_JAX2ONNX, workdir, "--format", "onnx",
                        "--out", str(tmp_path / "never")],
    }
    procs = {k: subprocess.Popen(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
             for k, cmd in runs.items()}
    outs = {k: p.communicate(timeout=240) for k, p in procs.items()}
    res = {k: (procs[k].returncode, *outs[k]) for k in procs}
    rc, stdout, stderr = res["onnx"]
    assert rc == 0, stderr[-3000:]
    assert f"to {out}/model.onnx" in stdout and "tta_level 2" in stdout
    for name, message in (("unknown_format", "--format"), ("platforms", "--platforms is for"),
                          ("no_jax2onnx", "pip install -e '.[deploy]'")):
        rc, _, stderr = res[name]
        assert rc == 2 and stderr.startswith("error: ") and message in stderr, (name, stderr)
        assert len(stderr.strip().splitlines()) == 1, (name, stderr)
    assert not os.path.exists(tmp_path / "never")
    # the saved run's test images: onnxruntime as the run's own evaluation forward (TTA 2)
    run = inference.load_run(workdir)
    x = inference.run_dataset(run).test_images[:64]
    meta = json.loads((out / "model.json").read_text())
    assert meta["class_names"] == list(run.class_names) and meta["step"] == run.meta["step"]
    got = onnx_export.predict(onnx_export.session(str(out / "model.onnx")), x)["logits"]
    np.testing.assert_allclose(got, inference.predict_logits(run.model, x, run.config),
                               atol=ATOL, rtol=0)
