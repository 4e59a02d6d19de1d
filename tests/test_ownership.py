"""A run owns its workdir, resumes only itself, and stops on divergence before saving it.

Each test here failed before the workdir lock, the run identity and the divergence watch:
a second run on a busy workdir ran (and deleted the first's checkpoints), a changed config or
data set resumed without a word, a loss of 8.6e5 passed, a non-finite parameter was saved.
"""

import json
import math

import jax
import pytest
from conftest import QUIET, small_digits
from flax import nnx

from jaxcnn import checkpoint, models, ownership, train_and_evaluate
from jaxcnn.config import default_config
from jaxcnn.data import Dataset
from jaxcnn.divergence import Watch
from jaxcnn.errors import UserError


def _config(epochs=1):
    c = default_config()
    c.data.name = "digits"
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = epochs, 64, 100
    return c


def _files(workdir):
    return {p: (workdir / p).read_bytes() for p in ("config.json", "metrics.jsonl")}


@pytest.fixture(scope="module")
def data():
    return small_digits(256)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """A finished one-epoch run: (workdir, its files as bytes)."""
    w = tmp_path_factory.mktemp("finished")
    train_and_evaluate(_config(), str(w), dataset=data, **QUIET)
    return w, _files(w)


def test_a_second_run_is_refused_while_another_holds_the_workdir(tmp_path, data):
    held = ownership.WorkdirLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(UserError, match=r"is in use by another run \(pid \d+ on .*, "
                                            r"started .*\): wait for it .* another --workdir"):
            train_and_evaluate(_config(), str(tmp_path), dataset=data, **QUIET)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing else written
    finally:
        held.release()
    assert list(tmp_path.iterdir()) == []
    # a lock file left by a run that died (SIGKILL: no release) holds no lock (a real killed
    # run: tests/test_faults.py::test_sigkill_leaves_a_resumable_workdir_and_no_lock_in_the_way)
    (tmp_path / ".lock").write_text("pid 1 on elsewhere, started 2026-01-01T00:00:00\n")
    ownership.WorkdirLock(str(tmp_path)).acquire().release()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value, shown", [
    ("data.mean", (0.2, 0.2, 0.2), "data.mean ([0.5, 0.5, 0.5] -> [0.2, 0.2, 0.2])"),
    ("seed", 1, "seed (0 -> 1)"),
    ("optim.learning_rate", 0.01, "optim.learning_rate (0.001 -> 0.01)"),
])
def test_resuming_with_a_changed_config_is_refused_and_nothing_is_touched(
        finished, data, field, value, shown):
    w, before = finished
    c = _config(epochs=2)  # extending is allowed; the change below is not
    group, _, name = field.rpartition(".")
    setattr(c[group] if group else c, name, value)
    with pytest.raises(UserError, match=r"was saved by a different run: " + _re(shown)
                       + r" changed; pass another --workdir"):
        train_and_evaluate(c, str(w), dataset=data, **QUIET)
    assert _files(w) == before
    assert checkpoint.latest_step(str(w / "checkpoints")) == 4


def test_resuming_with_other_images_of_the_same_name_and_size_is_refused(finished, data):
    w, before = finished
    images = data.train_images.copy()
    images[0, 0, 0, 0] ^= 1  # one pixel
    other = Dataset(images, data.train_labels, data.test_images, data.test_labels,
                    data.class_names, data.name)
    with pytest.raises(UserError, match="the data .same name, different images or labels. "
                                        "changed"):
        train_and_evaluate(_config(epochs=2), str(w), dataset=other, **QUIET)
    assert _files(w) == before


def test_fields_that_cannot_change_results_may_change_on_resume(finished, tmp_path, data):
    import shutil
    shutil.copytree(finished[0], tmp_path, dirs_exist_ok=True)
    c = _config(epochs=2)
    c.checkpoint.keep, c.train.divergence_factor, c.data.cache_dir = 1, 50.0, str(tmp_path)
    r = train_and_evaluate(c, str(tmp_path), dataset=data, **QUIET)
    assert [h["epoch"] for h in r.history] == [1, 2]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["epochs"] == 2 and saved["checkpoint"]["keep"] == 1


def _re(s: str) -> str:
    import re
    return re.escape(s)


# ---------------------------------------------------------------- divergence

def _sums(loss, count=64, first_bad=-1):
    return {"loss": loss, "accuracy": 0.5, "count": count, "first_bad": first_bad}


def test_watch_stops_on_a_jump_over_the_running_mean_not_on_a_slow_rise():
    w = Watch(10.0, 8, None)
    for step, loss in enumerate([2.3, 2.0, 1.5, 3.0, 6.0, 9.0], 1):  # at most 4x the mean
        w.train(_sums(loss), step)
    w.train(_sums(0.0, count=0), 7)  # an epoch's empty sums are no read-out
    assert math.isclose(w.mean, sum([2.3, 2.0, 1.5, 3.0, 6.0, 9.0]) / 6)
    with pytest.raises(UserError, match=r"train loss reached 41 at step 8, over "
                                        r"train.divergence_factor=10 x its running mean 3.967; "
                                        "no checkpoint was saved"):
        w.train(_sums(41.0), 8)
    with pytest.raises(UserError, match=r"not finite at step 11 \(epoch 2\)"):
        Watch(10.0, 8, None).train(_sums(2.0, first_bad=11), 12)
    with pytest.raises(UserError, match="the test loss is not finite after epoch 3"):
        Watch(10.0, 8, None).metrics({"loss": float("nan"), "accuracy": 0.1}, 2)


def test_a_loss_blowup_that_stays_finite_stops_the_run(tmp_path, data):
    c = _config(epochs=2)
    c.optim.learning_rate, c.train.log_every_steps = 0.3, 1  # step 2's loss is ~1e5..1e6
    with pytest.raises(UserError, match=r"diverged: the train loss reached \d.*e\+0[4-7] at "
                                        r"step 2, over train.divergence_factor=100 x"):
        train_and_evaluate(c, str(tmp_path), dataset=data, **QUIET)
    assert not (tmp_path / "metrics.jsonl").exists()


class _WithDeadWeight(nnx.Module):
    """The seed CNN plus a parameter the loss never reads: it can be NaN with a finite loss."""

    def __init__(self, rngs):
        self.net = models.create("cnn", num_classes=10, rngs=rngs)
        self.unused = nnx.Param(jax.numpy.full((3,), jax.numpy.nan))

    def __call__(self, x, train=False):
        return self.net(x, train=train)


def test_a_non_finite_parameter_is_never_saved(tmp_path, data):
    model = _WithDeadWeight(nnx.Rngs(0))
    with pytest.raises(UserError, match=r"diverged: params/unused is not finite after step 4; "
                                        "no checkpoint was saved"):
        train_and_evaluate(_config(), str(tmp_path), dataset=data, model=model, **QUIET)
    assert checkpoint.latest_step(str(tmp_path / "checkpoints")) is None


def test_a_checkpoint_older_than_a_field_resumes_while_the_field_keeps_its_default():
    now = ownership.run_identity(default_config(), None)
    saved = {"config": {k: v for k, v in now["config"].items() if k != "train.ema_decay"},
             "data": None}
    ownership.check_same_run(saved, now, "ckpt")  # the field did not exist: it was 0 then
    c = default_config()
    c.train.ema_decay = 0.9
    with pytest.raises(UserError, match=r"train.ema_decay \(0.0 -> 0.9\) changed"):
        ownership.check_same_run(saved, ownership.run_identity(c, None), "ckpt")
