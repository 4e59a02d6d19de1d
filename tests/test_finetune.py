"""Fine-tuning: a linear probe moves only the head; heads are named and replaced."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcnn import checkpoint, finetune, models
from jaxcnn.config import default_config
from jaxcnn.data import load
from jaxcnn.errors import UserError
from jaxcnn.train import train_and_evaluate

QUIET = dict(progress=False, log=lambda *_: None)


def tiny_resnet(num_classes):
    return models.ResNet(num_classes, stage_sizes=(1, 1), widths=(8, 16), shortcut="zero_pad",
                         rngs=nnx.Rngs(1))


def config(epochs, batch_size=32):
    c = default_config()
    c.data.name = "digits"
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = epochs, batch_size, 200
    c.train.steps_per_call = 1  # one compiled step: a few steps per epoch need no loop
    return c


def test_linear_probe_moves_only_the_head(tmp_path):
    digits = load("digits")
    pre = config(1)
    pre.data.classes, pre.data.train_per_class = "0,1,2,3,4", 40
    train_and_evaluate(pre, str(tmp_path / "pre"), dataset=digits, model=tiny_resnet(5), **QUIET)
    saved, meta = checkpoint.load_arrays(str(tmp_path / "pre"))
    assert meta["num_classes"] == 5

    c = config(2)
    c.data.classes, c.data.train_per_class = "5,6,7", 30
    c.finetune.init_from, c.finetune.mode = str(tmp_path / "pre"), "linear_probe"
    r = train_and_evaluate(c, None, dataset=digits, model=tiny_resnet(3), **QUIET)
    head_init = nnx.state(tiny_resnet(3).head)
    params = nnx.state(r.model, nnx.Param)
    stats = nnx.state(r.model, nnx.BatchStat)
    n_checked = 0
    for group, tree in (("params", params), ("model_state", stats)):
        for keys, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
            name = checkpoint.path_name(keys)
            if name.startswith("head/"):
                continue
            np.testing.assert_array_equal(x, saved[f"{group}/{name}"], err_msg=name)
            n_checked += 1
    backbone = [k for k in saved if k.split("/")[0] in ("params", "model_state")
                and k.split("/")[1] != "head"]
    assert n_checked == len(backbone) and len(jax.tree.leaves(stats)) == 10  # 5 BatchNorms
    for a, b in zip(jax.tree.leaves(head_init), jax.tree.leaves(nnx.state(r.model.head)),
                    strict=True):
        assert not np.allclose(a, b)  # the head learnt
    assert r.model.head.out_features == 3


def test_replace_head_and_errors():
    model = models.create("resnet20", num_classes=10, rngs=nnx.Rngs(0))
    stem = np.asarray(model.stem.kernel[...])
    finetune.replace_head(model, 3, rngs=nnx.Rngs(1))
    assert model.head.out_features == 3 and model.head.in_features == 64
    np.testing.assert_array_equal(model.stem.kernel[...], stem)
    assert finetune.head_name(models.create("cnn", num_classes=2, rngs=nnx.Rngs(0))) == "fc2"

    class NoHead(nnx.Module):
        pass

    with pytest.raises(UserError, match="set its class attribute HEAD"):
        finetune.head_name(NoHead())


@pytest.mark.slow
def test_fine_tuning_beats_training_from_scratch(tmp_path, cifar10_jpeg):
    """CIFAR-10 (JPEG copy): pretrain on the animals, then learn the unseen vehicles from 50
    images each. Measured (4,000 vehicle test images): fine-tuned 0.547 / 0.509 / 0.531 vs
    scratch 0.500 / 0.467 / 0.464 for seeds 0 / 1 / 2."""
    quiet = lambda *_: None  # noqa: E731
    animals = cifar10_jpeg.subset("bird,cat,deer,dog,frog,horse", train_per_class=5000)
    vehicles = cifar10_jpeg.subset("airplane,automobile,ship,truck", train_per_class=50)
    c = default_config()
    c.train.epochs, c.data.flip = 1, True
    train_and_evaluate(c, str(tmp_path / "animals"), dataset=animals, progress=False, log=quiet)
    acc = {}
    for seed in (0, 1):
        for init in (str(tmp_path / "animals"), ""):
            c = default_config()
            c.seed, c.train.epochs, c.train.batch_size, c.data.flip = seed, 3, 50, True
            c.finetune.init_from, c.finetune.mode = init, "full"
            r = train_and_evaluate(c, None, dataset=vehicles, progress=False, log=quiet)
            acc[seed, bool(init)] = r.final["test_accuracy"]
    for seed in (0, 1):
        assert acc[seed, True] > acc[seed, False], acc
    mean = {ft: (acc[0, ft] + acc[1, ft]) / 2 for ft in (True, False)}
    assert mean[True] > mean[False] + 0.02, acc
