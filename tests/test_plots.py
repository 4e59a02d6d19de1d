"""Plots of a run: real PNG files read back with Pillow, and the script's bad input."""

import pathlib

import numpy as np
import pytest
from conftest import python
from PIL import Image

from jaxcnn import plots

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("curves.png", "confusion_matrix.png", "predictions.png")


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


def test_plot_run_writes_three_pngs_in_plots(plotted):
    workdir, paths = plotted
    assert paths == [str(workdir / "plots" / n) for n in NAMES]
    curves, confusion, predictions = (_png(p) for p in paths)
    assert curves == (1000, 400)  # 10 x 4 inches at 100 dpi
    assert 500 <= confusion[0] <= 1700 and 400 <= confusion[1] <= 1600
    assert predictions == (1200, 640)  # 32 images: 4 rows of 8


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
