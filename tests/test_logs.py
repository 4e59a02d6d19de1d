"""TensorBoard events and metrics.jsonl of a run, read back with TensorBoard's own reader.

TensorBoard's `EventAccumulator` (the `tensorboard` package, in the dev extras) rather than a
TFRecord parser of our own over tensorboardX's protobufs: the test then reads the files exactly
as the TensorBoard a user starts does, purge of a resumed run's stale steps included.
"""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxcnn import logs
from jaxcnn.errors import UserError
from jaxcnn.optim import make_schedule

STEPS = [3, 6, 9, 12, 15, 18]  # every 3 of 2 epochs x 9 steps
EPOCH_FIELDS = ["train_loss", "train_accuracy", "test_loss", "test_accuracy", "images_per_sec",
                "epoch_seconds"]


@pytest.fixture(scope="module")
def events(digits_run):
    workdir, _, _ = digits_run
    acc = EventAccumulator(str(workdir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_epoch_scalars_equal_the_metrics_jsonl_rows(digits_run, events):
    workdir, _, _ = digits_run
    rows = logs.read_metrics(str(workdir))
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [9, 18]
    for field in EPOCH_FIELDS:
        got = events[f"epoch/{field}"]
        assert [s for s, _ in got] == [9, 18], field  # each epoch once, despite the resume
        # the event file stores float32
        assert [v for _, v in got] == pytest.approx([r[field] for r in rows], rel=1e-6), field


def test_step_scalars_every_n_steps_once_each_after_a_killed_segment(digits_run, events):
    _, config, _ = digits_run
    assert sorted(t for t in events if t.startswith("step/")) == [
        "step/learning_rate", "step/seconds", "step/train_loss"]
    for tag in ("step/learning_rate", "step/seconds", "step/train_loss"):
        # step 12 was logged by both segments: TensorBoard shows the resumed one's only
        assert [s for s, _ in events[tag]] == STEPS, tag
    schedule = make_schedule(config.optim, 9, 2)
    lr = [v for _, v in events["step/learning_rate"]]
    assert lr == pytest.approx([float(schedule(s - 1)) for s in STEPS], rel=1e-6)
    assert lr[0] > lr[-1] > 0  # cosine: it really changes
    assert all(0 < v < 60 for _, v in events["step/seconds"])


def test_running_train_loss_at_an_epoch_end_is_the_epoch_train_loss(digits_run, events):
    workdir, _, _ = digits_run
    rows = logs.read_metrics(str(workdir))
    step_loss = dict(events["step/train_loss"])
    assert [step_loss[9], step_loss[18]] == pytest.approx([r["train_loss"] for r in rows],
                                                          rel=1e-6)
    assert step_loss[3] != pytest.approx(step_loss[9], rel=1e-3)  # a running mean, not constant


def test_one_event_file_per_segment_next_to_metrics_jsonl(digits_run):
    workdir, _, _ = digits_run
    files = sorted(p.name for p in workdir.glob("events.out.tfevents.*"))
    assert len(files) == 2 and files[0].endswith(".from000000000000")
    assert files[1].endswith(".from000000000009")  # resumed from the checkpoint of step 9
    assert (workdir / "metrics.jsonl").is_file()


def test_log_every_steps_is_checked():
    from jaxcnn.config import check_config, default_config
    config = default_config()
    config.train.log_every_steps = -1
    with pytest.raises(UserError, match="train.log_every_steps must be an integer >= 0"):
        check_config(config)
