"""Using a saved model: load_run, evaluate, predict, export and serve, and their bad input.

The session's tiny digits run (conftest.py, test-time augmentation level 2) is shared by every
test; the scripts run as subprocesses (slow set), all started at once (`cli_runs`), since each
spends seconds importing JAX.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from jaxcnn import checkpoint, evaluation, export, inference
from jaxcnn.data import load
from jaxcnn.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
ATOL = 1e-5  # exported vs in-process logits: the same float32 program, compiled separately


@pytest.fixture(scope="module")
def trained(digits_run):
    """The session's tiny digits run (conftest.py): 2 epochs x 9 steps of 32, TTA level 2."""
    workdir, config, _ = digits_run
    return workdir, config


@pytest.fixture(scope="module")
def images(trained, tmp_path_factory):
    """Four test images as PNG, one RGBA 50x40 and one greyscale 32x32 image; their arrays."""
    d = tmp_path_factory.mktemp("images")
    test = load("digits").test_images
    paths, expected = [], []
    for i in range(4):
        paths.append(d / f"test{i}.png")
        Image.fromarray(test[i]).save(paths[-1])
        expected.append(test[i])  # PNG is lossless
    big = Image.fromarray(test[4]).resize((50, 40), Image.Resampling.NEAREST)
    big.convert("RGBA").save(d / "rgba.png")  # opaque: dropping alpha gives `big` back
    paths.append(d / "rgba.png")
    expected.append(np.asarray(big.resize((32, 32), Image.Resampling.BILINEAR)))
    grey = Image.fromarray(test[5]).convert("L")
    grey.save(d / "grey.png")
    paths.append(d / "grey.png")
    expected.append(np.repeat(np.asarray(grey)[..., None], 3, axis=-1))
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    return [str(p) for p in paths], np.stack(expected), d


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    meta = export.export_run(inference.load_run(str(trained[0])), str(out))
    return out, meta


_SERVE = """
import contextlib, io, json, sys
import numpy as np
import serving
model = serving.load(sys.argv[1])
x = np.load(sys.argv[2])
outs = {f"{k}_{n}": v for n in (3, 7) for k, v in serving.classify(model, x[:n]).items()}
np.savez(sys.argv[3], **outs)
rc = serving.main([sys.argv[1], *sys.argv[6:], "--top-k", "2", "--json", sys.argv[4]])
err = io.StringIO()
with contextlib.redirect_stderr(err):
    bad = [serving.main([sys.argv[1], p]) for p in ("missing.png", sys.argv[5])]
print(json.dumps({"rc": rc, "bad": bad, "err": err.getvalue(),
                  "modules": sorted(m for m in sys.modules
                                    if m.split(".")[0] in ("flax", "jaxcnn", "optax", "orbax"))}))
"""


@pytest.fixture(scope="module")
def cli_runs(trained, images, exported, tmp_path_factory):
    """Every script run this module checks, started together, finished when they all are."""
    wd, (paths, arrays, d) = str(trained[0]), images
    tmp = tmp_path_factory.mktemp("cli")
    empty = tmp / "empty"
    empty.mkdir()
    shutil.copy(REPO / "jaxcnn" / "serving.py", tmp / "serving.py")  # alone, as users copy it
    np.save(tmp / "x.npy", np.concatenate([arrays, arrays[:1]]))  # 7 images
    py = [sys.executable]
    runs = {
        "evaluate": py + ["scripts/evaluate.py", wd, "--json", str(tmp / "eval.json")],
        "predict": py + ["scripts/predict.py", wd, *paths, "--top-k", "3", "--json",
                         str(tmp / "pred.json")],
        "serve": py + ["-c", textwrap.dedent(_SERVE), str(exported[0]), str(tmp / "x.npy"),
                       str(tmp / "serve.npz"), str(tmp / "serve.json"), str(d / "corrupt.png"),
                       *paths],
        "no_checkpoint": py + ["scripts/evaluate.py", str(empty)],
        "missing_image": py + ["scripts/predict.py", wd, paths[0], str(d / "missing.png")],
        "corrupt_image": py + ["scripts/predict.py", wd, paths[0], str(d / "corrupt.png")],
    }
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = {k: subprocess.Popen(cmd, cwd=tmp if k == "serve" else REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k, cmd in runs.items()}
    outs = {k: p.communicate(timeout=240) for k, p in procs.items()}
    return {k: (procs[k].returncode, *outs[k]) for k in procs}, tmp


def _ok(cli_runs, name):
    rc, out, err = cli_runs[0][name]
    assert rc == 0, err[-3000:]
    return out


def test_load_run_restores_the_trained_model_from_a_workdir_or_checkpoint(trained):
    wd, config = trained
    step = max(int(p.name) for p in (wd / "checkpoints").iterdir())
    last = checkpoint.load_arrays(str(wd / "checkpoints" / str(step)))[0]
    for path in (wd, wd / "checkpoints" / str(step)):
        run = inference.load_run(str(path))
        assert run.class_names == tuple(str(i) for i in range(10))
        assert run.meta["image_shape"] == (32, 32, 3) and run.meta["step"] == step == 18
        assert run.config.train.batch_size == 32 and run.config.data.name == "digits"
        assert run.config.to_dict() == config.to_dict()
        model = nnx.state(run.model, nnx.Param)
        for name, x in checkpoint._flat(model).items():  # every parameter, as saved
            np.testing.assert_array_equal(x, last[f"params/{name}"])


def test_predict_logits_batches_are_padded_and_agree(trained):
    run = inference.load_run(str(trained[0]))
    x = load("digits").test_images[:37]
    full = inference.predict_logits(run.model, x, run.config)
    by_8 = inference.predict_logits(run.model, x, run.config, batch_size=8)  # 5 batches, 3 pad
    assert full.shape == (37, 10) and full.dtype == np.float32
    np.testing.assert_allclose(by_8, full, atol=1e-5)
    assert inference.predict_logits(run.model, x[:0], run.config).shape == (0, 10)


def test_per_class_precision_recall_f1_from_a_confusion_matrix():
    # rows: true class; 3 classes, class 2 never predicted
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 4, 0]])
    m = inference.per_class(cm)
    assert m["per_class_recall"] == m["per_class_accuracy"] == [0.8, 0.75, 0.0]
    assert m["per_class_precision"] == pytest.approx([8 / 9, 3 / 9, 0.0])
    p, r = 8 / 9, 0.8
    assert m["per_class_f1"] == pytest.approx([2 * p * r / (p + r), 2 * (1 / 3) * 0.75 /
                                                (1 / 3 + 0.75), 0.0])
    assert m["macro_f1"] == pytest.approx(sum(m["per_class_f1"]) / 3)
    assert m["per_class_count"] == [10, 4, 4]


def test_confusion_matrix_rows_are_true_classes():
    cm = inference.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(ValueError, match="outside 0..2"):
        inference.confusion_matrix([0, 3], [0, 0], 3)


def test_the_evaluation_path_gives_the_runs_final_figures_with_tta(trained):
    wd, _ = trained
    final = json.loads((wd / "metrics.jsonl").read_text().splitlines()[-1])
    run = inference.load_run(str(wd))
    data = inference.run_dataset(run)
    m = evaluation.evaluate(run.model, data.test_images, data.test_labels, run.config)
    assert final["tta_level"] == 2 and m["count"] == 360
    assert m["accuracy"] == final["test_accuracy"] and m["loss"] == final["test_loss"]
    cm = m["confusion_matrix"]
    assert cm.sum() == 360 and np.trace(cm) == round(final["test_accuracy"] * 360)
    # the predictions and the exported forward carry the same TTA: their argmax agrees
    logits = inference.predict_logits(run.model, data.test_images, run.config)
    assert (logits.argmax(-1) == data.test_labels).sum() == np.trace(cm)
    plain = evaluation.evaluate(run.model, data.test_images, data.test_labels,
                                _with_tta(run.config, 0))
    assert plain["accuracy"] == final["test_accuracy_no_tta"]


def _with_tta(config, level):
    c = config.copy_and_resolve_references()
    c.train.tta_level = level
    return c


@pytest.mark.slow
def test_evaluate_equals_the_runs_final_test_accuracy(trained, cli_runs):
    wd, _ = trained
    final = json.loads((wd / "metrics.jsonl").read_text().splitlines()[-1])
    out = _ok(cli_runs, "evaluate")
    rep = json.loads((cli_runs[1] / "eval.json").read_text())
    assert rep["count"] == 360 and rep["split"] == "test" and rep["tta_level"] == 2
    # the engine's own evaluation, TTA included: exactly the run's figure
    assert final["tta_level"] == 2 and final["test_accuracy"] != final["test_accuracy_no_tta"]
    assert rep["accuracy"] == final["test_accuracy"]
    assert rep["loss"] == pytest.approx(final["test_loss"], rel=1e-6)
    cm = np.asarray(rep["confusion_matrix"])
    assert cm.sum() == 360 and np.trace(cm) == round(rep["accuracy"] * 360)
    np.testing.assert_allclose(rep["per_class_accuracy"], np.diag(cm) / cm.sum(1))
    assert f"accuracy={final['test_accuracy']:.4f}" in out and "confusion matrix" in out


def test_prepare_images_converts_like_the_folder_loader(images):
    paths, expected, d = images
    np.testing.assert_array_equal(inference.prepare_images(paths, (32, 32, 3)), expected)
    with Image.open(paths[4]) as im:  # Pillow images too, whatever their mode
        np.testing.assert_array_equal(inference.prepare_images([im], (32, 32, 3))[0],
                                      expected[4])
    with pytest.raises(UserError, match=r"image .*missing.png does not exist"):
        inference.prepare_images([str(d / "missing.png")], (32, 32, 3))
    with pytest.raises(UserError, match=r"cannot decode image .*corrupt.png"):
        inference.prepare_images([str(d / "corrupt.png")], (32, 32, 3))


@pytest.mark.slow
def test_predict_gives_the_argmax_of_the_models_logits(trained, images, cli_runs):
    paths, arrays, _ = images
    run = inference.load_run(str(trained[0]))
    probs = np.asarray(jax.nn.softmax(inference.predict_logits(run.model, arrays, run.config)))
    out = _ok(cli_runs, "predict")
    rows = json.loads((cli_runs[1] / "pred.json").read_text())
    assert [r["image"] for r in rows] == paths
    for r, p in zip(rows, probs, strict=True):
        assert [t["index"] for t in r["top_k"]] == list(np.argsort(-p, kind="stable")[:3])
        assert r["top_k"][0]["class"] == run.class_names[int(p.argmax())]
        np.testing.assert_allclose([t["probability"] for t in r["top_k"]],
                                   np.sort(p)[::-1][:3], atol=1e-6)
    assert out.count("  1. ") == len(paths) and out.split("\n")[0] == paths[0]


@pytest.mark.slow
def test_exported_model_matches_in_a_process_without_flax_or_jaxcnn(trained, images, exported,
                                                                   cli_runs):
    out_dir, meta = exported
    assert meta["platforms"] == ["cpu", "cuda"] and meta["jax_version"] == jax.__version__
    assert meta["class_names"] == [str(i) for i in range(10)] and meta["input_dtype"] == "uint8"
    assert json.loads((out_dir / "model.json").read_text()) == meta
    report = json.loads(_ok(cli_runs, "serve").strip().splitlines()[-1])
    assert report["modules"] == [], report["modules"]  # jax, numpy and Pillow only
    assert report["rc"] == 0 and report["bad"] == [2, 2], report
    assert "missing.png does not exist" in report["err"] and "cannot decode" in report["err"]
    run = inference.load_run(str(trained[0]))
    x = np.load(cli_runs[1] / "x.npy")
    logits = inference.predict_logits(run.model, x, run.config)
    served = np.load(cli_runs[1] / "serve.npz")
    for n in (3, 7):  # two batch sizes through one artifact: the batch is symbolic
        np.testing.assert_allclose(served[f"logits_{n}"], logits[:n], atol=ATOL)
        np.testing.assert_allclose(served[f"probabilities_{n}"],
                                   jax.nn.softmax(logits[:n]), atol=ATOL)
    rows = json.loads((cli_runs[1] / "serve.json").read_text())
    pred = json.loads((cli_runs[1] / "pred.json").read_text())
    assert [r["top_k"][0]["index"] for r in rows] == [r["top_k"][0]["index"] for r in pred]


@pytest.mark.parametrize("name, message", [
    ("no_checkpoint", "no checkpoint in "),
    ("missing_image", "missing.png does not exist or is not a file"),
    ("corrupt_image", "cannot decode image "),
])
@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(cli_runs, name, message):
    rc, out, err = cli_runs[0][name]
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], err


def test_load_run_refuses_a_workdir_without_checkpoint_or_config(trained, tmp_path):
    with pytest.raises(UserError, match="no checkpoint in"):
        inference.load_run(str(tmp_path))
    with pytest.raises(UserError, match="no checkpoint at"):
        inference.load_run(str(tmp_path / "nope"))
    wd = tmp_path / "copy"
    shutil.copytree(trained[0] / "checkpoints", wd / "checkpoints")
    with pytest.raises(UserError, match="config.json does not exist"):
        inference.load_run(str(wd))
