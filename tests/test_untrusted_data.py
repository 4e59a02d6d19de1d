"""Untrusted image folders and archives: size limits, non-regular files, mixed sizes, the one
image decoder (16-bit, float, EXIF) shared by training, predict and serving, and the sha256 of
local CIFAR archives. Small images made in tmp_path; the file runs in a few seconds."""

import hashlib
import io
import os
import struct
import tarfile
import threading
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from test_data import _check_cifar10, _cifar10_members, _tar_gz

from jaxcnn import inference, serving
from jaxcnn.config import default_config
from jaxcnn.data import cifar, folder, images, load, load_options
from jaxcnn.errors import UserError

CLASSES = {"a": (200, 0, 0), "b": (0, 0, 200)}


def _png(rgb=(10, 20, 30), size_WxH=(8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size_WxH, rgb).save(out, "PNG")
    return out.getvalue()


def _members(size_WxH=(8, 6)) -> dict[str, bytes]:
    """2 train and 1 test PNG per class, all `size_WxH`."""
    m = {}
    for c, rgb in CLASSES.items():
        m[f"train/{c}/0.png"] = m[f"train/{c}/1.png"] = _png(rgb, size_WxH)
        m[f"test/{c}/0.png"] = _png(rgb, size_WxH)
    return m


def _tree(path, members: dict[str, bytes]):
    for name, data in members.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def _load(spec: str, tmp_path, **kwargs):
    """(data set, the warnings' messages) of `load(spec)` with a cache in tmp_path."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(spec, cache_dir=tmp_path / "cache", **kwargs)
    return ds, [str(w.message) for w in caught]


# --- size limits --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_member_over_max_file_bytes_is_refused_from_its_header(kind, tmp_path,
                                                                       monkeypatch):
    big = {"train/a/big.png": os.urandom(5000)}  # first, so that nothing is read before it
    path = tmp_path / f"data.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in {**big, **_members()}.items():
                zf.writestr(name, data)
        reader = zipfile.ZipExtFile
    else:
        _tar_gz(path, {**big, **_members()})
        reader = tarfile.ExFileObject
    read = []
    real_read = reader.read
    monkeypatch.setattr(reader, "read", lambda self, *a: read.append(1) or real_read(self, *a))
    with pytest.raises(UserError) as e:
        load(f"folder:{path}", cache_dir=tmp_path / "cache", max_file_bytes=1000)
    assert str(e.value) == (f"train/a/big.png in {path} is 5,000 bytes, more than the limit of "
                            "1,000: remove it, or raise data.max_file_bytes")
    assert read == []  # refused from the header: no member's bytes were read


def test_member_whose_header_understates_its_size_is_cut_after_limit_plus_one_bytes():
    f = io.BytesIO(b"x" * 5000)
    with pytest.raises(UserError, match=r"^m in a\.zip holds more than 1,000 bytes although its "
                                        r"header says 10: remove it, or raise data\.max_file_"):
        folder._read_member("m in a.zip", 10, f, 1000)
    assert f.tell() == 1001


def test_directory_file_over_max_file_bytes_is_refused(tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8))
    noise.save(_tree(tmp_path / "ds", _members()) / "train/b/noise.png")
    root, size = tmp_path / "ds", (tmp_path / "ds/train/b/noise.png").stat().st_size
    assert size > 3000 and max(len(v) for v in _members().values()) < 1000
    with pytest.raises(UserError) as e:
        load(f"folder:{root}", cache_dir=tmp_path / "cache", max_file_bytes=1000)
    assert str(e.value) == (f"train/b/noise.png in {root} is {size:,} bytes, more than the limit "
                            "of 1,000: remove it, or raise data.max_file_bytes")


def test_image_over_max_image_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    root = _tree(tmp_path / "ds", {**_members(), "train/b/big.png": _png(size_WxH=(40, 30))})

    def no_load(self):
        raise AssertionError("decoded although the header says it is too large")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(UserError) as e:
        load(f"folder:{root}", cache_dir=tmp_path / "cache", max_image_pixels=1000)
    assert str(e.value) == (f"image train/b/big.png in {root} is 40x30 = 1,200 pixels, more than "
                            "the limit of 1,000: shrink it, or raise data.max_image_pixels")
    big = root / "train/b/big.png"
    with pytest.raises(UserError, match=r"^image .*big\.png is 40x30 = 1,200 pixels, more than "
                                        r"the limit of 1,000: shrink it, or raise data\.max_"):
        inference.prepare_images([big], (30, 40, 3), max_image_pixels=1000)
    with pytest.raises(serving.ServingError, match=r"1,200 pixels, more than the limit of 1,000: "
                                                   r"shrink it, or raise max_image_pixels of "):
        serving.prepare([big], (30, 40, 3), max_image_pixels=1000)


def _png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h 1-bit pixels (and holds none): Pillow only reads the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_pillows_decompression_bomb_error_is_a_one_line_user_error():
    # Above twice Pillow's own limit, Image.open itself refuses, before any limit of ours.
    with pytest.raises(UserError) as e:
        images.decode(_png_header(20_000, 20_000), name="bomb.png", max_image_pixels=2**40)
    assert str(e.value).startswith("image bomb.png is too large to decode (Image size "
                                   "(400000000 pixels) exceeds limit")
    assert str(e.value).endswith("): shrink it") and "\n" not in str(e.value)


# --- what a directory may hold ----------------------------------------------------------------

def test_fifo_in_a_class_folder_is_skipped_not_waited_for(tmp_path):
    root = _tree(tmp_path / "ds", _members())
    fifo = root / "train/a/pipe.png"
    os.mkfifo(fifo)
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=_load(f"folder:{root}", tmp_path)),
                              daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():  # blocked opening the FIFO: let it end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading a folder with a FIFO hangs")
    ds, messages = out["r"]
    assert ds.train_images.shape == (4, 6, 8, 3) and ds.train_labels.tolist() == [0, 0, 1, 1]
    assert messages == [f"skipped 1 FIFOs, sockets or devices in {root}: only regular files "
                        "inside it are read"]


def test_dangling_symlink_is_skipped(tmp_path):
    root = _tree(tmp_path / "ds", _members())
    os.symlink("gone.png", root / "train/b/dangling.png")
    ds, messages = _load(f"folder:{root}", tmp_path)
    assert ds.train_images.shape == (4, 6, 8, 3)
    assert messages == [f"skipped 1 broken symlinks in {root}: only regular files inside it are "
                        "read"]


def test_symlink_leading_out_of_the_folder_is_skipped_one_inside_is_read(tmp_path):
    root = _tree(tmp_path / "ds", _members())
    (tmp_path / "secret.png").write_bytes(_png((1, 2, 3)))
    os.symlink(tmp_path / "secret.png", root / "train/a/out.png")
    os.symlink("../../test/b/0.png", root / "train/b/in.png")  # inside the folder: kept
    ds, messages = _load(f"folder:{root}", tmp_path)
    assert ds.train_labels.tolist() == [0, 0, 1, 1, 1]
    assert not (ds.train_images == (1, 2, 3)).all(axis=(1, 2, 3)).any()
    assert (ds.train_images[4] == CLASSES["b"]).all()
    assert messages == [f"skipped 1 symlinks leading out of the folder in {root}: only regular "
                        "files inside it are read"]


def test_archive_links_are_skipped_and_counted(tmp_path):
    path = tmp_path / "data.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in _members().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind in (("train/a/sym.png", tarfile.SYMTYPE), ("train/b/hard.png",
                                                                   tarfile.LNKTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "../../../../etc/passwd"
            tar.addfile(info)
    ds, messages = _load(f"folder:{path}", tmp_path)
    assert ds.train_images.shape == (4, 6, 8, 3)
    assert messages == [f"skipped 2 archive members that are links or devices in {path}: only "
                        "regular files inside it are read"]


# --- one size for the whole set ---------------------------------------------------------------

def _mixed(tmp_path):
    """The first file is 20x20; 8x6 is the most common size (6 of 9), then 20x20, 10x10."""
    return _tree(tmp_path / "ds", {**_members(), "train/a/0-first.png": _png(size_WxH=(20, 20)),
                                   "train/b/big.png": _png(size_WxH=(20, 20)),
                                   "test/b/small.png": _png((7, 7, 7), size_WxH=(10, 10))})


def test_mixed_sizes_take_the_most_common_not_the_first(tmp_path):
    root = _mixed(tmp_path)
    ds, messages = _load(f"folder:{root}", tmp_path)
    assert ds.image_shape == (6, 8, 3) and len(ds.train_images) == 6 and len(ds.test_images) == 3
    assert (ds.test_images[2] == 7).all()  # 10x10 resized, one colour stays that colour
    assert messages == [f"3 of 9 images in {root} are resized to 8x6, the most common size, from "
                        "20x20 (2), 10x10 (1): set data.image_size to N for N x N instead"]


def test_most_common_size_ties_go_to_the_smallest_area(tmp_path):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert folder._common_size(tmp_path, [(9, 9), (4, 4), (9, 9), (4, 4), (2, 8)]) == (4, 4)
        assert folder._common_size(tmp_path, [(8, 2), (2, 8)]) == (2, 8)


def test_image_size_resizes_every_image_and_keys_the_cache(tmp_path):
    root = _mixed(tmp_path)
    ds, messages = _load(f"folder:{root}", tmp_path, image_size=5)
    assert ds.image_shape == (5, 5, 3) and messages == []
    assert (ds.train_images[0] == (10, 20, 30)).all()  # train/a/0-first.png, from 20x20
    # The same source at another size must not come back from the cache at 5x5.
    assert _load(f"folder:{root}", tmp_path)[0].image_shape == (6, 8, 3)
    assert _load(f"folder:{root}", tmp_path, image_size=5)[0].image_shape == (5, 5, 3)


# --- the one decoder: training, predict and serving alike -------------------------------------

def _three_ways(tmp_path, name: str, data: bytes, shape_HxWxC) -> list[np.ndarray]:
    """The image `data` as training (a folder), inference.prepare_images and serving.prepare
    decode it; the folder's other images are blank, of the same upright size."""
    h, w, _ = shape_HxWxC
    root = _tree(tmp_path / "ds", {**_members((w, h)), f"train/a/{name}": data})
    ds, messages = _load(f"folder:{root}", tmp_path)
    assert messages == []  # no image resized: the upright size is known without decoding
    path = root / "train/a" / name
    return [ds.train_images[2], inference.prepare_images([path], shape_HxWxC)[0],
            serving.prepare([path], shape_HxWxC)[0]]


def test_16_bit_grey_is_scaled_by_257_not_clipped(tmp_path):
    v_HxW = np.tile(np.array([0, 257 * 100, 32768, 65535], np.uint16), (6, 2))
    out = io.BytesIO()
    Image.fromarray(v_HxW).save(out, "PNG")  # a 16-bit grey PNG: mode I;16
    want = np.tile(np.array([0, 100, 128, 255], np.uint8), (6, 2))
    for got in _three_ways(tmp_path, "grey16.png", out.getvalue(), (6, 8, 3)):
        np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, axis=-1))
    big_endian = Image.frombytes("I;16B", (8, 6), v_HxW.astype(">u2").tobytes())
    for im in (big_endian, Image.fromarray(v_HxW.astype(np.int32))):  # modes I;16B and I
        np.testing.assert_array_equal(images.decode(im, channels=1)[..., 0], want)


def test_float_tiff_0_to_1_is_scaled_to_255_not_black(tmp_path):
    v_HxW = np.tile(np.array([0.0, 0.5, 1.0, 2.0, -1.0, np.nan, 0.2, 0.5], np.float32), (6, 1))
    out = io.BytesIO()
    Image.fromarray(v_HxW).save(out, "TIFF")  # mode F
    want = np.tile(np.array([0, 128, 255, 255, 0, 0, 51, 128], np.uint8), (6, 1))
    for got in _three_ways(tmp_path, "float.tif", out.getvalue(), (6, 8, 3)):
        np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, axis=-1))


def test_exif_orientation_is_applied(tmp_path):
    stored_HxWx3 = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    im = Image.fromarray(stored_HxWx3)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = io.BytesIO()
    im.save(out, "PNG", exif=exif)
    upright_HxWx3 = np.rot90(stored_HxWx3, k=-1)  # 8 high, 6 wide
    for got in _three_ways(tmp_path, "turned.png", out.getvalue(), (8, 6, 3)):
        np.testing.assert_array_equal(got, upright_HxWx3)


def test_unreadable_or_truncated_image_names_the_file(tmp_path):
    cut = _png(size_WxH=(64, 64))[:-30]
    with pytest.raises(UserError, match=r"^cannot decode image x\.png \(.*\): replace or remove"):
        images.decode(cut, name="x.png")
    (tmp_path / "y.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=rf"^cannot decode image {tmp_path / 'y.png'} \("):
        images.decode(tmp_path / "y.png")


# --- local CIFAR archives -----------------------------------------------------------------------

def test_local_cifar_archive_must_be_the_official_file_unless_told(tmp_path):
    path = _tar_gz(tmp_path / "cifar-10-python.tar.gz", _cifar10_members()[0])
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(UserError) as e:
        load(f"cifar10:{path}", cache_dir=tmp_path / "cache")
    assert str(e.value) == (
        f"{path} is not the official cifar-10-python.tar.gz (sha256 {got}, expected "
        f"{cifar.ARCHIVES['cifar10'].sha256}): use the official file, or pass "
        "--config.data.verify_sha256=false to use a re-packed copy")
    _check_cifar10(load(f"cifar10:{path}", cache_dir=tmp_path / "cache", verify_sha256=False))
    with pytest.raises(UserError, match="is not the official"):  # cached arrays or not
        load(f"cifar10:{path}", cache_dir=tmp_path / "cache")
    # An extracted folder has no single file to hash: accepted, its pickles checked as ever.
    _tree(tmp_path / "x", _cifar10_members()[0])
    _check_cifar10(load(f"cifar10:{tmp_path / 'x'}", cache_dir=tmp_path / "cache"))


def test_load_options_come_from_config_data():
    d = default_config().data
    d.cache_dir, d.image_size, d.verify_sha256 = "somewhere", 24, False
    assert load_options(d) == {"cache_dir": "somewhere", "image_size": 24,
                               "max_file_bytes": 64 * 2**20, "max_image_pixels": 2**26,
                               "verify_sha256": False}
    d.cache_dir = ""
    assert load_options(d)["cache_dir"] is None
