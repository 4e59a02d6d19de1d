"""The validation split: held out stratified and fixed by the seed, or the source's own; metrics
per epoch, the best checkpoint and early stopping chosen on it, the test split reported once."""

import json

import numpy as np
import pytest
from conftest import QUIET, small_digits
from test_data import _folder_members, _tar_gz

from jaxcnn import checkpoint, evaluation, inference
from jaxcnn.config import default_config, selection_metric
from jaxcnn.data import load
from jaxcnn.data.split import validation_count, validation_indices
from jaxcnn.errors import UserError
from jaxcnn.train import build, train_and_evaluate


def test_validation_indices_are_stratified_disjoint_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train, val = validation_indices(labels, 0.1, seed=7)
    assert np.bincount(labels[val]).tolist() == [5, 3, 2]  # each class its share
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 100
    assert np.array_equal(val, validation_indices(labels, 10, seed=7)[1])  # count == fraction
    assert not np.array_equal(val, validation_indices(labels, 10, seed=8)[1])
    # 7 of 100: shares 3.5 / 2.1 / 1.4 -> floors 3/2/1, the one left to the largest remainder
    assert np.bincount(labels[validation_indices(labels, 7, seed=0)[1]]).tolist() == [4, 2, 1]
    assert validation_indices(labels, 0, seed=0)[1].size == 0


@pytest.mark.parametrize("value, match", [
    (100, "holds out 100 images but the training split has 100"),
    (2.5, "neither a fraction"),
    (0.001, "holds out none"),
])
def test_bad_validation_sizes(value, match):
    with pytest.raises(UserError, match=match):
        validation_count(value, 100)


def test_selection_refuses_the_test_split_when_there_is_validation():
    c = default_config()
    assert selection_metric(c, True) == ("val_accuracy", "max")
    assert selection_metric(c, False) == ("", "max")  # auto never selects on test
    c.checkpoint.best_metric = "test_accuracy"
    with pytest.raises(UserError, match="selects on the test split"):
        selection_metric(c, True)
    c.checkpoint.select_on_test = True
    assert selection_metric(c, True) == ("test_accuracy", "max")
    c = default_config()
    c.train.early_stop_patience = 2
    with pytest.raises(UserError, match="needs a validation split"):
        selection_metric(c, False)
    c.checkpoint.best_metric = "val_loss"
    with pytest.raises(UserError, match="val_loss needs a validation split"):
        selection_metric(c, False)


def test_folder_val_split_imagenet_layout_and_bad_folders(tmp_path):
    m = _folder_members()
    val = {k.replace("test/", "val/"): v for k, v in m.items() if k.startswith("test/")}
    d = load(f"folder:{_tar_gz(tmp_path / 'v.tar.gz', {**m, **val})}", cache_dir=tmp_path / "c")
    assert d.has_validation and len(d.val_labels) == len(d.test_labels) == 3
    again = load(f"folder:{tmp_path / 'v.tar.gz'}", cache_dir=tmp_path / "c")  # from the cache
    assert np.array_equal(again.val_images, d.val_images)
    with pytest.raises(UserError, match="has its own validation split"):
        d.with_validation(0.5, 0)
    # ImageNet: train/ and val/, no test/: val/ is the split reported as test
    imagenet = {k: v for k, v in m.items() if not k.startswith("test/")} | val
    d = load(f"folder:{_tar_gz(tmp_path / 'in.tar.gz', imagenet)}", cache_dir=tmp_path / "c")
    assert not d.has_validation and len(d.test_labels) == 3
    bad = {**m, **{k: v for k, v in val.items() if "dog" not in k}}
    with pytest.raises(UserError, match=r"train/ and val/ .* differ \(only in train: dog"):
        load(f"folder:{_tar_gz(tmp_path / 'b.tar.gz', bad)}", cache_dir=tmp_path / "c")
    root = tmp_path / "tree"
    for name, data in m.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "train" / "emu").mkdir()
    with pytest.raises(UserError, match="class folder train/emu .* has no images"):
        load(f"folder:{root}", cache_dir=tmp_path / "c")


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("val") / "run"
    c = default_config()
    c.data.name, c.data.validation, c.train.epochs, c.train.batch_size = "digits", 0.25, 2, 64
    c.train.steps_per_call = 1
    result = train_and_evaluate(c, str(workdir), dataset=small_digits(256, 100), **QUIET)
    return c, workdir, result


@pytest.mark.slow
def test_val_metrics_every_epoch_test_at_the_end_best_on_val(val_run):
    c, workdir, result = val_run
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [("val_accuracy" in r, "test_accuracy" in r) for r in rows] == [
        (True, False), (True, True)]
    assert rows[-1]["step"] == 2 * (192 // 64)  # 64 of 256 held out
    best = max(rows, key=lambda r: r["val_accuracy"])["step"]
    assert best in checkpoint.RunCheckpoints(str(workdir), c.checkpoint,
                                             ("val_accuracy", "max")).manager.all_steps()
    # the held-out images are the validation split: evaluating them gives the logged figure
    data = small_digits(256, 100).with_validation(0.25, c.seed)
    m = evaluation.evaluate(inference.load_run(str(workdir)).model, data.val_images,
                            data.val_labels, c)
    assert m["accuracy"] == pytest.approx(rows[-1]["val_accuracy"], abs=1e-6)


def test_best_metric_on_test_with_validation_is_refused():
    c = default_config()
    c.data.name, c.data.validation, c.checkpoint.best_metric = "digits", 0.25, "test_accuracy"
    with pytest.raises(UserError, match="selects on the test split although there is a "
                                        "validation split"):
        build(c, dataset=small_digits(256, 100))


@pytest.mark.slow
def test_early_stopping_restores_the_best_epoch_and_resumes_the_same(tmp_path):
    """Adam at 0.02 wrecks the seed CNN on digits after its first epoch: validation accuracy
    stops improving, the run stops after `patience` more epochs and reports the test split on
    the best epoch's weights; stopped and resumed midway, it ends the same."""
    c = default_config()
    c.data.name, c.data.validation, c.train.epochs, c.train.batch_size = "digits", 0.25, 8, 64
    c.optim.learning_rate, c.train.early_stop_patience, c.train.steps_per_call = 0.02, 2, 1
    data = small_digits(256, 100)
    straight = train_and_evaluate(c, str(tmp_path / "a"), dataset=data, **QUIET)
    last = straight.final
    assert last["early_stopped"] and last["epoch"] < 8
    assert last["epoch"] - last["best_epoch"] == 2
    best = max(straight.history, key=lambda r: r["val_accuracy"])
    assert best["epoch"] == last["best_epoch"]
    # the final weights are the best epoch's checkpoint
    spe = 192 // 64
    saved = inference.load_run(str(tmp_path / "a" / "checkpoints" / str(best["epoch"] * spe)))
    m = evaluation.evaluate(saved.model, data.test_images, data.test_labels, c)
    assert m["accuracy"] == pytest.approx(last["test_accuracy"], abs=1e-6)
    # stop after the best epoch, resume: the best weights come back from its checkpoint
    stop = (best["epoch"] + 1) * spe
    train_and_evaluate(c, str(tmp_path / "b"), dataset=data, stop_at_step=stop, **QUIET)
    resumed = train_and_evaluate(c, str(tmp_path / "b"), dataset=data, **QUIET)
    keys = ("epoch", "val_accuracy", "best_epoch", "early_stopped", "test_accuracy")
    assert {k: resumed.final[k] for k in keys} == {k: last[k] for k in keys}
    again = train_and_evaluate(c, str(tmp_path / "b"), dataset=data, **QUIET)
    assert len(again.history) == len(resumed.history)  # stopped early: nothing more to train
