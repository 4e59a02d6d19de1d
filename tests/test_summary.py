"""Model summary: per-layer parameters that add up to count_params, FLOPs counted from shapes."""

import pathlib

import pytest
from conftest import python
from flax import nnx

from jaxcnn import models, summary
from jaxcnn.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]

# The seed CNN on a 32x32x3 image, layer by layer: multiply-adds = output elements x dot length.
CNN_MACS = (32 * 32 * 32 * (3 * 3 * 3)  # conv1: 32x32x32 outputs, 3x3x3 window
            + 16 * 16 * 64 * (3 * 3 * 32)  # conv2 after a 2x2 pool: 16x16x64, 3x3x32 window
            + 4096 * 1024  # fc1: 8x8x64 = 4096 features after the second pool
            + 1024 * 10)  # fc2
CNN_FLOPS = 2 * CNN_MACS  # 19,615,744


@pytest.mark.parametrize("name,total", [("cnn", 4_224_970), ("resnet20", 269_722),
                                        ("resnet18", 11_173_962)])
def test_totals_equal_count_params(name, total):
    s = summary.summarize(summary.abstract_model(name, 10, (32, 32, 3)), (32, 32, 3))
    assert s.params == total == sum(layer.count for layer in s.layers)


def test_the_original_models_add_up():
    # the zoo from the papers is checked against its published counts in test_zoo.py
    for name in ("cnn", "resnet20", "resnet18", "airbench"):
        model = summary.abstract_model(name, 7, (32, 32, 3))
        s = summary.summarize(model, (32, 32, 3))
        assert s.params == models.count_params(model), name
        assert s.flops > 0, name


def test_cnn_layers_and_hand_counted_flops():
    model = models.create("cnn", num_classes=10, rngs=nnx.Rngs(0))  # a real one, not abstract
    s = summary.summarize(model, (32, 32, 3))
    assert s.flops == CNN_FLOPS == 19_615_744
    assert [(r.path, r.shapes, r.count) for r in s.layers] == [
        ("conv1", {"bias": (32,), "kernel": (3, 3, 3, 32)}, 896),
        ("conv2", {"bias": (64,), "kernel": (3, 3, 32, 64)}, 18_496),
        ("fc1", {"bias": (1024,), "kernel": (4096, 1024)}, 4_195_328),
        ("fc2", {"bias": (10,), "kernel": (1024, 10)}, 10_250)]
    lines = summary.table(model, (32, 32, 3)).splitlines()
    assert len(lines) == 6 and lines[1].split()[:2] == ["conv1", "896"]
    assert lines[-1].split()[:4] == ["total", "4,224,970", "19.6", "MFLOPs"]


def test_resnet_layers_in_forward_order_and_flops():
    s = summary.summarize(summary.abstract_model("resnet18", 10, (32, 32, 3)), (32, 32, 3))
    paths = [r.path for r in s.layers]
    assert paths[:4] == ["stem", "stem_bn", "blocks.0.conv1", "blocks.0.bn1"]
    assert paths[-1] == "head" and "blocks.2.proj" in paths
    # stem + the 16 block convs + 3 projections + head, from their shapes, by hand:
    macs = 32 * 32 * 64 * 27  # stem
    for cin, cout, size in ((64, 64, 32), (64, 128, 16), (128, 256, 8), (256, 512, 4)):
        macs += size * size * cout * 9 * cin  # first conv of the stage (strided when cin != cout)
        macs += 3 * size * size * cout * 9 * cout  # its three other 3x3 convs
        if cin != cout:
            macs += size * size * cout * cin  # 1x1 projection shortcut
    macs += 512 * 10
    assert s.flops == 2 * macs


def test_other_image_shapes_and_bad_ones():
    s = summary.summarize(summary.abstract_model("cnn", 10, (28, 28, 1)), (28, 28, 1))
    assert s.layers[0].shapes["kernel"] == (3, 3, 1, 32)
    assert s.layers[2].shapes["kernel"] == (7 * 7 * 64, 1024)
    wide = summary.summarize(summary.abstract_model("cnn", 10, (28, 40, 1)), (28, 40, 1))
    assert wide.layers[2].shapes["kernel"] == (7 * 10 * 64, 1024)  # H/4 x W/4 x 64
    with pytest.raises(UserError, match="at least 4x4 pixels"):
        summary.abstract_model("cnn", 10, (3, 8, 1))
    with pytest.raises(UserError, match="not HxWxC"):
        summary.parse_image_shape("32x32")
    assert summary.parse_image_shape("28x28x1") == (28, 28, 1)


@pytest.mark.slow
def test_script_prints_the_table():
    p = python("scripts/summary.py", "resnet20", "--num-classes", "100", timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0] == "resnet20, 100 classes" and len(lines) == 2 + 39 + 1  # 39 layers
    assert lines[-1].split()[:3] == ["total", f"{269_722 - 650 + 6_500:,}", "81.1"]  # head 64x100


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'vgg'"):
        summary.abstract_model("vgg", 10, (32, 32, 3))


def test_run_log_shows_the_table(digits_run):
    _, _, lines = digits_run
    table = next(line for line in lines if line.startswith("layer"))
    assert table.splitlines()[-1].split()[:3] == ["total", "4,224,970", "19.6"]
