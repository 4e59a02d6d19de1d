"""scripts/train.py end to end: a real run, and every bad input as one line with exit code 2."""

import gzip
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]


def run(*args, env=None, timeout=240):
    e = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""), **(env or {}))
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=e)


def test_digits_run_writes_metrics_and_prints_final_accuracy_last(tmp_path):
    p = run("--config", "configs/digits_cnn.py", "--config.train.epochs=2",
            "--workdir", str(tmp_path), "--devices", "all")
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("final test_accuracy=")
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and float(last.split("=")[1]) == pytest.approx(
        rows[-1]["test_accuracy"], abs=1e-4)
    assert rows[-1]["test_accuracy"] > 0.9
    assert json.loads((tmp_path / "config.json").read_text())["data"]["name"] == "digits"
    assert "img/s" in p.stderr  # the progress bar


def _corrupt_archive(tmp_path):
    path = tmp_path / "broken.tar.gz"
    path.write_bytes(gzip.compress(b"not a tar archive" * 100)[:60])
    return path


BAD = [
    (["--config.model.name=vgg"], "unknown model 'vgg'"),
    (["--config.data.name=imagenet"], "data set 'imagenet' is unknown"),
    (["--config.train.foo=1"], "unknown config field 'train.foo'"),
    (["--config.train.epochs=abc"], "--config.train.epochs=abc"),
    (["--config.optim.learning_rate=0"], "learning_rate must be > 0"),
    (["--config.optim.learning_rate=-0.1"], "learning_rate must be > 0"),
    (["--config.train.batch_size=4096"], "larger than the 1437 training images"),
    (["--config.train.batch_size=0"], "train.batch_size must be a positive integer"),
    (["--devices", "99"], "--devices 99"),
    (["--devices", "gpu"], "--devices 'gpu' is not understood"),
    (["--config.data.name=folder:/no/such/archive.tar.gz"], "/no/such/archive.tar.gz"),
    (["--config", "configs/nope.py"], "cannot load the config file"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text("earlier results\n")
    cfg = [] if "--config" in args else ["--config", "configs/digits_cnn.py"]
    p = run(*cfg, *args, "--workdir", str(workdir))
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert message in lines[0]
    assert (workdir / "metrics.jsonl").read_text() == "earlier results\n"  # nothing lost


def test_corrupt_archive(tmp_path):
    p = run("--config", "configs/digits_cnn.py",
            f"--config.data.name=folder:{_corrupt_archive(tmp_path)}")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "broken.tar.gz" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_failed_download_without_network(tmp_path):
    # A proxy on a closed local port makes the real download code fail at once, as offline.
    env = {"JAXCNN_DATA_DIR": str(tmp_path), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    p = run("--config", "configs/cifar10_cnn.py", env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip()
    assert "cifar-10-python.tar.gz" in line and "cifar10:<path" in line
    assert len(line.splitlines()) == 1
    assert not list(tmp_path.rglob("*.tar.gz"))  # no half-written archive left behind


def test_debug_shows_the_traceback():
    p = run("--config", "configs/digits_cnn.py", "--config.model.name=vgg", "--debug")
    assert p.returncode != 0 and "Traceback" in p.stderr
