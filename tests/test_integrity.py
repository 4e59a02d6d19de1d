"""Integrity: checkpoints carry checksums of their arrays, exports the sha256 of their artifact.

Changed bytes, or files from two different saves, are refused with one line instead of being
trained on or served; intact and older (unchecked) files still load.
"""

import hashlib
import json
import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from jaxcnn import checkpoint, cli, export, inference, models, serving, steps
from jaxcnn.config import default_config
from jaxcnn.errors import UserError

CORRUPT = "is corrupt: {} does not match the checksum saved with it"


def small_state():
    """A small CNN's TrainState under Adam: int32 step and counts, float32 arrays."""
    model = models.CNN(10, width=4, hidden=16, rngs=nnx.Rngs(0))
    return steps.create_state(model, optax.adam(1e-3))[1]


def reference(x) -> int:
    """The checksum in numpy: sum of bits_i * (2i + 1) * 2654435761, mod 2^32."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    x = np.ascontiguousarray(x).reshape(-1)
    x = x.astype(np.uint8) if x.dtype == bool else x
    words = x.view(np.uint32 if x.dtype.itemsize == 8 else f"uint{8 * x.dtype.itemsize}")
    weights = (2 * np.arange(words.size, dtype=np.uint64) + 1) * np.uint64(2654435761)
    # uint64 products and sums wrap mod 2^64, a multiple of 2^32: the result mod 2^32 is exact
    return int((words.astype(np.uint64) * weights).sum(dtype=np.uint64) % np.uint64(2**32))


def flat(tree) -> dict:
    return checkpoint._flat(tree)


def assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def unchecked(monkeypatch, fn, *args):
    """`fn(*args)` with the checksum test switched off: what a restore read before it."""
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "verify", lambda *a, **k: None)
        return fn(*args)


# ---------------------------------------------------------------- the checksum itself

def test_checksums_are_exact_and_the_same_sharded_on_the_host_and_on_one_device():
    rng = np.random.default_rng(0)
    tree = {"f32": rng.standard_normal((8, 5)).astype(np.float32),
            "bf16": rng.standard_normal((4, 3)).astype(jnp.bfloat16),
            "f16": rng.standard_normal(6).astype(np.float16),
            "i32": rng.integers(-2**31, 2**31, (4, 2), dtype=np.int32),
            "i8": rng.integers(-128, 128, 10, dtype=np.int8),
            "u8": rng.integers(0, 256, (2, 7), dtype=np.uint8),
            "bool": rng.random(9) < 0.5,
            "scalar": np.int32(-7), "empty": np.zeros((0, 3), np.float32)}
    device = {**jax.tree.map(jnp.asarray, tree), "keys": jax.random.split(jax.random.key(0), 4)}
    want = {k: reference(v) for k, v in device.items()}
    assert checkpoint.checksums(device) == want
    assert checkpoint.checksums(tree) == {k: want[k] for k in tree}  # host copies
    # Sharded over every device along the first axis where it divides (2 CPU devices in tests),
    # on the runs' mesh (Auto axes) and on one with Explicit axes.
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(axis_type,))
        sharded = {k: jax.device_put(v, NamedSharding(mesh, P("data") if np.ndim(v) and
                                                       v.shape[0] % mesh.size == 0 else P()))
                   for k, v in device.items()}
        assert not sharded["f32"].sharding.is_fully_replicated or mesh.size == 1
        assert checkpoint.checksums(sharded) == want
    # one element, changed by the smallest step a float32 can take: only its array's sum moves
    tree["f32"][3, 2] = np.nextafter(tree["f32"][3, 2], np.float32(np.inf))
    changed = checkpoint.checksums(tree)
    assert [k for k in tree if changed[k] != want[k]] == ["f32"]


# ---------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The same state saved by `checkpoint.save` and by `RunCheckpoints` (as a run saves)."""
    state, d = small_state(), tmp_path_factory.mktemp("saved")
    meta = {"epoch": 1}
    checkpoint.save(str(d / "one"), state, meta)
    cfg = default_config().checkpoint
    cfg.best_metric, cfg.async_save = "", False
    ckpts = checkpoint.RunCheckpoints(str(d / "run"), cfg)
    assert ckpts.save(3, state, meta, metrics={"test_accuracy": 0.5})
    ckpts.close()
    assert meta == {"epoch": 1}  # the caller's dict is left as it was
    return state, d / "one", d / "run" / "checkpoints" / "3"


def test_both_savers_record_checksums_and_an_intact_checkpoint_restores_equal(saved):
    state, *paths = saved
    want = checkpoint.checksums(state)
    assert want.keys() == flat(state).keys() and "params/conv1/kernel" in want
    for path in paths:
        restored, meta = checkpoint.restore(str(path), state)
        assert meta["epoch"] == 1 and meta["checksums"] == want
        assert_equal(flat(restored), flat(state))
        assert checkpoint.checksums(restored) == want  # read back: the same numbers
        arrays, _ = checkpoint.load_arrays(str(path))
        assert_equal(arrays, flat(state))


def _flip(path: pathlib.Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + 4] = bytes(b ^ 0x5A for b in data[offset:offset + 4])
    path.write_bytes(bytes(data))


def test_changed_bytes_in_an_array_file_are_refused(saved, tmp_path, monkeypatch):
    state, one, _ = saved
    # The arrays' data files (OCDBT: compressed chunks); the largest holds the big kernels.
    data = max((f for f in (one / "state").rglob("*") if f.parent.name == "d" and f.is_file()),
               key=lambda f: f.stat().st_size)
    size, ckpt = data.stat().st_size, tmp_path / "ckpt"
    for offset in (size // 2, size // 3, 2 * size // 3):  # a spot that still decodes
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.copytree(one, ckpt)
        _flip(ckpt / data.relative_to(one), offset)
        try:
            read, _ = unchecked(monkeypatch, checkpoint.load_arrays, str(ckpt))
        except UserError:  # undecodable: the read itself already fails loudly
            continue
        changed = [k for k, v in flat(state).items() if not np.array_equal(read[k], v)]
        if changed:
            break
    else:
        pytest.fail("no 4-byte change in the middle of the data file decoded to other numbers")
    # without the checksums, these numbers would have been trained on or served
    message = f"checkpoint {ckpt} " + CORRUPT.format(changed[0])
    with pytest.raises(UserError, match=re.escape(message)) as e:
        checkpoint.restore(str(ckpt), state)
    assert "move it aside" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match=re.escape(message)):
        checkpoint.load_arrays(str(ckpt))


def test_arrays_under_another_checkpoints_meta_are_refused_and_named(saved, tmp_path,
                                                                  monkeypatch):
    state, one, _ = saved
    name = "params/fc1/kernel"
    arrays = {k: np.array(v) for k, v in flat(state).items()}
    arrays[name][5, 3] = np.nextafter(arrays[name][5, 3], np.float32(-np.inf))
    changed = jax.tree_util.tree_unflatten(jax.tree.structure(state),
                                           [arrays[k] for k in flat(state)])
    ckpt = tmp_path / "changed"
    checkpoint.save(str(ckpt), changed)
    shutil.copyfile(one / "meta" / "metadata", ckpt / "meta" / "metadata")  # the first's sums
    read, _ = unchecked(monkeypatch, checkpoint.load_arrays, str(ckpt))
    assert not np.array_equal(read[name], np.asarray(flat(state)[name]))
    message = f"checkpoint {ckpt} " + CORRUPT.format(name) + ": move"  # exactly one array
    with pytest.raises(UserError, match=re.escape(message)):
        checkpoint.restore(str(ckpt), state)
    with pytest.raises(UserError, match=re.escape(message)):
        checkpoint.load_arrays(str(ckpt))
    # what a script does with it (scripts/evaluate.py, predict.py): one line, exit code 2
    wd = tmp_path / "wd"
    shutil.copytree(ckpt, wd / "checkpoints" / "7")
    (wd / "config.json").write_text(default_config().to_json())
    with pytest.raises(SystemExit) as e:
        cli.run(lambda argv: inference.load_run(str(wd)), ["evaluate.py"])
    assert e.value.code == 2


def test_older_checkpoints_without_checksums_and_casting_restores_pass(saved, tmp_path):
    import orbax.checkpoint as ocp
    state, one, _ = saved
    legacy = tmp_path / "legacy"  # as checkpoint.save wrote before checksums
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as c:
        c.save(str(legacy), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave({"epoch": 1})))
    restored, meta = checkpoint.restore(str(legacy), state)
    assert "checksums" not in meta
    assert_equal(flat(restored), flat(state))
    assert_equal(checkpoint.load_arrays(str(legacy))[0], flat(state))
    # restored into bfloat16: the cast changes the bits, which is not corruption
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16)
                          if x.dtype == jnp.float32 else x, state)
    restored, _ = checkpoint.restore(str(one), target)
    assert flat(restored)["params/conv1/kernel"].dtype == jnp.bfloat16


# ---------------------------------------------------------------- exports

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two exports of small untrained CNNs, 10 and 3 classes, and a 32x32 image file."""
    d = tmp_path_factory.mktemp("exports")
    config = default_config()
    config.train.tta_level = 0
    for k in (10, 3):
        model = models.CNN(k, width=4, hidden=16, rngs=nnx.Rngs(k))
        run = inference.Run(model, config, tuple(map(str, range(k))),
                            {"image_shape": (32, 32, 3), "step": 0})
        export.export_run(run, str(d / f"k{k}"), platforms=("cpu",))
    image = d / "x.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    return d, str(image)


def _copy(exports, k: int, tmp_path) -> pathlib.Path:
    out = tmp_path / f"k{k}"
    shutil.copytree(exports[0] / f"k{k}", out)
    return out


def _refused(directory: pathlib.Path, image: str, message: str, capsys) -> None:
    """serving.load raises `message`; the command line prints it as one line and exits 2."""
    with pytest.raises(serving.ServingError, match=message):
        serving.load(str(directory))
    capsys.readouterr()
    assert serving.main([str(directory), image]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err


def test_an_intact_export_records_its_sha256_and_serves(exports):
    directory, image = exports[0] / "k10", exports[1]
    meta = json.loads((directory / "model.json").read_text())
    blob = (directory / "model.jax_export").read_bytes()
    assert meta["artifact_sha256"] == hashlib.sha256(blob).hexdigest()
    model = serving.load(str(directory))
    probs = serving.classify(model, serving.prepare([image], model.image_shape))["probabilities"]
    assert probs.shape == (1, 10) and np.all(np.isfinite(probs))
    assert serving.main([str(directory), image]) == 0
    del meta["artifact_sha256"]  # an export from before the digest: still served
    (directory.parent / "old").mkdir()
    (directory.parent / "old" / "model.json").write_text(json.dumps(meta))
    (directory.parent / "old" / "model.jax_export").write_bytes(blob)
    assert serving.load(str(directory.parent / "old")).class_names == tuple(map(str, range(10)))


def test_four_changed_bytes_in_the_artifact_are_refused(exports, tmp_path, capsys):
    directory = _copy(exports, 10, tmp_path)
    artifact = directory / "model.jax_export"
    before = artifact.read_bytes()
    _flip(artifact, len(before) // 2)
    assert artifact.read_bytes() != before
    _refused(directory, exports[1], rf"{re.escape(str(artifact))} does not match "
             rf"{re.escape(str(directory / 'model.json'))} \(sha256 [0-9a-f]{{12}}\.\.\., "
             r"expected [0-9a-f]{12}\.\.\.\): the files come from different exports or were "
             "changed; export the run again", capsys)


def test_a_model_json_from_another_export_is_refused(exports, tmp_path, capsys):
    directory = _copy(exports, 10, tmp_path)
    other = json.loads((exports[0] / "k3" / "model.json").read_text())
    (directory / "model.json").write_text(json.dumps(other))
    _refused(directory, exports[1], "does not match .*model.json .*sha256", capsys)
    # without a digest to compare (an older model.json), the class count still gives it away
    del other["artifact_sha256"]
    (directory / "model.json").write_text(json.dumps(other))
    _refused(directory, exports[1], r"the artifact takes 32x32x3 images and gives 10 classes, "
             r"model.json says 32x32x3 and 3: the files come from different exports", capsys)
