"""`load(spec)`: turn a data set spec string into a validated `Dataset`."""

import os
import re

from ml_collections import ConfigDict

from jaxcnn.data import cache, cifar, folder, images, tfds_source, toy
from jaxcnn.data.dataset import Dataset
from jaxcnn.errors import UserError

KNOWN = ("cifar10, cifar100, digits, synthetic, folder:<path>, arrayrecord:<dir> or "
         "tfds:<name>")
# A TFDS name may carry a version (mnist:3.0.1), which its data dir then follows.
_TFDS_SPEC = re.compile(r"(?P<name>[^:]+(?::\d+\.[\d*]+\.[\d*]+)?)(?::(?P<data_dir>.+))?")


def load(spec: str, *, cache_dir: str | os.PathLike | None = None, download: bool = True,
         image_size: int = 0, max_file_bytes: int = folder.MAX_FILE_BYTES,
         max_image_pixels: int = images.MAX_IMAGE_PIXELS, verify_sha256: bool = True) -> Dataset:
    """The data set named by `spec`, checked with `Dataset.validate()`.

    Specs:
      cifar10, cifar100            official archive, downloaded once into `cache_dir`
      cifar10:<path>               a local copy: the .tar.gz or the extracted folder
      folder:<path>                train/<class>/<image> and test/<class>/<image>, as a
                                   directory or a .tar.gz/.tgz/.tar/.zip archive
      arrayrecord:<dir>            shards written by scripts/convert.py (decoded here; a
                                   run with data.on_device=no streams them instead)
      tfds:<name>[:<data_dir>]     a TFDS set prepared as array_record (default data dir
                                   $TFDS_DATA_DIR or ~/tensorflow_datasets)
      digits                       sklearn's 8x8 digits as 32x32x3, 1,437 train / 360 test
      synthetic[:<train>:<test>]   random 32x32x3 images, 10 classes, 50,000 / 10,000 default

    `cache_dir` (default $JAXCNN_DATA_DIR or ~/.cache/jaxcnn) holds downloads and decoded
    arrays; `download=False` forbids network access. Bad specs and bad data raise `UserError`.

    For folder: `image_size` N > 0 resizes every image to N x N (0: the most common size), and
    a file over `max_file_bytes` or an image over `max_image_pixels` is refused. For a local
    CIFAR archive, `verify_sha256=False` accepts a copy that is not the official file.
    `load_options(config.data)` gives all of these from a config.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"data set spec {spec!r} is empty: use {KNOWN}")
    kind, sep, arg = spec.strip().partition(":")
    if sep and not arg:
        raise UserError(f"data set spec {spec!r} ends with ':': add what follows it "
                        f"(e.g. {kind}:<path>) or drop the ':'")
    root = cache.cache_dir(cache_dir)
    if kind in cifar.ARCHIVES:
        dataset = cifar.load_cifar(kind, arg or None, root, download, verify_sha256)
    elif kind == "folder":
        if not arg:
            raise UserError(f"data set spec {spec!r} lacks a path: use folder:<path>")
        dataset = folder.load_folder(arg, root, image_size=image_size,
                                     max_file_bytes=max_file_bytes,
                                     max_image_pixels=max_image_pixels)
    elif kind == "arrayrecord" and arg:
        from jaxcnn.data import stream
        dataset = stream.load_arrays(arg, image_size=image_size,
                                     max_image_pixels=max_image_pixels)
    elif kind == "tfds":
        match = _TFDS_SPEC.fullmatch(arg)
        if not match:
            raise UserError(f"data set spec {spec!r} lacks a TFDS name: use tfds:<name> or "
                            "tfds:<name>:<data_dir>")
        dataset = tfds_source.load_tfds(match["name"], match["data_dir"], root)
    elif kind == "digits":
        if arg:
            raise UserError(f"data set spec {spec!r} has an argument, but digits takes none: "
                            "use digits")
        dataset = toy.load_digits()
    elif kind == "synthetic":
        dataset = toy.load_synthetic(*_synthetic_sizes(spec, arg))
    else:
        raise UserError(f"data set {spec!r} is unknown: use {KNOWN}")
    return dataset.validate()


def prepare(config: ConfigDict, dataset: Dataset | None = None) -> Dataset:
    """The data a run of `config` trains and evaluates on: `dataset` (or `load(data.name)`)
    with only `data.classes` / `data.train_per_class`, resized to `data.image_size` (a folder
    is already), as `data.channels`, and `data.validation` held out of its training split (by
    `seed`). Training, evaluation and plots all call this: a run's splits are the same images
    everywhere."""
    d = config.data
    data = dataset if dataset is not None else load(d.name, **load_options(d))
    if d.classes or d.train_per_class:
        data = data.subset(d.classes, d.train_per_class)
    data = data.with_image_size(d.image_size).with_channels(d.get("channels", 0))
    return data.with_validation(d.validation, config.seed)


def load_options(data_config: ConfigDict) -> dict:
    """`load`'s keyword arguments from a `config.data`: `load(d.name, **load_options(d))`."""
    d = data_config
    return {"cache_dir": d.cache_dir or None, "image_size": d.image_size,
            "max_file_bytes": d.max_file_bytes, "max_image_pixels": d.max_image_pixels,
            "verify_sha256": d.verify_sha256}


def _synthetic_sizes(spec: str, arg: str) -> tuple[int, ...]:
    """(n_train, n_test) from `<train>:<test>`, or () for the defaults."""
    if not arg:
        return ()
    sizes = arg.split(":")
    if len(sizes) != 2 or not all(s.isdigit() and int(s) > 0 for s in sizes):
        raise UserError(f"data set spec {spec!r} is malformed: use synthetic or "
                        "synthetic:<n_train>:<n_test> with positive integers")
    return tuple(int(s) for s in sizes)
