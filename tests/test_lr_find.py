"""The learning-rate range test (jaxcnn/lr_find.py, scripts/lr_find.py) on real digits."""

import csv
import json

import jax
import numpy as np
import pytest
from conftest import python, small_digits
from flax import nnx
from PIL import Image

from jaxcnn import lr_find, models
from jaxcnn.config import default_config
from jaxcnn.errors import UserError

LOW, HIGH, STEPS = 1e-4, 100.0, 32


def _small_seed_cnn() -> nnx.Module:
    """The seed CNN at width 8, its weights and biases drawn as the seed's (PyTorch's default:
    uniform within 1 / sqrt(fan_in)) by numpy: no compiled initialisers to wait for."""
    graphdef, shapes = nnx.split(nnx.eval_shape(
        lambda: models.CNN(10, width=8, hidden=32, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)

    def init(path, x):
        fan_in = int(np.prod(shapes[path[0].key]["kernel"].shape[:-1]))
        return (rng.uniform(-1, 1, x.shape) / np.sqrt(fan_in)).astype(x.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(init, shapes))


@pytest.fixture(scope="module")
def found():
    """The seed config (Adam) on 256 digits, batches of 32: 8 steps an epoch, the rate x 1.56
    a step; a small seed CNN, so that it compiles in a second."""
    c = default_config()
    c.data.name = "digits"
    c.train.batch_size = 32
    return lr_find.range_test(c, low=LOW, high=HIGH, steps=STEPS, dataset=small_digits(256),
                              model=_small_seed_cnn())


def test_rate_grows_geometrically_and_the_loss_turns(found):
    n = len(found.lrs)
    assert found.stopped == "diverged" and 10 < n < STEPS  # stopped before the end
    np.testing.assert_allclose(found.lrs, LOW * (HIGH / LOW) ** (np.arange(n) / (STEPS - 1)),
                               rtol=1e-12)
    np.testing.assert_allclose(found.lrs[1:] / found.lrs[:-1], (HIGH / LOW) ** (1 / 31),
                               rtol=1e-12)
    assert lr_find.rates(LOW, HIGH, STEPS)[-1] == pytest.approx(HIGH, rel=1e-12)
    first, lowest = found.smoothed[0], found.smoothed.min()
    assert first == pytest.approx(np.log(10), abs=0.1)  # chance level at the start
    assert lowest < 0.9 * first and found.smoothed[-1] > first  # it learnt, then lost it all


def test_suggestion_is_inside_the_range_below_the_turn(found):
    turn = found.lrs[int(found.smoothed.argmin())]
    assert LOW < found.suggested < turn < found.lrs[-1] <= HIGH
    i = int(np.flatnonzero(found.lrs == found.suggested)[0])
    assert found.smoothed[i + 1] < found.smoothed[i - 1]  # the loss falls there


def test_files_hold_the_points(found, tmp_path):
    paths = lr_find.write(found, str(tmp_path / "out"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["lr_find.json", "lr_find.csv",
                                                    "lr_find.png"]
    with open(paths[0]) as f:
        saved = json.load(f)
    assert saved["suggested_lr"] == found.suggested and saved["stopped"] == "diverged"
    assert saved["lr"] == found.lrs.tolist() and saved["loss"] == found.losses.tolist()
    with open(paths[1]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(found.lrs)
    assert float(rows[-1]["lr"]) == pytest.approx(found.lrs[-1], rel=1e-5)
    with Image.open(paths[2]) as im:
        assert im.format == "PNG" and im.size == (700, 450)


def test_smoothing_and_divergence_rules():
    # beta 0.5: averages 0.5, 1.25 (bias-corrected by 0.5, 0.75)
    np.testing.assert_allclose(lr_find.smooth(np.array([1.0, 2.0]), 0.5), [1.0, 5 / 3])
    assert lr_find.beta_for(100) == 0.95 and lr_find.beta_for(1000) == 0.98
    assert lr_find._diverged_at(np.array([10.0, 2.0, 7.9, 8.1]), 4.0) == 4  # > 4 x the lowest
    assert lr_find._diverged_at(np.array([2.0, 1.7, 2.1]), 4.0) == 3  # back above the start
    assert lr_find._diverged_at(np.array([2.0, 1.9, 2.1]), 4.0) is None  # never 10% below
    assert lr_find._diverged_at(np.array([2.0, np.nan]), 4.0) == 2


def test_bad_ranges_are_refused():
    with pytest.raises(UserError, match=r"needs 0 < low < high \(finite\), got low=1 high=0.1"):
        lr_find.rates(1.0, 0.1, 10)
    with pytest.raises(UserError, match="needs at least 2 steps, got 0"):
        lr_find.rates(1e-3, 1.0, 0)


@pytest.mark.slow
def test_script_prints_the_suggestion_last_and_refuses_bad_input(tmp_path):
    p = python("scripts/lr_find.py", "--config", "configs/digits_cnn.py", "--low", "1e-4",
               "--high", "100", "--steps", "40", "--out", tmp_path / "lr",
               "--config.train.batch_size=32", timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    with open(tmp_path / "lr" / "lr_find.json") as f:
        saved = json.load(f)
    assert last == (f"suggested optim.learning_rate={saved['suggested_lr']:.3g} (steepest "
                    "descent of the smoothed loss)")
    assert 1e-4 < saved["suggested_lr"] < 100
    bad = python("scripts/lr_find.py", "--config", "configs/digits_cnn.py", "--low", "1",
                 "--high", "1", "--out", tmp_path / "bad", timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: the range test needs 0 < low < high (finite), got "
                                  "low=1 high=1: e.g. --low 1e-7 --high 10")
    assert not (tmp_path / "bad").exists()
