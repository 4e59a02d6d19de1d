"""scripts/train.py end to end: a real run, and every bad input as one line with exit code 2."""

import gzip
import json
import pathlib
import re

import pytest
from conftest import python

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(*args, env=None, timeout=240):
    return python("scripts/train.py", *args, env=env, timeout=timeout)


@pytest.mark.slow
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
    drawn = {str(f) for f in (tmp_path / "plots").iterdir()}  # without --noplots
    listed = [ln for ln in p.stdout.splitlines() if ln.startswith("plots: ")]
    assert str(tmp_path / "plots" / "curves.png") in drawn
    assert len(listed) == 1 and set(listed[0].removeprefix("plots: ").split(", ")) == drawn


def _corrupt_archive(tmp_path):
    path = tmp_path / "broken.tar.gz"
    path.write_bytes(gzip.compress(b"not a tar archive" * 100)[:60])
    return path


# Bad input through the library, in process (fast set): each is a UserError whose message the
# CLI prints as its one line, raised before anything in the workdir is touched.
BAD = [
    ({"model.name": "vgg"}, "all", "unknown model 'vgg'"),
    ({"data.name": "imagenet"}, "all", "data set 'imagenet' is unknown"),
    ({"optim.learning_rate": 0.0}, "all", "learning_rate must be > 0"),
    ({"optim.learning_rate": -0.1}, "all", "learning_rate must be > 0"),
    ({"train.batch_size": 4096}, "all", "larger than the 1437 training images"),
    ({"train.batch_size": 0}, "all", "train.batch_size must be a positive integer"),
    ({"train.batch_size": 63}, "2", "train.batch_size=63 does not divide by the 2 devices"),
    ({}, "99", "--devices 99"),
    ({}, "gpu", "--devices 'gpu' is not understood"),
    ({"data.name": "folder:/no/such/archive.tar.gz"}, "all", "/no/such/archive.tar.gz"),
    ({"model.dtype": "float16"}, "all", "model.dtype must be float32 or bfloat16"),
    ({"optim.learning_rate": float("inf")}, "all", "learning_rate must be > 0 (a finite"),
    ({"data.crop_padding": 1000}, "all", "crop_padding=1000 is larger than the 32-pixel images"),
    ({"train.epochs": 10**12}, "all", "more than the 2,147,483,647 optimizer steps"),
    ({"data.std": (0.5, 0.0, 0.5)}, "all", "data.std must be finite and > 0"),
    ({"data.mean": (0.5, float("nan"), 0.5)}, "all", "data.mean must be finite"),
]


@pytest.mark.parametrize("overrides, devices, message", BAD, ids=[m for *_, m in BAD])
def test_bad_input_is_one_clear_line_before_anything_is_written(tmp_path, overrides, devices,
                                                                message):
    from configs.digits_cnn import get_config
    from jaxcnn import cli, train_and_evaluate
    from jaxcnn.errors import UserError
    config = get_config()
    for field, value in overrides.items():
        group, name = field.split(".")
        config[group][name] = value
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text("earlier results\n")
    with pytest.raises(UserError) as e:
        train_and_evaluate(config, str(workdir), devices=devices, progress=False)
    line = cli._one_line(e.value)
    assert message in line and "\n" not in line
    assert sorted(p.name for p in workdir.iterdir()) == ["metrics.jsonl"]  # nothing written
    assert (workdir / "metrics.jsonl").read_text() == "earlier results\n"  # nothing lost


# Numbers no run can use, refused by check_config before anything is built.
BAD_NUMBERS = [
    ("optim.eps", -1.0, "optim.eps must be >= 0 (a finite number), got -1.0"),
    ("optim.b1", 2.0, "optim.b1 must be >= 0 and < 1"),
    ("optim.b2", float("nan"), "optim.b2 must be >= 0 and < 1"),
    ("optim.momentum", 1.0, "optim.momentum must be >= 0 and < 1"),
    ("optim.warmup_epochs", -3.0, "optim.warmup_epochs must be >= 0"),
    ("optim.warmup_epochs", float("nan"), "optim.warmup_epochs must be >= 0"),
    ("optim.weight_decay", float("inf"), "optim.weight_decay must be >= 0"),
    ("optim.bias_lr_scale", float("inf"), "optim.bias_lr_scale must be > 0"),
    ("train.label_smoothing", 1.0, "train.label_smoothing must be >= 0 and < 1"),
    ("finetune.backbone_lr_scale", -1.0, "finetune.backbone_lr_scale must be >= 0"),
    ("seed", 99999999999999999999999, "seed must be an integer in [-2**63, 2**63)"),
    ("train.divergence_factor", 1.0, "train.divergence_factor must be > 1"),
    ("train.peer_timeout_s", float("nan"), "train.peer_timeout_s must be > 0 and <= 86400"),
    ("checkpoint.stop_timeout_s", 0.0, "checkpoint.stop_timeout_s must be > 0"),
    ("data.max_file_bytes", 0, "data.max_file_bytes must be > 0 and <= 1,099,511,627,776"),
    ("data.image_size", -1, "data.image_size must be >= 0 and <= 65,536"),
    ("model.airbench.bn_momentum", float("nan"), "model.airbench.bn_momentum must be >= 0 and "
                                                 "<= 1"),
    ("model.airbench.logit_scale", 0.0, "model.airbench.logit_scale must be > 0"),
    ("model.airbench.widths", (64, 0, 256), "model.airbench.widths must be three channel counts"),
]


@pytest.mark.parametrize("field, value, message", BAD_NUMBERS,
                         ids=[f"{f}={v}" for f, v, _ in BAD_NUMBERS])
def test_numbers_no_run_can_use_are_refused(field, value, message):
    from configs.digits_cnn import get_config
    from jaxcnn.config import check_config
    from jaxcnn.errors import UserError
    config = get_config()
    *group, name = field.split(".")
    parent = config
    for g in group:
        parent = parent[g]
    parent[name] = value
    with pytest.raises(UserError, match=re.escape(message)):
        check_config(config)


def test_an_eval_batch_larger_than_the_test_set_is_cut_to_it():
    import jax

    from configs.digits_cnn import get_config
    from jaxcnn import parallel
    from jaxcnn.evaluation import eval_batch_size
    config = get_config()
    config.train.eval_batch_size = 100_000_000  # would be 286 GiB of padding
    mesh = parallel.make_mesh(jax.devices()[:2])
    assert eval_batch_size(config, mesh, 360) == 360
    assert eval_batch_size(config, mesh, 361) == 362  # a multiple of the 2 devices
    config.train.eval_batch_size = 100
    assert eval_batch_size(config, mesh, 360) == 100


def test_a_workdir_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path):
    from configs.digits_cnn import get_config
    from jaxcnn import train_and_evaluate
    from jaxcnn.errors import UserError
    afile = tmp_path / "afile"
    afile.write_text("kept\n")
    with pytest.raises(UserError, match="afile is a file, not a directory"):
        train_and_evaluate(get_config(), str(afile), progress=False)
    with pytest.raises(UserError, match="lies below .*afile, which is a file"):
        train_and_evaluate(get_config(), str(afile / "run"), progress=False)
    assert afile.read_text() == "kept\n"


def test_unknown_override_is_refused_before_flags_are_parsed():
    from jaxcnn import cli
    from jaxcnn.errors import UserError
    with pytest.raises(UserError, match="unknown config field 'train.foo'"):
        cli.check_overrides(["train.py", "--config.train.foo=1"])
    cli.check_overrides(["train.py", "--config.train.epochs=3"])


# End to end, in a subprocess each (slow set): the script prints one line and exits with 2.
BAD_CLI = [
    (["--config.model.name=vgg"], "unknown model 'vgg'"),
    (["--config.train.foo=1"], "unknown config field 'train.foo'"),
    (["--config.train.epochs=abc"], "--config.train.epochs=abc"),
    (["--devices", "gpu"], "--devices 'gpu' is not understood"),
    (["--config", "configs/nope.py"], "cannot load the config file"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_CLI, ids=[m for _, m in BAD_CLI])
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
    assert sorted(p.name for p in workdir.iterdir()) == ["metrics.jsonl"]
    assert (workdir / "metrics.jsonl").read_text() == "earlier results\n"  # nothing lost


@pytest.mark.slow
def test_corrupt_archive(tmp_path):
    p = run("--config", "configs/digits_cnn.py",
            f"--config.data.name=folder:{_corrupt_archive(tmp_path)}")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "broken.tar.gz" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
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


@pytest.mark.slow
def test_debug_shows_the_traceback():
    p = run("--config", "configs/digits_cnn.py", "--config.model.name=vgg", "--debug")
    assert p.returncode != 0 and "Traceback" in p.stderr
