"""Plots of a run: real PNG files read back with Pillow, and the script's bad input."""

import pathlib

import numpy as np
import pytest
from conftest import python
from PIL import Image

from jaxcnn import plots

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("curves.png", "confusion_matrix.png", "per_class.png", "predictions.png")


def _png(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG", path
        im.load()  # decodes every byte: a truncated file fails here
        rgb = np.asarray(im.convert("RGB")).astype(np.int32)
        colours = len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))
        assert colours > 50, (path, colours)  # a drawing, not a blank canvas
        return im.size


@pytest.fixture(scope="module")
def plotted(digits_run):
    workdir, _, _ = digits_run
    return workdir, plots.plot_run(str(workdir))


def test_plot_run_writes_four_pngs_in_plots(plotted):
    workdir, paths = plotted
    assert paths == [str(workdir / "plots" / n) for n in NAMES]
    curves, confusion, per_class, predictions = (_png(p) for p in paths)
    assert curves == (1000, 400)  # 10 x 4 inches at 100 dpi
    assert 500 <= confusion[0] <= 1700 and 400 <= confusion[1] <= 1600
    assert per_class == (1000, 450)  # 10 classes: 4 + 0.6 x 10 inches wide
    assert predictions == (1200, 640)  # 32 images: 4 rows of 8


def test_per_class_bars_are_evaluate_py_figures(tmp_path, monkeypatch):
    """The bars' heights are `inference.per_class` of the confusion matrix, the function
    scripts/evaluate.py prints: drawn as matplotlib bars, read back from the figure."""
    from matplotlib.axes import Axes

    from jaxcnn import inference
    cm = np.array([[8, 2, 0], [1, 5, 4], [0, 0, 10]])  # 3 classes, one never predicted wrongly
    drawn = []
    real_bar = Axes.bar
    monkeypatch.setattr(Axes, "bar", lambda self, x, h, *a, **k: drawn.append(
        (k["label"], np.asarray(h))) or real_bar(self, x, h, *a, **k))
    m = inference.per_class(cm)
    path = plots.plot_per_class(m, ["a", "b", "c"], str(tmp_path / "p.png"))
    assert _png(path) == (580, 450)
    labels = [label for label, _ in drawn]
    assert labels == [f"precision (macro {m['macro_precision']:.4f})",
                      f"recall (macro {m['macro_recall']:.4f})", f"f1 (macro {m['macro_f1']:.4f})"]
    np.testing.assert_allclose(drawn[0][1], [8 / 9, 5 / 7, 10 / 14])  # precision: by column
    np.testing.assert_allclose(drawn[1][1], [0.8, 0.5, 1.0])  # recall: by row
    np.testing.assert_allclose(drawn[2][1], 2 * drawn[0][1] * drawn[1][1] /
                               (drawn[0][1] + drawn[1][1]))


def test_predictions_mark_the_wrong_ones(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)  # gray, as from a 1-channel set
    labels, preds = np.array([0, 1, 2, 0, 1]), np.array([0, 2, 2, 0, 0])
    names = ["a", "b", "c"]
    right = _red(plots.plot_predictions(images, labels, labels, names, str(tmp_path / "r.png")))
    wrong = _red(plots.plot_predictions(images, labels, preds, names, str(tmp_path / "w.png")))
    assert right == 0 and wrong > 500  # red frames and titles around the two wrong ones


def _red(path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r > 180) & (g < 80) & (b < 80)).sum())


def test_confusion_matrix_of_many_classes_drops_the_numbers(tmp_path):
    cm = np.diag(np.arange(1, 31)).astype(np.int64)  # 30 classes: too many to annotate
    size = _png(plots.plot_confusion(cm, [str(i) for i in range(30)], str(tmp_path / "c.png")))
    assert size == (1700, 1600)  # capped at 17 x 16 inches, colour bar included


@pytest.mark.slow
def test_script_without_metrics_is_one_line_and_exit_2(tmp_path):
    p = python("scripts/plot.py", tmp_path, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"error: {tmp_path}/metrics.jsonl does not exist: give the "
                                "workdir of a run that has finished at least one epoch")
    assert not (tmp_path / "plots").exists()
