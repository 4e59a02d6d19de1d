"""Shared test setup: devices, the compilation cache, data and run fixtures, subprocess helpers.

`pytest -q` runs the fast set (in-process tests); `pytest -m slow` the rest: subprocess CLI
runs, several processes or devices in subprocesses, real CIFAR-10 runs, the benchmark.
"""

import os
import pathlib
import sys
import tempfile

# Before JAX starts (this file is imported before any test module): two CPU devices, so that
# the fast set can compare 1 and 2 devices in process. Subprocesses inherit all of this.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "2")
# A GPU runner: subprocesses must not grab the memory this process is using.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One persistent compilation cache for the session and its subprocesses: the suite compiles
# the same small programs many times. Set JAX_COMPILATION_CACHE_DIR to keep it across sessions.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jaxcnn-tests-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxcnn.data import Dataset, load  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_JPEG = "shared/data/cifar10-jpeg.tar.gz"
QUIET = dict(progress=False, log=lambda *_: None)

if jax.default_backend() == "gpu":
    # Tests compare float32 results at 1e-4..1e-6; GPUs compute float32 convolutions and
    # matmuls in TF32 (10-bit mantissa) unless asked for full precision.
    jax.config.update("jax_default_matmul_precision", "highest")
    os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:  # the session's own cache goes with it
        import shutil
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def _env(devices: int | None, env: dict | None) -> dict:
    e = {**os.environ, **(env or {})}
    if devices is not None:  # forced CPU devices (set before JAX starts in the child)
        e.update(JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
    return e


def python(*args, devices: int | None = None, env=None, timeout=300, cwd=REPO):
    """`python args...` from the repository root, finished; the child sees this session's
    environment (devices, compilation cache) plus `env`."""
    import subprocess
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=_env(devices, env))


def python_json(code: str, devices: int, *args, timeout=300) -> dict:
    """Run `code` in a fresh process with `devices` CPU devices; its last stdout line, as JSON."""
    import json
    import textwrap
    p = python("-c", textwrap.dedent(code), *args, devices=devices, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def train_cli(*args, devices: int | None = None, env=None):
    """`scripts/train.py args...` started (not waited for): stdout and stderr are pipes."""
    import subprocess
    return subprocess.Popen([sys.executable, "scripts/train.py", *map(str, args)], cwd=REPO,
                            env=_env(devices, env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def small_digits(train: int = 256, test: int = 100) -> Dataset:
    """The first images of scikit-learn's digits: a small real data set."""
    d = load("digits")
    return Dataset(d.train_images[:train], d.train_labels[:train], d.test_images[:test],
                   d.test_labels[:test], d.class_names, "digits-small")


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
    """A tiny digits run, stopped in epoch 2 and resumed: 300 train images, 2 epochs x 9 steps,
    test-time augmentation (level 2) in the final evaluation.

    The first segment stops after step 13 and its checkpoint there is deleted, as if the process
    had been killed after logging step 12: the second segment resumes from the checkpoint of
    step 9 and logs steps 12, 15, 18 (`train.log_every_steps=3`) again. Returns (workdir,
    config, the second segment's log lines). Logs, plots, inference and export tests share it.
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
    config.train.tta_level = 2
    config.optim.schedule = "cosine"  # a learning rate that changes from step to step
    workdir = tmp_path_factory.mktemp("digits_run")
    first = train_and_evaluate(config, str(workdir), stop_at_step=13, **QUIET)
    assert first.stopped == "stop_at_step"
    shutil.rmtree(workdir / "checkpoints" / "13")
    lines = []
    second = train_and_evaluate(config, str(workdir), progress=False, log=lines.append)
    assert second.stopped is None and len(second.history) == 2
    return workdir, config, lines
