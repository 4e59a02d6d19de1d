"""Image classification sets prepared by TensorFlow Datasets, read without TensorFlow.

`tfds.data_source` reads the array_record files of a prepared data dir with plain Python and
decodes images with Pillow, so only `tensorflow-datasets` is needed here, and only when a
`tfds:` spec is loaded. Preparing (`tfds build`) needs TensorFlow and network; do it once on a
machine that has them and copy the data dir over.
"""

import os
import pathlib

import numpy as np

from jaxcnn.data import cache
from jaxcnn.data.dataset import Dataset
from jaxcnn.errors import UserError


def default_data_dir() -> str:
    """$TFDS_DATA_DIR, else TFDS's own default ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def load_tfds(name: str, data_dir: str | None, root: pathlib.Path) -> Dataset:
    """The `train` and `test` splits (and `validation`, if it has one) of the prepared TFDS data
    set `name` in `data_dir`."""
    try:
        import tensorflow_datasets as tfds  # lazy: heavy, and only tfds: specs need it
    except ImportError as e:
        raise UserError(f"tfds:{name} needs tensorflow-datasets ({e}): pip install "
                        "tensorflow-datasets array_record") from e
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    build = (f"`tfds build {name} --data_dir {data_dir} --file_format array_record` (needs "
             "TensorFlow and network), or point to a prepared data dir with "
             f"tfds:{name}:<data_dir> or TFDS_DATA_DIR")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UserError(f"TFDS data set {name!r} is neither a known TFDS name nor prepared in "
                        f"{data_dir}: check the name, or prepare it with {build}") from e
    if not builder.is_prepared():
        raise UserError(f"TFDS data set {name!r} is not prepared in {data_dir}: prepare it with "
                        f"{build}")
    features = builder.info.features
    if "image" not in features or "label" not in features or not hasattr(
            features["label"], "names"):
        raise UserError(f"TFDS data set {name!r} has features {sorted(features)}, not an 'image' "
                        "and a class 'label': only image classification sets are supported")
    missing = [s for s in ("train", "test") if s not in builder.info.splits]
    if missing:
        raise UserError(f"TFDS data set {name!r} has no {'/'.join(missing)} split (it has "
                        f"{', '.join(builder.info.splits)}): pick a set with train and test")
    return cache.cached(root, f"tfds-{name}", builder.data_dir,
                        lambda: _read(tfds, name, data_dir, builder, build))


def _read(tfds, name: str, data_dir: str, builder, build: str) -> Dataset:
    """Decode both splits of the prepared set into uint8 arrays."""
    try:
        sources = tfds.data_source(name, data_dir=data_dir, download=False)
    except NotImplementedError as e:  # prepared, but as tfrecord: only TensorFlow reads that
        raise UserError(f"TFDS data set {name!r} in {data_dir} is not in array_record format, "
                        f"which jaxcnn needs to read it without TensorFlow: rebuild it with "
                        f"{build}") from e
    arrays = {}
    has_val = "validation" in builder.info.splits  # the set's own validation split, if any
    for split in ("train", "test") + (("validation",) if has_val else ()):
        examples = [sources[split][i] for i in range(len(sources[split]))]
        shapes = {np.shape(ex["image"]) for ex in examples}
        if len(shapes) != 1:
            raise UserError(f"TFDS data set {name!r} has images of {len(shapes)} sizes in "
                            f"{split} (e.g. {sorted(shapes)[:2]}): only fixed-size images are "
                            "supported; resize them or export an image folder")
        images = np.stack([ex["image"] for ex in examples])
        if images.dtype != np.uint8:
            raise UserError(f"TFDS data set {name!r} has {images.dtype} images: only uint8 "
                            "images are supported")
        arrays[split] = (images, np.array([ex["label"] for ex in examples], dtype=np.int32))
    return Dataset(train_images=arrays["train"][0], train_labels=arrays["train"][1],
                   test_images=arrays["test"][0], test_labels=arrays["test"][1],
                   class_names=tuple(builder.info.features["label"].names), name=name,
                   val_images=arrays["validation"][0] if has_val else None,
                   val_labels=arrays["validation"][1] if has_val else None)
