"""Streamed data (jaxcnn/data/stream.py, feeds.StreamFeed, scripts/convert.py): the same
batches as the in-memory path, disjoint and complete shards per process, exact resume, an
unreadable image mid-epoch, the ArrayRecord copy, two processes."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcnn import parallel
from jaxcnn.data import load, stream
from jaxcnn.errors import UserError
from jaxcnn.feeds import HostFeed, RunKeys, StreamFeed

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
import convert  # noqa: E402

CLASSES = ("zero", "one", "two")
TRAIN, TEST = 14, 4  # per class


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> pathlib.Path:
    """train/<class>/NN.png and test/<class>/NN.png from the digits: lossless, 32x32 RGB."""
    d = load("digits")
    root = tmp_path_factory.mktemp("stream") / "digits3"
    for split, images, labels, per in (("train", d.train_images, d.train_labels, TRAIN),
                                       ("test", d.test_images, d.test_labels, TEST)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for k, i in enumerate(np.flatnonzero(labels == c)[:per]):
                Image.fromarray(images[i]).save(root / split / name / f"{k:02d}.png")
    return root


def _stream_feed(folder, tmp_path, batch_size=8, drop_remainder=False, workers=0):
    source = stream.open_stream(f"folder:{folder}", cache_dir=tmp_path / "cache")
    loader = stream.Loader(source.train, source.image_shape, workers=workers)
    mesh = parallel.make_mesh(jax.devices())
    return StreamFeed(loader, batch_size, mesh, drop_remainder), source


def _feeds(folder, tmp_path, batch_size=8, drop_remainder=False, workers=0):
    data = load(f"folder:{folder}", cache_dir=tmp_path / "cache")
    feed, source = _stream_feed(folder, tmp_path, batch_size, drop_remainder, workers)
    mesh = parallel.make_mesh(jax.devices())
    return HostFeed(data, batch_size, mesh, drop_remainder), feed, data, source


def _host(batch) -> list[np.ndarray]:
    return [np.asarray(a) for a in batch if a is not None]


def test_streamed_batches_are_the_in_memory_batches(image_folder, tmp_path):
    host, streamed, data, source = _feeds(image_folder, tmp_path)
    assert source.image_shape == data.image_shape == (32, 32, 3)
    assert source.class_names == data.class_names == tuple(sorted(CLASSES))
    np.testing.assert_array_equal(source.train.labels, data.train_labels)
    assert streamed.steps == host.steps == 6  # 42 images, batches of 8, the last one padded
    keys = RunKeys.of(jax.random.key(3))
    for epoch in (0, 1):
        for i in range(streamed.steps):
            a, b = _host(host._batch(epoch, i, keys)), _host(streamed._batch(epoch, i, keys))
            assert len(a) == len(b) == 4  # image, label, index, mask
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)
    # a resume mid-epoch: the Grain iterator restarts at the step, same batch
    np.testing.assert_array_equal(_host(streamed._batch(1, 4, keys))[0],
                                  _host(host._batch(1, 4, keys))[0])
    assert streamed._batch(1, 5, keys).mask.sum() == 2  # 42 - 5 x 8 real rows


@pytest.mark.parametrize("processes", [2, 3])
def test_process_shards_are_disjoint_and_cover_each_epoch(image_folder, tmp_path, processes):
    feed, _ = _stream_feed(image_folder, tmp_path, batch_size=6, drop_remainder=True)
    keys = RunKeys.of(jax.random.key(0))
    for epoch in (0, 1):
        parts = []
        for p in range(processes):
            feed.mine = slice(p * 6 // processes, (p + 1) * 6 // processes)
            parts.append(feed.local_order(keys, epoch))
        every = np.concatenate([o.reshape(-1) for o in parts])
        np.testing.assert_array_equal(np.sort(every), np.arange(42))  # each image once
        feed.mine = slice(0, 6)  # one process: its batches are the parts side by side
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), feed.local_order(keys, epoch))
    assert not np.array_equal(feed.local_order(keys, 0), feed.local_order(keys, 1))


def test_an_unreadable_image_mid_epoch_stops_with_its_name(image_folder, tmp_path):
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(image_folder, broken)
    bad = broken / "train" / "one" / "03.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    feed, source = _stream_feed(broken, tmp_path)
    keys = RunKeys.of(jax.random.key(3))
    order = feed.local_order(keys, 0).reshape(-1)
    row = source.train.paths.index(str(bad))
    step = int(np.flatnonzero(order == row)[0]) // 8
    for i in range(step):  # the batches before it stream as usual
        feed._batch(0, i, keys)
    with pytest.raises(UserError, match=rf"streaming epoch 1, step {step}: .*03\.png.*"
                                        r"replace the file"):
        feed._batch(0, step, keys)


def test_array_record_copy_streams_the_folder(image_folder, tmp_path):
    index = convert.convert(str(image_folder), str(tmp_path / "ar"), shards=3)
    assert index["splits"]["train"]["per_class"] == [TRAIN] * 3
    assert json.loads((tmp_path / "ar" / "dataset.json").read_text()) == index
    src = stream.open_stream(f"arrayrecord:{tmp_path / 'ar'}")
    ref = stream.open_stream(f"folder:{image_folder}")
    assert (src.class_names, src.image_shape) == (ref.class_names, ref.image_shape)
    for a, b in ((src.train, ref.train), (src.test, ref.test)):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
        x, y = stream.Loader(a, src.image_shape).all(16)
        np.testing.assert_array_equal(x, stream.Loader(b, ref.image_shape).all(16)[0])
        np.testing.assert_array_equal(y, b.labels)
    in_memory = load(f"arrayrecord:{tmp_path / 'ar'}")
    folder = load(f"folder:{image_folder}", cache_dir=tmp_path / "c")
    for a, b in ((in_memory.train_images, folder.train_images),
                 (in_memory.test_labels, folder.test_labels)):
        np.testing.assert_array_equal(a, b)


def test_a_moved_folder_keeps_its_records_digest_and_a_changed_file_does_not(image_folder,
                                                                              tmp_path):
    """The digest a checkpoint keeps names the files within the folder: a run resumes after
    the folder moved, and refuses to after an image changed."""
    import shutil
    moved = shutil.copytree(image_folder, tmp_path / "elsewhere" / "digits3")
    a = stream.open_stream(f"folder:{image_folder}", cache_dir=tmp_path / "c")
    b = stream.open_stream(f"folder:{moved}", cache_dir=tmp_path / "c")
    assert b.train.paths != a.train.paths
    assert (b.train.digest(), b.test.digest()) == (a.train.digest(), a.test.digest())
    first = pathlib.Path(b.train.paths[0])
    first.write_bytes(first.read_bytes() + b"\0")  # one byte longer
    assert stream.open_stream(f"folder:{moved}", cache_dir=tmp_path / "c").train.digest() \
        != a.train.digest()


def test_streaming_refuses_in_memory_sources_and_bad_shards(tmp_path):
    with pytest.raises(UserError, match="cannot be streamed"):
        stream.open_stream("digits")
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="scripts/convert.py"):
        stream.open_stream(f"arrayrecord:{tmp_path / 'x'}")


def test_host_augmentation_is_fixed_by_seed_epoch_and_record(image_folder, tmp_path):
    from jaxcnn.config import default_config
    from jaxcnn.data import transforms
    c = default_config()
    c.data.crop_padding, c.data.flip, c.data.random_resized_crop = 4, True, (0.5, 1.0)
    source = stream.open_stream(f"folder:{image_folder}", cache_dir=tmp_path / "cache")
    loader = stream.Loader(source.train, source.image_shape, seed=7,
                           transform=transforms.train_transform(c, source.image_shape))
    assert loader.augments
    order = np.arange(len(source.train))[::-1]
    whole = list(loader.epoch(order, 8, epoch=2))
    later = list(loader.epoch(order, 8, start=3, epoch=2))  # a resume at step 3
    for a, b in zip(whole[3:], later, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    # another order (other processes, another batch size): each record's pixels are the same
    again = loader.decode.at(2)
    np.testing.assert_array_equal(again(order[5])["image"], whole[0]["image"][5])
    other_epoch = loader.decode.at(3)(order[5])["image"]
    assert not np.array_equal(other_epoch, whole[0]["image"][5])
    plain = stream.Decode(source.train, source.image_shape)(order[5])["image"]
    assert not np.array_equal(plain, whole[0]["image"][5])  # it was augmented


@pytest.mark.slow
def test_grain_worker_processes_decode_the_same_batches(image_folder, tmp_path):
    _, feed0, _, _ = _feeds(image_folder, tmp_path, workers=0)
    _, feed2, _, _ = _feeds(image_folder, tmp_path, workers=2)
    keys = RunKeys.of(jax.random.key(5))
    for epoch, first in ((0, 0), (1, 3)):  # an epoch, then a resume mid-epoch: 2 worker starts
        for i in range(first, feed0.steps):
            for x, y in zip(_host(feed0._batch(epoch, i, keys)),
                            _host(feed2._batch(epoch, i, keys)), strict=True):
                np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_prepared_tfds_set_streams_as_it_loads(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    import subprocess

    from test_data import _PREPARE_TINY_TFDS
    data_dir = tmp_path / "tfds"
    subprocess.run([sys.executable, "-c", _PREPARE_TINY_TFDS, str(data_dir)], check=True,
                   capture_output=True, timeout=120)
    src = stream.open_stream(f"tfds:jaxcnn_tiny:{data_dir}", cache_dir=tmp_path / "c")
    ref = load(f"tfds:jaxcnn_tiny:{data_dir}", cache_dir=tmp_path / "c")
    assert (src.class_names, src.image_shape) == (ref.class_names, (4, 4, 3))
    for records, images, labels in ((src.train, ref.train_images, ref.train_labels),
                                    (src.test, ref.test_images, ref.test_labels)):
        x, y = stream.Loader(records, src.image_shape).all()
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)


def _run_config(folder, tmp_path, on_device="no", augment=True):
    from jaxcnn.config import default_config
    c = default_config()
    c.data.name, c.data.cache_dir = f"folder:{folder}", str(tmp_path / "cache")
    c.data.on_device, c.data.workers = on_device, 0
    if augment:  # in the worker map when streamed
        c.data.crop_padding, c.data.flip = 2, True
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 2, 8, 12
    c.train.drop_remainder = False  # 42 images: 5 full batches and one of 2
    c.checkpoint.keep = 2
    return c


def _small_cnn():
    from flax import nnx

    from jaxcnn import models
    return models.CNN(3, width=8, hidden=32, rngs=nnx.Rngs(0))


def _leaves(model):
    from flax import nnx
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


def test_a_streamed_run_holds_out_the_in_memory_validation_images(image_folder, tmp_path):
    from jaxcnn.data import prepare
    c = _run_config(image_folder, tmp_path, augment=False)
    c.data.validation = 6  # 2 per class
    data, loader = stream.for_training(c)
    ref = prepare(c)  # the same config, its images in memory
    assert data.train_images.shape == (0, 32, 32, 3) and len(loader.records) == 36
    for a, b in ((data.val_images, ref.val_images), (data.val_labels, ref.val_labels),
                 (data.test_images, ref.test_images), (data.test_labels, ref.test_labels),
                 (data.train_labels, ref.train_labels), (loader.all()[0], ref.train_images)):
        np.testing.assert_array_equal(a, b)
    # a folder's own val/ beside test/: the validation split, streamed or not, and in its copy
    import shutil
    own = tmp_path / "own"
    shutil.copytree(image_folder, own)
    shutil.copytree(own / "test", own / "val")
    c.data.name, c.data.validation = f"folder:{own}", 0
    data, loader = stream.for_training(c)
    ref = prepare(c)
    assert len(loader.records) == 42 and len(data.val_labels) == 12
    np.testing.assert_array_equal(data.val_images, ref.val_images)
    convert.convert(str(own), str(tmp_path / "ar"), shards=2)
    np.testing.assert_array_equal(load(f"arrayrecord:{tmp_path / 'ar'}").val_images,
                                  ref.val_images)
    c.data.validation = 6
    with pytest.raises(UserError, match="has its own validation split"):
        stream.for_training(c)


@pytest.mark.slow
def test_streamed_run_resumes_exactly_and_matches_the_in_memory_run(image_folder, tmp_path):
    from conftest import QUIET

    from jaxcnn import checkpoint
    from jaxcnn.train import train_and_evaluate
    c = _run_config(image_folder, tmp_path)
    straight = train_and_evaluate(c, str(tmp_path / "a"), model=_small_cnn(), **QUIET)
    first = train_and_evaluate(c, str(tmp_path / "b"), model=_small_cnn(), stop_at_step=9,
                               **QUIET)  # step 3 of epoch 2
    assert first.stopped == "stop_at_step"
    meta = checkpoint.load_arrays(str(tmp_path / "b" / "checkpoints" / "9"))[1]
    assert {k: meta["stream"][k] for k in ("epoch", "next_step", "records")} == \
        {"epoch": 1, "next_step": 3, "records": 42}
    resumed = train_and_evaluate(c, str(tmp_path / "b"), model=_small_cnn(), **QUIET)
    for a, b in zip(_leaves(straight.model), _leaves(resumed.model), strict=True):
        np.testing.assert_array_equal(a, b)
    keys = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    assert [[r[k] for k in keys] for r in resumed.history] == \
        [[r[k] for k in keys] for r in straight.history]
    # without augmentation the streamed batches are the in-memory ones: the same training,
    # up to how XLA compiles the on-device loop (fp32 sums in another order: 1e-6)
    plain = [train_and_evaluate(_run_config(image_folder, tmp_path, on_device, augment=False),
                                None, model=_small_cnn(), **QUIET) for on_device in ("no", "yes")]
    for a, b in zip(*(_leaves(r.model) for r in plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert plain[0].final["test_accuracy"] == plain[1].final["test_accuracy"]


def streamed_run(folder: str, cache: str, coordinator: str = "", n: str = "1",
                 pid: str = "0") -> dict:
    """A short streamed run, as one of `n` processes: the records this process decoded per
    epoch, its rows of each batch, and the result."""
    from jaxcnn import models
    from jaxcnn.config import default_config
    from jaxcnn.train import build, fit
    if int(n) > 1:
        parallel.initialize_distributed(coordinator, int(n), int(pid))
    c = default_config()
    c.data.name, c.data.cache_dir, c.data.on_device, c.data.workers = folder, cache, "no", 0
    c.data.crop_padding, c.data.flip = 2, True
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 2, 6, 12  # 7 steps of 6
    c.train.peer_timeout_s = 60.0
    from flax import nnx
    job, state = build(c, model=models.CNN(3, width=8, hidden=32, rngs=nnx.Rngs(0)))
    seen, epoch_of = {}, job.feed.loader.epoch

    def spy(order, batch_size, start=0, epoch=0):
        seen.setdefault(str(epoch), []).extend(np.asarray(order)[start * batch_size:].tolist())
        return epoch_of(order, batch_size, start, epoch)

    job.feed.loader.epoch = spy
    r = fit(job, state, progress=False, log=lambda *_: None)
    return {"seen": seen, "final": r.final, "mine": [job.feed.mine.start, job.feed.mine.stop],
            "params": [float(np.abs(x).sum()) for x in _leaves(r.model)]}


@pytest.mark.slow
def test_two_processes_stream_disjoint_shards_and_match_one_process(image_folder, tmp_path):
    import socket
    import subprocess

    from conftest import REPO, _env
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    code = ("import json, sys; sys.path.insert(0, 'tests'); from test_stream import "
            "streamed_run; print(json.dumps(streamed_run(*sys.argv[1:])))")
    folder, cache = f"folder:{image_folder}", str(tmp_path / "cache")
    procs = [subprocess.Popen([sys.executable, "-c", code, folder, cache, f"127.0.0.1:{port}",
                               "2", str(pid)], cwd=REPO, env=_env(1, None), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for pid in (0, 1)]
    try:
        one = streamed_run(folder, cache)  # meanwhile, here: one process with 2 devices
        assert jax.device_count() == 2
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    two, two_b = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert (two["mine"], two_b["mine"], one["mine"]) == ([0, 3], [3, 6], [0, 6])
    for epoch in ("0", "1"):
        a, b = two["seen"][epoch], two_b["seen"][epoch]
        assert len(a) == len(b) == 21 and not set(a) & set(b)  # disjoint halves ...
        assert sorted(a + b) == list(range(42)) == sorted(one["seen"][epoch])  # ... each once
        # the processes' rows of each global batch, side by side, are the one process's batch
        np.testing.assert_array_equal(
            np.concatenate([np.reshape(a, (7, 3)), np.reshape(b, (7, 3))], axis=1),
            np.reshape(one["seen"][epoch], (7, 6)))
    # the same batches, summed over 2 devices in another order: fp32 rounding only
    np.testing.assert_allclose(two["params"], one["params"], rtol=1e-5)
    assert two["params"] == two_b["params"]  # every process holds the same replicated state
    assert abs(two["final"]["train_loss"] - one["final"]["train_loss"]) < 1e-5
    assert two["final"]["test_accuracy"] == one["final"]["test_accuracy"]
