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
