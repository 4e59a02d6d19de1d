"""Any image size and channel count: models are sized from the data; a run of 64x64 colour
images (the seed CNN) and one of 64x48 grey images (resnet20) train, evaluate, predict from
files and export."""

import json

import numpy as np
import pytest
from conftest import QUIET, python
from PIL import Image

from jaxcnn import evaluation, export, inference, serving
from jaxcnn.config import default_config
from jaxcnn.data import Dataset
from jaxcnn.train import train_and_evaluate


def _folder(root, size_WxH=(64, 48), per_class=(6, 2)):
    """3 classes of noisy, differently tinted PNGs: train/<c>/i.png, test/<c>/i.png."""
    rng = np.random.default_rng(0)
    w, h = size_WxH
    for k, tint in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
        for split, n in zip(("train", "test"), per_class, strict=True):
            (root / split / f"c{k}").mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(tint, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{k}" / f"{i}.png")
    return root


def _config(root, model="cnn", channels=0):
    c = default_config()
    c.data.name, c.data.channels, c.model.name = f"folder:{root}", channels, model
    c.train.epochs, c.train.batch_size, c.train.steps_per_call = 1, 6, 1
    c.data.cache_dir = str(root.parent / "cache")
    return c


@pytest.mark.slow
# a grey 64x48 run goes through the scripts below (resnet20)
@pytest.mark.parametrize("size_WxH, channels", [((64, 64), 0)])
def test_a_run_on_64_pixel_images_is_sized_from_them_and_serves(tmp_path, size_WxH, channels):
    root = _folder(tmp_path / "images", size_WxH)
    c = _config(root, "cnn", channels)
    result = train_and_evaluate(c, str(tmp_path / "run"), **QUIET)
    (w, h), c_in = size_WxH, channels or 3
    # the seed CNN's first dense layer takes (H/4) x (W/4) x 64 features
    assert result.model.conv1.kernel.shape == (3, 3, c_in, 32)
    assert result.model.fc1.kernel.shape == (h // 4 * w // 4 * 64, 1024)
    run = inference.load_run(str(tmp_path / "run"))
    assert run.meta["image_shape"] == (h, w, c_in)
    data = inference.run_dataset(run)
    m = evaluation.evaluate(run.model, data.test_images, data.test_labels, run.config)
    assert m["accuracy"] == pytest.approx(result.final["test_accuracy"], abs=1e-6)
    # a file of any size and mode is converted as the training images were
    files = sorted((root / "test").rglob("*.png"))
    x = inference.prepare_images(files, run.meta["image_shape"])
    assert np.array_equal(x, data.test_images)
    export.export_run(run, str(tmp_path / "export"), platforms=("cpu",))
    served = serving.load(str(tmp_path / "export"))
    assert served.image_shape == (h, w, c_in)
    probs = serving.classify(served, serving.prepare(files, served.image_shape))["probabilities"]
    logits = inference.predict_logits(run.model, x, run.config)
    assert np.array_equal(probs.argmax(1), logits.argmax(1))


def test_grey_conversion_is_pillows():
    x = np.random.default_rng(1).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    d = Dataset(x, np.zeros(4, np.int32), x, np.zeros(4, np.int32), ("a",), "t")
    grey = d.with_channels(1)
    want = np.stack([np.asarray(Image.fromarray(i).convert("L")) for i in x])[..., None]
    assert np.array_equal(grey.train_images, want) and grey.image_shape == (5, 6, 1)
    assert np.array_equal(grey.with_channels(3).test_images, np.repeat(want, 3, axis=-1))
    small = grey.with_image_size(3)
    assert small.image_shape == (3, 3, 1) and np.array_equal(
        small.train_images[0, ..., 0],
        np.asarray(Image.fromarray(want[0, ..., 0]).resize((3, 3), Image.Resampling.BILINEAR)))


@pytest.mark.slow
def test_resnet20_on_64x48_and_the_scripts(tmp_path):
    root = _folder(tmp_path / "images")
    c = _config(root, "resnet20", 1)
    train_and_evaluate(c, str(tmp_path / "run"), **QUIET)
    run_dir = str(tmp_path / "run")
    p = python("scripts/evaluate.py", run_dir, timeout=300)
    assert p.returncode == 0, p.stderr
    p = python("scripts/predict.py", run_dir, str(root / "test" / "c0" / "0.png"), timeout=300)
    assert p.returncode == 0, p.stderr
    p = python("scripts/export.py", run_dir, "--out", str(tmp_path / "exp"), timeout=300)
    assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "exp" / "model.json").read_text())
    assert meta["image_shape"] == [48, 64, 1]
