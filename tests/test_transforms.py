"""jaxcnn/data/transforms.py: each host transform against a computation of its own."""

import io
import math
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcnn.config import check_config, default_config
from jaxcnn.data import images, transforms
from jaxcnn.errors import UserError

H, W = 80, 96  # source images: larger than the crops below, not square


def _png(h=H, w=W, mode="RGB", seed=0) -> bytes:
    """A lossless random image, so decoded pixels are known exactly."""
    x = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(x).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def _config(**data):
    c = default_config()
    for k, v in data.items():
        c.data[k] = v
    check_config(c)
    return c


def test_no_augmentation_is_the_in_memory_decode():
    blob = _png()
    want = images.decode(blob, (40, 32))  # folder:'s in-memory path: 32x40 (HxW)
    got = transforms.train_transform(_config(), (32, 40, 3))(blob, np.random.default_rng(0))
    assert got.dtype == np.uint8 and got.shape == (32, 40, 3)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(transforms.eval_transform(_config(), (32, 40, 3))(blob), want)


def test_random_resized_crop_keeps_torchvisions_bounds():
    rng = np.random.default_rng(0)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    for _ in range(500):
        top, left, h, w = transforms.random_resized_crop_box(rng, H, W, scale, ratio)
        assert 0 <= top <= H - h and 0 <= left <= W - w and h > 0 and w > 0
        # w, h are rounded from sqrt(area x ratio) and sqrt(area / ratio): half a pixel each
        assert 0.08 * H * W <= (w + 0.5) * (h + 0.5) and (w - 0.5) * (h - 0.5) <= H * W
        assert (w - 0.5) / (h + 0.5) <= 4 / 3 and (w + 0.5) / (h - 0.5) >= 3 / 4


def test_random_resized_crop_falls_back_to_the_central_crop():
    # No crop of 99-100% of the area has an aspect ratio of 3..4 inside an 80x96 image: after
    # ten tries torchvision takes the full width, height = round(96 / 3) = 32, centred.
    box = transforms.random_resized_crop_box(np.random.default_rng(0), H, W, (0.99, 1.0), (3, 4))
    assert box == ((80 - 32) // 2, 0, 32, 96)
    box = transforms.random_resized_crop_box(np.random.default_rng(0), H, W, (0.99, 1.0),
                                             (0.25, 0.5))  # too tall: full height, w = 40
    assert box == (0, (96 - 40) // 2, 80, 40)
    box = transforms.random_resized_crop_box(np.random.default_rng(0), H, W, (2.0, 2.0),
                                             (0.5, 2.0))  # 1.2 inside: the whole image
    assert box == (0, 0, 80, 96)


def test_random_resized_crop_output_is_that_box_resized():
    blob, rng_seed = _png(), 3
    t = transforms.train_transform(_config(random_resized_crop=(0.08, 1.0)), (24, 24, 3))
    got = t(blob, np.random.default_rng(rng_seed))
    top, left, h, w = transforms.random_resized_crop_box(
        np.random.default_rng(rng_seed), H, W, (0.08, 1.0), (3 / 4, 4 / 3))
    full = Image.open(io.BytesIO(blob))
    want = full.crop((left, top, left + w, top + h)).resize((24, 24), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_center_crop_is_torchvisions_resize_then_center_crop():
    blob = _png()
    got = transforms.eval_transform(_config(center_crop=0.875), (64, 64, 3))(blob)
    # Resize(73) (64 / 0.875 = 73.1): shorter side 80 -> 73, longer int(73 * 96 / 80) = 87;
    # CenterCrop(64): top round(9 / 2) = 4 (banker's rounding), left round(23 / 2) = 12.
    full = Image.open(io.BytesIO(blob)).convert("RGB")
    resized = full.resize((87, 73), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(got, np.asarray(resized.crop((12, 4, 76, 68))))
    assert transforms.center_crop_box(224, 224, 224, 224, 0.875)[0] == (256, 256)
    assert transforms.center_crop_box(480, 640, 224, 224, 0.875) == ((341, 256),
                                                                     (58, 16, 282, 240))


def test_pad_crop_and_flip_exact():
    x = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    zero = transforms.pad_crop(x, (0, 3), 2, "zero")  # 2 rows of zeros above, shifted 1 left
    want = np.zeros_like(x)
    want[2:, :4] = x[:2, 1:]
    np.testing.assert_array_equal(zero, want)
    refl = transforms.pad_crop(x, (4, 0), 2, "reflect")  # 2 rows down, 2 columns mirrored in
    np.testing.assert_array_equal(refl, np.pad(x, ((2, 2), (2, 2), (0, 0)), "reflect")[4:8, 0:5])
    np.testing.assert_array_equal(transforms.pad_crop(x, (2, 2), 2, "zero"), x)  # centre: same

    blob, seed = _png(32, 32), 5
    t = transforms.train_transform(_config(crop_padding=4, crop_fill="reflect", flip=True),
                                   (32, 32, 3))
    rng = np.random.default_rng(seed)
    offset, flip = tuple(rng.integers(0, 9, size=2)), rng.random() < 0.5
    want = transforms.pad_crop(images.decode(blob), offset, 4, "reflect")
    np.testing.assert_array_equal(t(blob, np.random.default_rng(seed)),
                                  want[:, ::-1] if flip else want)


def test_flip_half_the_time_and_deterministic_per_seed():
    blob = _png(16, 16)
    x = images.decode(blob)
    t = transforms.train_transform(_config(flip=True), (16, 16, 3))
    outs = [t(blob, np.random.default_rng(s)) for s in range(200)]
    mirrored = sum((o == x[:, ::-1]).all() for o in outs)
    assert all((o == x).all() or (o == x[:, ::-1]).all() for o in outs)
    assert 70 <= mirrored <= 130  # Binomial(200, 1/2): mean 100, std 7
    t = transforms.train_transform(_config(random_resized_crop=(0.08, 1.0), flip=True,
                                           crop_padding=2), (24, 24, 3))
    blob = _png()
    a, b = t(blob, np.random.default_rng(7)), t(blob, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert any((t(blob, np.random.default_rng(s)) != a).any() for s in range(8, 11))


def test_picklable_and_the_same_after():
    c = _config(random_resized_crop=(0.25, 1.0), flip=True, crop_padding=2, center_crop=0.875)
    blob = _png()
    train = transforms.train_transform(c, (24, 24, 3))
    evaluate = transforms.eval_transform(c, (24, 24, 3))
    train2, evaluate2 = pickle.loads(pickle.dumps((train, evaluate)))
    np.testing.assert_array_equal(train2(blob, np.random.default_rng(1)),
                                  train(blob, np.random.default_rng(1)))
    np.testing.assert_array_equal(evaluate2(blob), evaluate(blob))


def test_grey_images_and_channels():
    blob = _png(mode="L")
    c = _config(channels=1, random_resized_crop=(0.5, 1.0), center_crop=0.875)
    assert transforms.train_transform(c, (24, 24, 1))(blob, np.random.default_rng(0)).shape == (
        24, 24, 1)
    got = transforms.eval_transform(c, (24, 24, 1))(blob)
    assert got.shape == (24, 24, 1) and got.dtype == np.uint8
    rgb = transforms.eval_transform(_config(), (24, 24, 3))(blob)  # grey repeated to RGB
    assert (rgb[..., 0] == rgb[..., 2]).all()
    with pytest.raises(UserError, match="data.channels=1 but the images are 24x24x3"):
        transforms.train_transform(c, (24, 24, 3))


def test_refused_inputs():
    with pytest.raises(UserError, match="alternating"):
        transforms.train_transform(_config(flip="alternating"), (8, 8, 3))
    with pytest.raises(UserError, match="not an image"):
        transforms.eval_transform(_config(), (8, 8, 3))(b"not an image")
    with pytest.raises(UserError, match="data.max_image_pixels"):
        transforms.eval_transform(_config(max_image_pixels=100), (8, 8, 3))(_png())
    for field, value in (("random_resized_crop", (0.5, 0.1)), ("center_crop", 1.5),
                         ("random_resized_crop_ratio", (0.0, 1.0)), ("channels", 2)):
        with pytest.raises(UserError, match=f"data.{field} must be"):
            _config(**{field: value})


@pytest.mark.slow
def test_a_worker_that_transforms_initialises_no_jax_backend():
    """Workers must not claim a GPU: decoding and augmenting leave JAX's backends untouched."""
    code = ("import numpy as np, sys; from jaxcnn.config import default_config; "
            "from jaxcnn.data import transforms; c = default_config(); "
            "c.data.random_resized_crop = (0.08, 1.0); "
            f"transforms.train_transform(c, (8, 8, 3))({_png()!r}, np.random.default_rng(0)); "
            "from jax._src import xla_bridge; print(len(xla_bridge._backends), "
            "'flax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["0", "False"], out


def test_rrc_area_is_spread_over_the_scale_range():
    rng = np.random.default_rng(1)
    areas = [math.prod(transforms.random_resized_crop_box(rng, 200, 200, (0.08, 1.0),
                                                          (3 / 4, 4 / 3))[2:]) / 40000
             for _ in range(400)]
    # uniform on 0.08..1 where it fits: a fair share both below 0.3 and above 0.7
    assert sum(a < 0.3 for a in areas) > 60 and sum(a > 0.7 for a in areas) > 60


@pytest.mark.slow
def test_the_same_pixels_as_torchvision():
    """Center crop, and random-resized crop at a given box, equal torchvision's on PIL images."""
    import importlib.util
    if not importlib.util.find_spec("torchvision"):
        pytest.skip("torchvision is not installed: pip install -e '.[bench]'")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
    import bench
    T = bench.import_torchvision()[0].transforms
    blob = _png()
    full = Image.open(io.BytesIO(blob)).convert("RGB")
    for size, fraction, resize in ((64, 0.875, 73), (24, 0.875, 27), (70, 0.9, 78)):
        want = T.Compose([T.Resize(resize), T.CenterCrop(size)])(full)
        got = transforms.eval_transform(_config(center_crop=fraction), (size, size, 3))(blob)
        np.testing.assert_array_equal(got, np.asarray(want), err_msg=f"{size} {fraction}")
    rng = np.random.default_rng(4)
    t = transforms.train_transform(_config(random_resized_crop=(0.08, 1.0)), (24, 24, 3))
    top, left, h, w = transforms.random_resized_crop_box(np.random.default_rng(4), H, W,
                                                         (0.08, 1.0), (3 / 4, 4 / 3))
    want = T.functional.resized_crop(full, top, left, h, w, [24, 24])
    np.testing.assert_array_equal(t(blob, rng), np.asarray(want))
    # the fallback: torchvision's get_params with no crop that fits gives the same central box
    assert T.RandomResizedCrop.get_params(full, (0.99, 1.0), (3, 4)) == (
        transforms.random_resized_crop_box(rng, H, W, (0.99, 1.0), (3, 4)))
