"""Tests of jaxcnn.data on small fabricated archives in the real formats, and the shared archive."""

import concurrent.futures
import dataclasses
import functools
import hashlib
import http.server
import io
import os
import pathlib
import pickle
import subprocess
import sys
import tarfile
import textwrap
import threading
import zipfile

import numpy as np
import pytest
from conftest import python
from PIL import Image

from jaxcnn.data import Dataset, cache_dir, cifar, folder, load
from jaxcnn.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tar_gz(path: pathlib.Path, members: dict[str, bytes]) -> pathlib.Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- CIFAR: fabricated python-pickle archives ----------------------------------------------

def _py2_pickle(obj) -> bytes:
    """Protocol 2 with numpy 1's module path, as in the official files (written by Python 2)."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray",
                                                 b"numpy.core.multiarray")


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    """Nx3072 uint8 rows; image 0 is red 10 / green 20 / blue 30 except red 200 at (h=1, w=2)."""
    rows = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[0, :1024], rows[0, 1024:2048], rows[0, 2048:] = 10, 20, 30
    rows[0, 1 * 32 + 2] = 200
    return rows


def _to_nhwc(row: np.ndarray) -> np.ndarray:
    """The CIFAR row layout, converted pixel by pixel: value (c, h, w) is at c*1024 + h*32 + w."""
    out = np.zeros((32, 32, 3), np.uint8)
    for c in range(3):
        for h in range(32):
            for w in range(32):
                out[h, w, c] = row[c * 1024 + h * 32 + w]
    return out


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def _cifar10_members() -> tuple[dict[str, bytes], np.ndarray, np.ndarray, np.ndarray]:
    """Archive members (3 images per train batch, 4 test) and the rows and labels inside."""
    members, rows, labels = {}, [], []
    for i in range(1, 6):
        r = _cifar_rows(3, seed=i)
        lab = [(3 * i + j) % 10 for j in range(3)]
        members[f"cifar-10-batches-py/data_batch_{i}"] = _py2_pickle(
            {b"batch_label": b"training batch", b"labels": lab, b"data": r,
             b"filenames": [b"x.png"] * 3})
        rows.append(r)
        labels += lab
    test_rows = _cifar_rows(4, seed=9)
    members["cifar-10-batches-py/test_batch"] = _py2_pickle(
        {b"labels": [9, 0, 1, 2], b"data": test_rows})
    members["cifar-10-batches-py/batches.meta"] = _py2_pickle(
        {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072})
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return members, np.concatenate(rows), np.array(labels), test_rows


@pytest.fixture
def cifar10_archive(tmp_path) -> pathlib.Path:
    return _tar_gz(tmp_path / "cifar-10-python.tar.gz", _cifar10_members()[0])


def _check_cifar10(ds: Dataset) -> None:
    _, rows, labels, test_rows = _cifar10_members()
    assert ds.name == "cifar10" and ds.class_names == tuple(CIFAR10_NAMES)
    assert ds.train_images.shape == (15, 32, 32, 3) and ds.test_images.shape == (4, 32, 32, 3)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert ds.train_images[0, 0, 0].tolist() == [10, 20, 30]
    assert ds.train_images[0, 1, 2].tolist() == [200, 20, 30]
    for i in (1, 7, 14):  # batch 1, 3 and 5
        np.testing.assert_array_equal(ds.train_images[i], _to_nhwc(rows[i]))
    np.testing.assert_array_equal(ds.test_images[3], _to_nhwc(test_rows[3]))
    np.testing.assert_array_equal(ds.train_labels, labels)
    assert ds.test_labels.tolist() == [9, 0, 1, 2]


def test_cifar10_local_archive_is_converted_to_nhwc(cifar10_archive, tmp_path):
    # A fabricated archive is not the official file: only verify_sha256=False reads it.
    _check_cifar10(load(f"cifar10:{cifar10_archive}", cache_dir=tmp_path / "cache",
                        verify_sha256=False))


def test_cifar10_extracted_folder_or_its_parent(tmp_path):
    for name, data in _cifar10_members()[0].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    _check_cifar10(load(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", cache_dir=tmp_path / "c"))
    _check_cifar10(load(f"cifar10:{tmp_path}", cache_dir=tmp_path / "c"))


def test_cifar100_uses_fine_labels(tmp_path):
    rows = _cifar_rows(5, seed=3)
    fine = [0, 99, 42, 7, 99]
    names = [f"class{i:02d}" for i in range(100)]
    archive = _tar_gz(tmp_path / "c100.tar.gz", {
        "cifar-100-python/train": _py2_pickle({b"data": rows, b"fine_labels": fine,
                                               b"coarse_labels": [1] * 5}),
        "cifar-100-python/test": _py2_pickle({b"data": rows[:2], b"fine_labels": fine[:2],
                                              b"coarse_labels": [1] * 2}),
        "cifar-100-python/meta": _py2_pickle({b"fine_label_names": [n.encode() for n in names],
                                              b"coarse_label_names": [b"x"] * 20}),
    })
    ds = load(f"cifar100:{archive}", cache_dir=tmp_path / "cache", verify_sha256=False)
    assert ds.num_classes == 100 and ds.class_names[42] == "class42"
    assert ds.train_labels.tolist() == fine and ds.test_labels.tolist() == fine[:2]
    assert ds.train_images[0, 1, 2].tolist() == [200, 20, 30]
    np.testing.assert_array_equal(ds.train_images[4], _to_nhwc(rows[4]))


@pytest.fixture
def http_dir(tmp_path):
    """(folder, base URL) of a plain HTTP server on 127.0.0.1, stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _serve_cifar10(monkeypatch, http_dir, sha256: str | None = None) -> bytes:
    """Put the fabricated archive on the server and point cifar10's URL and checksum at it."""
    root, base = http_dir
    data = _tar_gz(root / "cifar-10-python.tar.gz", _cifar10_members()[0]).read_bytes()
    archive = cifar.ARCHIVES["cifar10"]
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", dataclasses.replace(
        archive, url=f"{base}/cifar-10-python.tar.gz",
        sha256=sha256 or hashlib.sha256(data).hexdigest()))
    return data


def test_cifar10_download_checks_sha256_and_happens_once(monkeypatch, http_dir, tmp_path):
    data = _serve_cifar10(monkeypatch, http_dir)
    ds = load("cifar10", cache_dir=tmp_path / "cache")
    _check_cifar10(ds)
    downloads = list((tmp_path / "cache" / "downloads").iterdir())
    assert [p.name for p in downloads] == ["cifar-10-python.tar.gz"]
    assert downloads[0].read_bytes() == data
    (http_dir[0] / "cifar-10-python.tar.gz").unlink()  # a second download would now fail
    _check_cifar10(load("cifar10", cache_dir=tmp_path / "cache"))


def test_cifar10_download_with_wrong_sha256_leaves_nothing(monkeypatch, http_dir, tmp_path):
    _serve_cifar10(monkeypatch, http_dir, sha256="0" * 64)
    with pytest.raises(UserError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}.*cifar10:<path"):
        load("cifar10", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []


def test_cifar10_failed_download_names_url_and_the_local_option(monkeypatch, tmp_path):
    archive = cifar.ARCHIVES["cifar10"]
    url = (tmp_path / "absent" / "cifar-10-python.tar.gz").as_uri()
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", dataclasses.replace(archive, url=url))
    with pytest.raises(UserError, match=rf"download of {url} failed .*cifar10:<path"):
        load("cifar10", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="downloading is off"):
        load("cifar10", cache_dir=tmp_path / "cache", download=False)


def test_cifar_bad_copies(cifar10_archive, tmp_path):
    opts = dict(cache_dir=tmp_path / "cache", verify_sha256=False)  # a re-packed copy's checks
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(cifar10_archive.read_bytes()[:-200])
    with pytest.raises(UserError, match="corrupt, truncated"):
        load(f"cifar10:{truncated}", **opts)
    members = _cifar10_members()[0]
    del members["cifar-10-batches-py/data_batch_3"]
    with pytest.raises(UserError, match="lacks cifar-10-batches-py/data_batch_3"):
        load(f"cifar10:{_tar_gz(tmp_path / 'partial.tar.gz', members)}", **opts)
    members["cifar-10-batches-py/data_batch_3"] = b"not a pickle"
    with pytest.raises(UserError, match="cannot unpickle data_batch_3"):
        load(f"cifar10:{_tar_gz(tmp_path / 'garbage.tar.gz', members)}", **opts)
    # A pickle that would run a command on load is refused, not executed.
    members["cifar-10-batches-py/data_batch_3"] = b"cos\nsystem\n(S'touch pwned'\ntR."
    with pytest.raises(UserError, match="refusing os.system"):
        load(f"cifar10:{_tar_gz(tmp_path / 'evil.tar.gz', members)}", **opts)
    with pytest.raises(UserError, match="does not exist"):
        load(f"cifar10:{tmp_path / 'nope.tar.gz'}", **opts)


# --- Image folders --------------------------------------------------------------------------

COLOURS = {"bird": (255, 0, 0), "cat": (0, 255, 0), "dog": (0, 0, 255)}


def _png(rgb, size=(8, 8), mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).convert(mode).save(out, "PNG")
    return out.getvalue()


def _folder_members(prefix: str = "") -> dict[str, bytes]:
    """3 classes; train has 2 PNGs per class plus 4 odd images; test has 1 PNG per class."""
    m = {}
    for c, rgb in COLOURS.items():
        for i in range(2):
            m[f"{prefix}train/{c}/{i}.png"] = _png(tuple(v // (i + 1) for v in rgb))
        m[f"{prefix}test/{c}/0.png"] = _png(rgb)
    m[f"{prefix}train/cat/big.png"] = _png((0, 255, 0), size=(16, 12))  # resized to 8x8
    m[f"{prefix}train/dog/grey.png"] = _png((90, 90, 90), mode="L")
    m[f"{prefix}train/dog/rgba.png"] = _png((1, 2, 3), mode="RGBA")
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(jpeg, "JPEG", quality=95)
    m[f"{prefix}train/bird/sub/photo.jpg"] = jpeg.getvalue()  # deeper inside a class folder
    m[f"{prefix}train/bird/.hidden.png"] = b"skipped"
    m[f"{prefix}README.txt"] = b"not an image, not in a split"
    return m


def _check_folder(ds: Dataset, name: str) -> None:
    assert ds.name == name and ds.class_names == ("bird", "cat", "dog")
    assert ds.train_images.shape == (10, 8, 8, 3) and ds.test_images.shape == (3, 8, 8, 3)
    # Sorted by class, then path: bird/0, bird/1, bird/sub/photo, cat/0, cat/1, cat/big, dog/...
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert ds.test_labels.tolist() == [0, 1, 2]
    assert (ds.train_images[0] == (255, 0, 0)).all() and (ds.train_images[1] == (127, 0, 0)).all()
    assert np.abs(ds.train_images[2].astype(int) - (200, 100, 50)).max() <= 3  # JPEG
    assert (ds.train_images[5] == (0, 255, 0)).all()  # resized from 16x12
    assert (ds.train_images[8] == 90).all()  # grey -> RGB
    assert (ds.train_images[9] == (1, 2, 3)).all()  # RGBA -> RGB
    assert (ds.test_images[2] == (0, 0, 255)).all()


def test_folder_tar_gz_zip_and_directory_agree(tmp_path):
    tgz = _tar_gz(tmp_path / "toy.tar.gz", _folder_members("toy/"))
    zpath = tmp_path / "toy2.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name, data in {**_folder_members(), "__MACOSX/train/cat/._0.png": b"x"}.items():
            zf.writestr(name, data)
    for name, data in _folder_members().items():
        (tmp_path / "dir" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / name).write_bytes(data)
    a = load(f"folder:{tgz}", cache_dir=tmp_path / "c")
    b = load(f"folder:{zpath}", cache_dir=tmp_path / "c")
    d = load(f"folder:{tmp_path / 'dir'}", cache_dir=tmp_path / "c")
    _check_folder(a, "toy")
    _check_folder(b, "toy2")
    _check_folder(d, "dir")
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.train_images, d.train_images)


def test_folder_parallel_decode_matches_serial(tmp_path, monkeypatch):
    tgz = _tar_gz(tmp_path / "toy.tar.gz", _folder_members())
    serial = load(f"folder:{tgz}", cache_dir=tmp_path / "c1")
    monkeypatch.setattr(folder, "PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setenv("JAXCNN_DECODE_WORKERS", "2")
    pools = []
    real_pool = concurrent.futures.ProcessPoolExecutor
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor",
                        lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    parallel = load(f"folder:{tgz}", cache_dir=tmp_path / "c2")
    assert pools == [(2,)]  # one pool of 2 workers
    np.testing.assert_array_equal(serial.train_images, parallel.train_images)
    np.testing.assert_array_equal(serial.test_images, parallel.test_images)


def test_folder_cache_hit_change_and_corruption(tmp_path, monkeypatch):
    tgz = _tar_gz(tmp_path / "toy.tar.gz", _folder_members())
    first = load(f"folder:{tgz}", cache_dir=tmp_path / "c")
    [npz] = (tmp_path / "c" / "arrays").iterdir()
    assert npz.suffix == ".npz"

    def fail(*args):
        raise AssertionError("decoded although the cache is valid")
    real = folder._decode
    monkeypatch.setattr(folder, "_decode", fail)
    second = load(f"folder:{tgz}", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert second.class_names == first.class_names and second.name == first.name

    os.utime(tgz, ns=(0, 0))  # the source changed: the arrays must be rebuilt
    with pytest.raises(AssertionError, match="decoded although"):
        load(f"folder:{tgz}", cache_dir=tmp_path / "c")
    monkeypatch.setattr(folder, "_decode", real)
    load(f"folder:{tgz}", cache_dir=tmp_path / "c")
    for path in (tmp_path / "c" / "arrays").iterdir():
        path.write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="unreadable cache file"):
        third = load(f"folder:{tgz}", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(first.train_images, third.train_images)
    monkeypatch.setattr(folder, "_decode", fail)  # the rebuilt cache file serves the next load
    np.testing.assert_array_equal(load(f"folder:{tgz}", cache_dir=tmp_path / "c").train_images,
                                  first.train_images)


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("JAXCNN_DATA_DIR")
    assert cache_dir() == pathlib.Path.home() / ".cache" / "jaxcnn"


def _folder_error(tmp_path, members: dict[str, bytes], match: str, name="bad.tar.gz"):
    path = _tar_gz(tmp_path / name, members)
    with pytest.raises(UserError, match=match):
        load(f"folder:{path}", cache_dir=tmp_path / "c")


def test_folder_bad_inputs(tmp_path):
    c = tmp_path / "c"
    with pytest.raises(UserError, match="does not exist"):
        load(f"folder:{tmp_path / 'missing'}", cache_dir=c)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="neither a directory nor a supported archive"):
        load(f"folder:{tmp_path / 'notes.txt'}", cache_dir=c)
    good = _tar_gz(tmp_path / "good.tar.gz", _folder_members()).read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(good[:len(good) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load(f"folder:{tmp_path / 'cut.tar.gz'}", cache_dir=c)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 this is no zip")
    with pytest.raises(UserError, match="corrupt or truncated"):
        load(f"folder:{tmp_path / 'junk.zip'}", cache_dir=c)
    (tmp_path / "junk.tar").write_bytes(os.urandom(3000))
    with pytest.raises(UserError, match="corrupt or truncated"):
        load(f"folder:{tmp_path / 'junk.tar'}", cache_dir=c)

    members = _folder_members()
    _folder_error(tmp_path, {k.replace("test/", "testing/"): v for k, v in members.items()},
                  r"no train/ and test/ \(or val/\) folders")
    _folder_error(tmp_path, {k: v for k, v in members.items() if k != "test/dog/0.png"},
                  r"train/ and test/ .* differ \(only in train: dog; only in test: -\)")
    _folder_error(tmp_path, {**members, "train/cat/broken.png": b"\x89PNG garbage"},
                  r"cannot decode image train/cat/broken\.png in .*bad\.tar\.gz")
    _folder_error(tmp_path, {**members, "train/stray.png": _png((0, 0, 0))},
                  "train/stray.png .* is not inside a class folder")
    _folder_error(tmp_path, {**{f"a/{k}": v for k, v in members.items()},
                             **{f"b/{k}": v for k, v in members.items()}},
                  r"under several folders \(a, b\)")


# --- Specs, toys, Dataset --------------------------------------------------------------------

@pytest.mark.parametrize("spec, match", [
    ("foo", r"data set 'foo' is unknown: use cifar10, cifar100, digits, synthetic, folder:"),
    ("", "is empty"),
    ("folder", "lacks a path"),
    ("folder:", "ends with ':'"),
    ("synthetic:10", "malformed"),
    ("synthetic:a:b", "malformed"),
    ("synthetic:0:5", "malformed"),
    ("digits:3", "digits takes none"),
])
def test_bad_specs(spec, match, tmp_path):
    with pytest.raises(UserError, match=match):
        load(spec, cache_dir=tmp_path)


def test_digits():
    ds = load("digits")
    assert ds.train_images.shape == (1437, 32, 32, 3) and ds.test_images.shape == (360, 32, 32, 3)
    assert ds.train_images.dtype == np.uint8 and ds.class_names == tuple("0123456789")
    assert ds.train_images.max() == 255 and ds.num_classes == 10
    assert np.bincount(ds.test_labels).min() >= 35  # stratified: ~36 per class
    x = ds.train_images[0]
    assert (x[::4, ::4, :1].repeat(4, 0).repeat(4, 1).repeat(3, 2) == x).all()  # 4x4 blocks, grey
    np.testing.assert_array_equal(load("digits").test_images, ds.test_images)  # deterministic


def test_synthetic():
    ds = load("synthetic:100:20")
    assert ds.train_images.shape == (100, 32, 32, 3) and ds.test_images.shape == (20, 32, 32, 3)
    assert ds.num_classes == 10 and ds.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(load("synthetic:100:20").train_images, ds.train_images)
    full = load("synthetic")
    assert len(full.train_labels) == 50_000 and len(full.test_labels) == 10_000
    assert 120 < full.train_images.mean() < 135 and set(np.unique(full.train_labels)) == set(
        range(10))


def test_dataset_validate_names_the_problem():
    ok = load("synthetic:4:2")
    fields = dict(train_images=ok.train_images, train_labels=ok.train_labels,
                  test_images=ok.test_images, test_labels=ok.test_labels,
                  class_names=ok.class_names, name="x")
    with pytest.raises(UserError, match="expected uint8"):
        Dataset(**{**fields, "train_images": ok.train_images.astype(np.float32)}).validate()
    with pytest.raises(UserError, match="labels span 0..10 but there are 10 classes"):
        Dataset(**{**fields, "test_labels": np.array([0, 10], np.int32)}).validate()
    with pytest.raises(UserError, match="expected int32"):
        Dataset(**{**fields, "train_labels": ok.train_labels.astype(np.int64)}).validate()
    assert "train=4" in repr(ok) and "image=32x32x3" in repr(ok)


@pytest.mark.slow
def test_import_is_light():
    # jax comes with the package; the optional heavy readers load only when a spec needs them.
    code = ("import sys, jaxcnn.data; "
            "print(sorted(m for m in ('tensorflow_datasets', 'sklearn', 'tensorflow') "
            "if m in sys.modules))")
    out = python("-c", code, env={"PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


# --- TFDS -----------------------------------------------------------------------------------

_PREPARE_TINY_TFDS = textwrap.dedent("""
    import io, sys
    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    class JaxcnnTiny(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(4, 4, 3)),
                "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "test": self._generate_examples(3)}

        def _generate_examples(self, n):
            for i in range(n):
                png = io.BytesIO()  # PNG bytes: encoding a numpy array would need TensorFlow
                Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(png, "PNG")
                yield i, {"image": png.getvalue(), "label": i % 3}

    JaxcnnTiny(data_dir=sys.argv[1], file_format="array_record").download_and_prepare()
""")


@pytest.mark.slow
def test_tfds_prepared_array_record_without_tensorflow(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path / "tfds"
    # Prepared in a subprocess, so this process reads it as a user would: from files alone.
    subprocess.run([sys.executable, "-c", _PREPARE_TINY_TFDS, str(data_dir)], check=True,
                   capture_output=True, timeout=120)
    ds = load(f"tfds:jaxcnn_tiny:{data_dir}", cache_dir=tmp_path / "c")
    assert ds.class_names == ("a", "b", "c") and ds.name == "jaxcnn_tiny"
    assert ds.train_images.shape == (6, 4, 4, 3) and ds.test_images.shape == (3, 4, 4, 3)
    assert sorted(ds.train_labels.tolist()) == [0, 0, 1, 1, 2, 2]
    # Each image encodes its example index in red, and the label is that index mod 3.
    red = ds.train_images[:, 0, 0, 0].astype(int)
    assert sorted(red.tolist()) == [0, 10, 20, 30, 40, 50]
    assert ((red // 10) % 3 == ds.train_labels).all()
    assert (ds.train_images[..., 1:] == 0).all()


def test_tfds_not_prepared_or_unknown(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"'mnist' is not prepared in .*empty.*tfds build mnist"):
        load("tfds:mnist", cache_dir=tmp_path / "c")
    with pytest.raises(UserError, match="neither a known TFDS name nor prepared"):
        load(f"tfds:no_such_set_xyz:{tmp_path}", cache_dir=tmp_path / "c")


# --- The shared CIFAR-10 JPEG archive ---------------------------------------------------------

@pytest.mark.slow
def test_cifar10_jpeg_shared_archive(cifar10_jpeg, cifar10_jpeg_path, cifar10_jpeg_cache_dir,
                                     monkeypatch):
    ds = cifar10_jpeg
    assert ds.train_images.shape == (50_000, 32, 32, 3)
    assert ds.test_images.shape == (10_000, 32, 32, 3)
    assert ds.class_names == tuple(CIFAR10_NAMES)  # sorted folder names = CIFAR-10's order
    assert np.bincount(ds.train_labels).tolist() == [5000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    with tarfile.open(cifar10_jpeg_path) as tar:  # test/airplane/0000.jpg comes early
        info = next(m for m in tar if m.name == "cifar10-jpeg/test/airplane/0000.jpg")
        member = tar.extractfile(info).read()
    np.testing.assert_array_equal(ds.test_images[0],
                                  np.asarray(Image.open(io.BytesIO(member)).convert("RGB")))
    # the second load reads the decoded arrays from the cache: no image is decoded again
    monkeypatch.setattr(folder, "_decode", _no_decoding)
    again = load(f"folder:{cifar10_jpeg_path}", cache_dir=cifar10_jpeg_cache_dir)
    np.testing.assert_array_equal(again.train_images[::997], ds.train_images[::997])


def _no_decoding(*args):
    raise AssertionError(f"decoded {args[0]} although the cache holds it")
