"""Data larger than memory: image records read lazily, decoded per epoch in Grain workers.

    source = open_stream("folder:photos/", cache_dir=..., image_size=0)
    loader = Loader(source.train, source.image_shape, workers=2)
    for batch in loader.epoch(order_local, local_batch, start=0):  # dicts of numpy arrays
        ...

Record sources, each giving the labels without decoding, the class names and one record's
bytes at a time (random access, so any epoch order can be read):
  folder:<path>         train/<class>/<image> and test/<class>/<image> (`folder.py`'s layout
                        and limits); an archive is extracted once into the cache dir
  arrayrecord:<dir>     shards written by `scripts/convert.py` (dataset.json beside them)
  tfds:<name>[:<dir>]   a prepared TFDS set, through `tfds.data_source` with the image bytes
                        left undecoded

Each process reads only the records of its rows of every global batch (the feed picks them,
`jaxcnn/feeds.py` `StreamFeed`); `Loader.epoch` decodes them in `workers` Grain processes
(0: in this process) with `images.decode`, the decoder of the in-memory path, so a streamed
run sees the same pixels and batches as one with the data in memory. The workers run Pillow
and numpy only: they never initialise a JAX backend (`_worker_init` pins them to the CPU).

Every image takes one size: `data.image_size` x `data.image_size`, else the size of the first
training image (the in-memory path takes the most common size, which needs every header:
set data.image_size when sizes vary).

An unreadable image met mid-epoch stops the run with a `UserError` naming the file and the
step (no image is skipped, so every rerun sees the same batches): the checkpoints already
saved are intact.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import stat
import struct
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Iterator

import numpy as np

from jaxcnn.data import cache, folder, images
from jaxcnn.data.dataset import Dataset
from jaxcnn.data.split import validation_indices
from jaxcnn.errors import UserError

STREAMABLE = "folder:<path>, arrayrecord:<dir> or tfds:<name>"
SPLITS = ("train", "test")  # a folder's val/ stands in for test/ when there is no test/
INDEX_FILE = "dataset.json"  # class names, counts and shards of a converted set
LABEL = struct.Struct("<i")  # an ArrayRecord record: the label, then the image file's bytes


class FileRecords:
    """Image files on disk, one record each; picklable (Grain sends it to its workers)."""

    def __init__(self, paths: list[str], labels: np.ndarray, where: str,
                 max_file_bytes: int = folder.MAX_FILE_BYTES, root: str = ""):
        self.paths, self.labels, self.where = paths, labels, where
        self.max_file_bytes, self.root = max_file_bytes, root  # the folder the paths are in

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> bytes:
        with open(self.paths[i], "rb") as f:
            return folder._read_member(self.name(i), os.fstat(f.fileno()).st_size, f,
                                       self.max_file_bytes)

    def name(self, i: int) -> str:
        return f"{self.paths[i]}"

    def digest(self) -> str:
        """What identifies the records without reading them: paths within the folder, sizes,
        labels. A folder moved (or an archive extracted elsewhere) keeps its digest, so a run
        resumes from the new place."""
        h = hashlib.sha256()
        for p in self.paths:
            rel = os.path.relpath(p, self.root) if self.root else p
            h.update(f"{rel}\0{os.path.getsize(p)}\n".encode())
        h.update(self.labels.tobytes())
        return h.hexdigest()


class ArrayRecordRecords:
    """Records of ArrayRecord shards written by `scripts/convert.py`: a 4-byte label, then the
    image file's bytes. The shards are opened lazily, in each worker."""

    def __init__(self, shards: list[str], labels: np.ndarray, where: str):
        self.shards, self.labels, self.where = shards, labels, where
        self._source = None

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> bytes:
        if self._source is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource
            self._source = ArrayRecordDataSource(self.shards)
        record = self._source[int(i)]
        (label,) = LABEL.unpack_from(record)
        if label != self.labels[i]:
            raise UserError(f"{self.name(i)} has label {label} but {INDEX_FILE} says "
                            f"{self.labels[i]}: the shards and their index disagree; convert "
                            "the folder again")
        return record[LABEL.size:]

    def name(self, i: int) -> str:
        return f"record {i} of {self.where}"

    def digest(self) -> str:
        h = hashlib.sha256()
        for p in self.shards:
            h.update(f"{os.path.basename(p)}\0{os.path.getsize(p)}\n".encode())
        h.update(self.labels.tobytes())
        return h.hexdigest()


class TfdsRecords:
    """One split of a prepared TFDS set through `tfds.data_source`, the image left as the
    encoded bytes TFDS stored (decoded by `images.decode` like every other source)."""

    def __init__(self, name: str, data_dir: str, split: str, labels: np.ndarray):
        self.tfds_name, self.data_dir, self.split, self.labels = name, data_dir, split, labels
        self.where = f"tfds:{name} {split}"
        self._source = None

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def _open(self):
        if self._source is None:
            self._source = _tfds_source(self.tfds_name, self.data_dir, self.split)
        return self._source

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> bytes:
        return self._open()[int(i)]["image"]

    def name(self, i: int) -> str:
        return f"example {i} of {self.where}"

    def digest(self) -> str:
        # The name, split and labels, not the data dir: a moved TFDS dir resumes.
        return hashlib.sha256(f"{self.where}\n".encode() + self.labels.tobytes()).hexdigest()


Records = FileRecords | ArrayRecordRecords | TfdsRecords


def take(records: Records, rows: np.ndarray) -> Records:
    """The records at `rows` (a validation split, a class subset), in that order."""
    return _View(records, np.asarray(rows, np.int64))


@dataclasses.dataclass
class _View:
    """`records` at `rows`: same interface, indices 0..len(rows)-1."""
    base: Records
    rows: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels[self.rows]

    @property
    def where(self) -> str:
        return self.base.where

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> bytes:
        return self.base[int(self.rows[i])]

    def name(self, i: int) -> str:
        return self.base.name(int(self.rows[i]))

    def digest(self) -> str:
        return hashlib.sha256((self.base.digest() + "\n").encode()
                              + self.rows.tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class StreamSource:
    """A streamed data set: train and test records, their class names and the image shape."""
    train: Records
    test: Records
    class_names: tuple[str, ...]
    name: str
    image_shape: tuple[int, int, int]  # (H, W, C) every image is decoded to
    val: Records | None = None  # the source's own validation split (folder val/, TFDS's)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------- opening a source

def is_streamable(spec: str) -> bool:
    """Whether `spec` names records that can be read one at a time (else: arrays in memory)."""
    return spec.strip().partition(":")[0] in ("folder", "arrayrecord", "tfds")


def open_stream(spec: str, *, cache_dir=None, image_size: int = 0,
                max_file_bytes: int = folder.MAX_FILE_BYTES,
                max_image_pixels: int = images.MAX_IMAGE_PIXELS) -> StreamSource:
    """The records named by `spec` (folder:, arrayrecord: or tfds:), nothing decoded but the
    first training image's header (for its size, unless `image_size` N gives N x N)."""
    kind, _, arg = spec.strip().partition(":")
    if kind not in ("folder", "arrayrecord", "tfds") or not arg:
        raise UserError(f"data set {spec!r} cannot be streamed: streaming reads {STREAMABLE}; "
                        "set data.on_device=auto or yes for the others")
    root = cache.cache_dir(cache_dir)
    if kind == "folder":
        train, test, class_names, name, val = _open_folder(pathlib.Path(arg).expanduser(), root,
                                                           max_file_bytes)
    elif kind == "arrayrecord":
        train, test, class_names, name, val = _open_array_record(pathlib.Path(arg).expanduser())
    else:
        train, test, class_names, name, val = _open_tfds(arg, root)
    for split, records in (("train", train), ("test", test)):
        if len(records) == 0:
            raise UserError(f"{name} has no {split} images: add some")
    if image_size:
        shape = (image_size, image_size, 3)
    else:
        w, h = images.upright_size(train[0], name=train.name(0),
                                   max_image_pixels=max_image_pixels)
        shape = (h, w, 3)
    return StreamSource(train, test, tuple(class_names), name, shape, val)


def _open_folder(src: pathlib.Path, root: pathlib.Path, max_file_bytes: int):
    if not src.exists():
        raise UserError(f"image folder {src} does not exist: check the path")
    if not src.is_dir():
        if not src.name.lower().endswith(folder.ARCHIVE_SUFFIXES):
            raise UserError(f"{src} is neither a directory nor a supported archive "
                            f"({', '.join(folder.ARCHIVE_SUFFIXES)}): pass a folder or an "
                            "archive of one")
        directory = _extracted(src, root, max_file_bytes)
    else:
        directory = src
    dirs: set[str] = set()
    rels, skipped = folder._dir_files(directory, max_file_bytes, dirs)
    for why, count in skipped.items():
        warnings.warn(f"skipped {count} {why} in {src}: only regular files inside it are read",
                      stacklevel=3)
    by_split = folder._by_split({r: r for r in rels}, src, dirs)  # train, val?, test?
    class_names = sorted(by_split["train"])
    for split, classes in by_split.items():
        if sorted(classes) != class_names:
            raise UserError(f"the class folders of train/ and {split}/ in {src} differ: give "
                            "every split the same class folders")
    out = {}
    for split in by_split:
        rel = [(r, label) for label, c in enumerate(class_names)
               for r in sorted(by_split[split][c])]
        out[split] = FileRecords([str(directory / r) for r, _ in rel],
                                 np.array([label for _, label in rel], np.int32),
                                 f"{src} {split}", max_file_bytes, str(directory))
    if "test" not in out:  # the ImageNet layout: its val/ is the split results are quoted on
        out["test"] = out.pop("val")
    name = src.name
    for suffix in folder.ARCHIVE_SUFFIXES:
        name = name.removesuffix(suffix)
    return out["train"], out["test"], class_names, name, out.get("val")


def _extracted(archive: pathlib.Path, root: pathlib.Path, max_file_bytes: int) -> pathlib.Path:
    """The archive's images extracted once under `root`/stream (keyed by path, size and
    mtime): regular members of train/ and test/ only, each within `max_file_bytes`."""
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    out = root / "stream" / f"{archive.name}-{key.hexdigest()[:16]}"
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, data in _members(archive, max_file_bytes):
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp / ".complete").touch()
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot extract the archive {archive} into {out.parent} ({e}): it is "
                        "corrupt, or the cache dir is not writable; fix it, or extract it "
                        "yourself and stream the folder") from e
    return out


def _members(archive: pathlib.Path, max_file_bytes: int) -> Iterator[tuple[str, bytes]]:
    """(path inside the archive, bytes) of its regular train/ and test/ members, one at a time
    (never the whole archive in memory); '..' and absolute names are refused by `_wanted`'s
    split rule and by the check below."""
    def safe(name: str) -> str | None:
        name = name.removeprefix("./").strip("/")
        if not folder._wanted(name) or ".." in name.split("/"):
            return None
        return name

    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = None if info.is_dir() else safe(info.filename)
                if name is None or stat.S_IFMT(info.external_attr >> 16) not in (
                        0, stat.S_IFREG):
                    continue
                with zf.open(info) as f:
                    yield name, folder._read_member(f"{name} in {archive}", info.file_size, f,
                                                    max_file_bytes)
        return
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = safe(member.name) if member.isfile() else None
            if name is not None:
                yield name, folder._read_member(f"{name} in {archive}", member.size,
                                                tar.extractfile(member), max_file_bytes)


def _open_array_record(directory: pathlib.Path):
    index_path = directory / INDEX_FILE
    try:
        index = json.loads(index_path.read_text())
        class_names = list(index["class_names"])
        out = []
        for split in SPLITS + (("val",) if "val" in index["splits"] else ()):
            s = index["splits"][split]
            labels = np.load(directory / s["labels"]).astype(np.int32)
            shards = [str(directory / p) for p in s["shards"]]
            out.append(ArrayRecordRecords(shards, labels, f"{directory} {split}"))
    except FileNotFoundError as e:
        raise UserError(f"{e.filename} does not exist: arrayrecord:<dir> reads a directory "
                        "written by scripts/convert.py") from e
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{index_path} is not an index written by scripts/convert.py ({e}): "
                        "convert the folder again") from e
    for records in out:
        total = sum(_shard_len(p) for p in records.shards)
        if total != len(records.labels) or (len(records.labels) and (
                records.labels.min() < 0 or records.labels.max() >= len(class_names))):
            raise UserError(f"{records.where}: the shards hold {total} records and the index "
                            f"{len(records.labels)} labels in 0..{len(class_names) - 1}: "
                            "convert the folder again")
    return out[0], out[1], class_names, directory.name, (out[2] if len(out) > 2 else None)


def _shard_len(path: str) -> int:
    from array_record.python.array_record_module import ArrayRecordReader
    reader = ArrayRecordReader(path)
    try:
        return reader.num_records()
    finally:
        reader.close()


def _tfds_source(name: str, data_dir: str, split: str):
    import tensorflow_datasets as tfds
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            decoders={"image": tfds.decode.SkipDecoding()})


def _open_tfds(arg: str, root: pathlib.Path):
    """Both splits of a prepared TFDS set; the labels are read once (images left encoded) and
    cached under `root`."""
    from jaxcnn.data import spec as spec_module
    from jaxcnn.data import tfds_source
    match = spec_module._TFDS_SPEC.fullmatch(arg)
    if not match:
        raise UserError(f"data set spec 'tfds:{arg}' lacks a TFDS name: use tfds:<name>")
    name = match["name"]
    data_dir = os.path.abspath(os.path.expanduser(match["data_dir"]
                                                  or tfds_source.default_data_dir()))
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UserError(f"tfds:{name} needs tensorflow-datasets ({e}): pip install "
                        "tensorflow-datasets array_record") from e
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise UserError(f"TFDS data set {name!r} is not prepared in {data_dir}: prepare it with "
                        f"`tfds build {name} --data_dir {data_dir} --file_format array_record`")
    out = []
    has_val = "validation" in builder.info.splits  # the set's own validation split, if any
    for split in SPLITS + (("validation",) if has_val else ()):
        path = root / "stream" / f"tfds-{name.replace(':', '-')}-{split}-labels.npy"
        key = hashlib.sha256(f"{builder.data_dir}".encode()).hexdigest()[:16]
        path = path.with_name(f"{key}-{path.name}")
        if path.exists():
            labels = np.load(path)
        else:
            source = _tfds_source(name, data_dir, split)
            labels = np.array([source[i]["label"] for i in range(len(source))], np.int32)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, labels)
        out.append(TfdsRecords(name, data_dir, split, labels))
    return (out[0], out[1], list(builder.info.features["label"].names), name,
            out[2] if has_val else None)


# ---------------------------------------------------------------- decoding in Grain workers

class Decode:
    """Grain's map: a record index -> {"image" uint8 HxWxC, "label", "index", "bad"}.

    `transform`: a `transforms.train_transform` (drawn from a generator seeded by (`seed`,
    `epoch`, record index): the same pixels on a resume and on any number of processes) or a
    `transforms.eval_transform`; None decodes and resizes only, as the in-memory path does.
    `bad` marks a record that could not be read or decoded (its image is zeros): the caller
    stops with `Loader.explain`, which decodes it again to name the reason."""

    def __init__(self, records: Records, image_shape: tuple[int, int, int],
                 max_image_pixels: int = images.MAX_IMAGE_PIXELS, transform=None,
                 seed: int = 0, epoch: int = 0):
        self.records, self.image_shape = records, tuple(image_shape)
        self.max_image_pixels, self.transform = max_image_pixels, transform
        self.seed, self.epoch = seed, epoch

    def at(self, epoch: int) -> "Decode":
        return Decode(self.records, self.image_shape, self.max_image_pixels, self.transform,
                      self.seed, epoch)

    def decode(self, i: int) -> np.ndarray:
        h, w, c = self.image_shape
        return images.decode(self.records[i], (w, h), name=self.records.name(i), channels=c,
                             max_image_pixels=self.max_image_pixels)

    def image(self, i: int) -> np.ndarray:
        if self.transform is None:
            return self.decode(i)
        if hasattr(self.transform, "scale"):  # a train transform: it draws from a generator
            return self.transform(self.records[i],
                                  np.random.default_rng([self.seed, self.epoch, i]))
        return self.transform(self.records[i])

    def __call__(self, i) -> dict:
        i = int(i)
        try:
            image, bad = self.image(i), False
        except (UserError, OSError):
            image, bad = np.zeros(self.image_shape, np.uint8), True
        return {"image": image, "label": np.int32(self.records.labels[i]),
                "index": np.int64(i), "bad": np.bool_(bad)}


def _worker_init(worker: int, count: int) -> None:
    """Workers decode with Pillow and numpy only; should anything touch JAX there, it gets the
    CPU, never an accelerator the training process holds. (Importing jaxcnn imports jax, which
    reads JAX_PLATFORMS then: set both, before any backend starts.)"""
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")


class Loader:
    """Batches of decoded records in a given order, through Grain (`workers` processes, or
    this one with 0); `prefetch` batches ready per worker."""

    def __init__(self, records: Records, image_shape: tuple[int, int, int], *, workers: int = 0,
                 prefetch: int = 2, max_image_pixels: int = images.MAX_IMAGE_PIXELS,
                 transform=None, seed: int = 0):
        self.records, self.workers, self.prefetch = records, workers, prefetch
        self.decode = Decode(records, image_shape, max_image_pixels, transform, seed)

    @property
    def augments(self) -> bool:
        """Whether the workers augment (a train transform): the device step then must not."""
        return hasattr(self.decode.transform, "scale")

    def epoch(self, order: np.ndarray, batch_size: int, start: int = 0, epoch: int = 0
              ) -> Iterator[dict]:
        """Batches `start`.. of `batch_size` records each, in `order` (record indices; the last
        batch may be short), augmented as in `epoch`: dicts of numpy arrays as `Decode` gives,
        stacked."""
        import grain
        ds = grain.MapDataset.source(np.asarray(order, np.int64))[start * batch_size:]
        ds = ds.map(self.decode.at(epoch)).batch(batch_size)
        if not self.workers:
            return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2,
                                                             prefetch_buffer_size=2 * batch_size)))
        from absl import flags
        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; a library call has
            flags.FLAGS.mark_as_parsed()  # no command line of its own to parse
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=batch_size))
        return iter(it.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=self.workers, per_worker_buffer_size=self.prefetch),
            worker_init_fn=_worker_init))

    def explain(self, batch: dict, where: str) -> UserError:
        """The error for a batch with a bad record: the decoder's own reason, and what to do."""
        i = int(batch["index"][np.flatnonzero(batch["bad"])[0]])
        try:
            self.decode.decode(i)
            reason = f"{self.records.name(i)} could not be read"
        except (UserError, OSError) as e:
            reason = str(e).rstrip(".")
        return UserError(f"{where}: {reason}. The run stops rather than skip it (every rerun "
                         "must see the same batches); the checkpoints saved are intact: replace "
                         "the file with a readable image and rerun to resume, or remove it and "
                         "train in a new --workdir")

    def all(self, batch_size: int = 256, order: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """Every record (or those of `order`) decoded, in order: (uint8 NxHxWxC, int32 N)."""
        parts, labels = [], []
        order = np.arange(len(self.records)) if order is None else order
        for batch in self.epoch(order, batch_size):
            if batch["bad"].any():
                raise self.explain(batch, f"reading {self.records.where}")
            parts.append(batch["image"])
            labels.append(batch["label"])
        return np.concatenate(parts), np.concatenate(labels).astype(np.int32)


# ---------------------------------------------------------------- what the engine builds

def for_training(config) -> tuple[Dataset, Loader]:
    """A streamed run's data: a `Dataset` holding the labels, no training image, and the test
    (and validation) images decoded into memory once, by `data.workers` workers with
    `transforms.eval_transform` (evaluation sets are small next to the training set); and the
    `Loader` of the training records, augmenting in its workers (`transforms.train_transform`).

    A folder's val/ (beside test/) or a TFDS validation split is the validation split, as in
    memory; else `data.validation` holds out the records `split.validation_indices` picks, the
    same images as in memory."""
    from jaxcnn.data import transforms
    d = config.data
    if d.classes or d.train_per_class:
        raise UserError("data.classes and data.train_per_class pick images in memory: stream "
                        "the whole set (or a folder of just those images), or keep the data in "
                        "memory with data.on_device=auto")
    source = open_stream(d.name, cache_dir=d.cache_dir or None, image_size=d.image_size,
                         max_file_bytes=d.max_file_bytes, max_image_pixels=d.max_image_pixels)
    h, w, c = source.image_shape
    shape = (h, w, d.channels or c)
    train, extra = source.train, {}
    evaluate = transforms.eval_transform(config, shape)

    def in_memory(records) -> tuple[np.ndarray, np.ndarray]:
        return Loader(records, shape, workers=d.workers, transform=evaluate,
                      max_image_pixels=d.max_image_pixels).all()

    if source.val is not None:
        if d.validation:
            raise UserError(f"data set {source.name!r} has its own validation split "
                            f"({len(source.val)} images): drop data.validation to use it")
        extra = dict(zip(("val_images", "val_labels"), in_memory(source.val), strict=True))
    elif d.validation:
        kept, held = validation_indices(train.labels, d.validation, config.seed)
        extra = dict(zip(("val_images", "val_labels"), in_memory(take(train, held)),
                         strict=True))
        train = take(train, kept)
    test_images, test_labels = in_memory(source.test)
    data = Dataset(np.empty((0, *shape), np.uint8), train.labels.astype(np.int32), test_images,
                   test_labels, source.class_names, source.name, **extra)
    loader = Loader(train, shape, workers=d.workers, seed=config.seed,
                    transform=transforms.train_transform(config, shape),
                    max_image_pixels=d.max_image_pixels)
    return data, loader


def decoded_rows(loader: Loader, rows: np.ndarray) -> np.ndarray:
    """The training records at `rows` decoded without augmentation: uint8 NxHxWxC (a model's
    data-dependent init, `train._init_from_data`)."""
    plain = Loader(loader.records, loader.decode.image_shape, workers=loader.workers,
                   max_image_pixels=loader.decode.max_image_pixels)
    return plain.all(order=np.asarray(rows, np.int64))[0]


def wanted(data_config) -> bool:
    """Whether a run streams: data.on_device=no on records (folder:, arrayrecord:, tfds:)."""
    return data_config.on_device == "no" and is_streamable(data_config.name)


def load_arrays(directory: str, *, image_size: int = 0,
                max_image_pixels: int = images.MAX_IMAGE_PIXELS) -> Dataset:
    """An ArrayRecord copy decoded into memory (`load("arrayrecord:<dir>")`: evaluation, plots
    and in-memory training of a set that was converted)."""
    source = open_stream(f"arrayrecord:{directory}", image_size=image_size,
                         max_image_pixels=max_image_pixels)
    train, test, *val = [Loader(r, source.image_shape, max_image_pixels=max_image_pixels).all()
                         for r in (source.train, source.test, source.val) if r is not None]
    extra = dict(zip(("val_images", "val_labels"), val[0], strict=True)) if val else {}
    return Dataset(*train, *test, source.class_names, source.name, **extra)
