"""Data fixtures shared by the tests: the CIFAR-10 JPEG archive, decoded once per session."""

import os
import pathlib

import pytest

from jaxcnn.data import Dataset, load

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_JPEG = "shared/data/cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def cifar10_jpeg_path() -> pathlib.Path:
    """The shared archive: $JAXCNN_CIFAR10_JPEG, else <repo>/shared/... or <repo>/../shared/..."""
    env = os.environ.get("JAXCNN_CIFAR10_JPEG")
    if env:
        if not os.path.isfile(env):
            pytest.fail(f"JAXCNN_CIFAR10_JPEG={env} is not a file: fix or unset it")
        return pathlib.Path(env)
    for base in (REPO, REPO.parent):
        if (base / CIFAR10_JPEG).is_file():
            return base / CIFAR10_JPEG
    pytest.skip(f"the shared CIFAR-10 JPEG archive is absent (looked for {CIFAR10_JPEG} in "
                f"{REPO} and {REPO.parent}): set JAXCNN_CIFAR10_JPEG to run these tests")


@pytest.fixture(scope="session")
def cifar10_jpeg_cache_dir(tmp_path_factory) -> pathlib.Path:
    """A cache dir private to this test session, so the archive is decoded once per session."""
    return tmp_path_factory.mktemp("jaxcnn-cache")


@pytest.fixture(scope="session")
def cifar10_jpeg(cifar10_jpeg_path, cifar10_jpeg_cache_dir) -> Dataset:
    """CIFAR-10 (JPEG copy): 50,000 train / 10,000 test uint8 32x32x3 images, 10 classes."""
    return load(f"folder:{cifar10_jpeg_path}", cache_dir=cifar10_jpeg_cache_dir)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A tiny digits run, stopped in epoch 2 and resumed: 300 train images, 2 epochs x 9 steps.

    The first segment stops after step 13 and its checkpoint there is deleted, as if the process
    had been killed after logging step 12: the second segment resumes from the checkpoint of
    step 9 and logs steps 12, 15, 18 (`train.log_every_steps=3`) again. Returns (workdir,
    config, the second segment's log lines).
    """
    import shutil

    from jaxcnn import train_and_evaluate
    from jaxcnn.config import default_config

    config = default_config()
    config.data.name = "digits"
    config.data.train_per_class = 30
    config.train.epochs = 2
    config.train.batch_size = 32
    config.train.eval_batch_size = 120  # 360 test images: 3 batches, no padding
    config.train.log_every_steps = 3
    config.optim.schedule = "cosine"  # a learning rate that changes from step to step
    workdir = tmp_path_factory.mktemp("digits_run")
    first = train_and_evaluate(config, str(workdir), progress=False, log=lambda *_: None,
                               stop_at_step=13)
    assert first.stopped == "stop_at_step"
    shutil.rmtree(workdir / "checkpoints" / "13")
    lines = []
    second = train_and_evaluate(config, str(workdir), progress=False, log=lines.append)
    assert second.stopped is None and len(second.history) == 2
    return workdir, config, lines
