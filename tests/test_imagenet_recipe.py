"""configs/imagenet_resnet50.py end to end: a generated ImageNet-layout folder, streamed."""

import importlib.util
import json
import math

import numpy as np
import pytest
from PIL import Image

from configs.imagenet_resnet50 import get_config
from jaxcnn import feeds, models, train
from jaxcnn.data import images, transforms
from jaxcnn.models.layers import count_params

pytestmark = pytest.mark.slow

CLASSES, TRAIN, VAL = ("n01", "n02", "n03"), 4, 2  # images per class
CROP, BATCH = 32, 4  # 3 steps; ResNet-50 compiles in most of the time
RESNET50_3_CLASSES = 23_514_179  # torchvision's resnet50 (25,557,032) with a 3-way head


def _imagenet_folder(root):
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG: 96x80 (WxH) JPEGs, larger than the crop, a
    colour gradient per class under noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:96]
    for split, n in (("train", TRAIN), ("val", VAL)):
        for k, wnid in enumerate(CLASSES):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                base = np.stack([xx * (k + 1), yy * (3 - k), (xx + yy) * k], -1) % 256
                x = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(x).save(d / f"{wnid}_{i:04d}.JPEG", quality=85)
    return root


def test_the_recipe_trains_one_epoch_streamed_on_an_imagenet_layout_folder(tmp_path):
    if "resnet50" not in models.MODELS or not importlib.util.find_spec("jaxcnn.data.stream"):
        pytest.skip("needs the resnet50 model and the streamed input (jaxcnn/data/stream.py)")
    data = _imagenet_folder(tmp_path / "imagenet")
    config = get_config()
    assert (config.model.name, config.data.on_device, config.precision) == ("resnet50", "no",
                                                                              "bf16")
    config.data.name = f"folder:{data}"
    config.data.cache_dir = str(tmp_path / "cache")
    config.data.image_size = CROP  # random-resized crop / center crop to 32, not 224
    if "workers" in config.data:
        config.data.workers = 1  # one Grain worker process: the transforms travel pickled
    config.train.epochs, config.train.batch_size, config.train.eval_batch_size = 1, BATCH, 6
    config.optim.learning_rate = 0.1 * BATCH / 256  # the recipe's linear scaling rule
    config.checkpoint.async_save = False
    job, state = train.build(config)
    assert isinstance(job.feed, feeds.StreamFeed)  # training images decoded per epoch, in workers
    assert job.data.image_shape == (CROP, CROP, 3)
    # the evaluation images are val/'s, center-cropped (the recipe's eval transform)
    first_val = data / "val" / CLASSES[0] / f"{CLASSES[0]}_0000.JPEG"
    blob = first_val.read_bytes()
    np.testing.assert_array_equal(job.data.test_images[0],
                                  transforms.eval_transform(config, (CROP, CROP, 3))(blob))
    assert (job.data.test_images[0] != images.decode(blob, (CROP, CROP))).any()  # not a resize
    workdir = tmp_path / "run"
    result = train.fit(job, state, workdir=str(workdir), progress=False, log=lambda *_: None)

    assert count_params(result.model) == RESNET50_3_CLASSES
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    final = rows[-1]
    assert final["epoch"] == 1 and math.isfinite(final["train_loss"])
    # 3 classes, label smoothing 0.1: the loss starts near ln 3 = 1.10 and 3 warmup steps at
    # lr <= 0.0016 cannot move it far
    assert 0.5 < final["train_loss"] < 3.0, final["train_loss"]
    # val/ is evaluated as the test split: 6 images, so accuracy is a multiple of 1/6
    acc = final["test_accuracy"]
    assert 0 <= acc <= 1 and abs(acc * 6 - round(acc * 6)) < 1e-6, acc
