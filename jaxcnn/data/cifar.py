"""CIFAR-10 and CIFAR-100 from the official python-pickle archives (cs.toronto.edu/~kriz).

`load_cifar("cifar10", None, ...)` downloads `cifar-10-python.tar.gz` once into the cache and
checks its published sha256. `load_cifar("cifar10", path, ...)` reads a local copy instead: the
`.tar.gz` (any name) or an extracted `cifar-10-batches-py/` directory. A local `.tar.gz` must
have the official sha256 too, unless `verify_sha256=False` (`data.verify_sha256`) accepts a
re-packed copy. An extracted directory has no one file to hash, so it is accepted as it is.
Either way gzip's CRC, the expected member list and the array shapes catch truncation and
corruption, and the pickles are read with an allow-list so that a tampered file cannot run code.
"""

import codecs
import dataclasses
import io
import pathlib
import pickle
import tarfile
import zlib

import numpy as np

from jaxcnn.data import cache, download
from jaxcnn.data.dataset import Dataset
from jaxcnn.errors import UserError


@dataclasses.dataclass(frozen=True)
class Archive:
    """Where an official archive lives and how its pickles are laid out."""

    url: str
    sha256: str  # published checksum of the .tar.gz (also used by keras.datasets)
    folder: str  # the one top-level folder inside the archive
    train: tuple[str, ...]  # pickle files of the train split, in order
    test: str
    meta: str
    labels_key: bytes
    names_key: bytes

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ARCHIVES = {
    "cifar10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        folder="cifar-10-batches-py", train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch", meta="batches.meta", labels_key=b"labels",
        names_key=b"label_names"),
    "cifar100": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        folder="cifar-100-python", train=("train",), test="test", meta="meta",
        labels_key=b"fine_labels", names_key=b"fine_label_names"),
}


def load_cifar(name: str, path: str | None, root: pathlib.Path, allow_download: bool,
               verify_sha256: bool = True) -> Dataset:
    """CIFAR `name` from the local copy at `path`, or from the cache (downloading once).

    With `verify_sha256`, a local archive file is hashed on every load, cached arrays or not
    (170 MB for CIFAR-10: a fraction of a second); an extracted directory is not hashed.
    """
    archive = ARCHIVES[name]
    hint = f"pass a local copy with {name}:<path to {archive.filename}>"
    if path is None:
        local = root / "downloads" / archive.filename
        if not local.exists():
            if not allow_download:
                raise UserError(f"{name} is not in {local.parent} and downloading is off: allow "
                                f"the download, or {hint}")
            download.download(archive.url, local, archive.sha256, hint=hint)
    else:
        local = pathlib.Path(path).expanduser()
        if not local.exists():
            raise UserError(f"{name} copy {local} does not exist: check the path, or use "
                            f"{name} alone to download it")
    # a file already in downloads/ was verified when downloaded, but may have been put there
    if verify_sha256 and local.is_file():
        _check_official(archive, local)
    return cache.cached(root, name, local, lambda: _parse(name, archive, local))


def _check_official(archive: Archive, path: pathlib.Path) -> None:
    got = download.sha256_of(path)
    if got != archive.sha256:
        raise UserError(f"{path} is not the official {archive.filename} (sha256 {got}, expected "
                        f"{archive.sha256}): use the official file, or pass "
                        "--config.data.verify_sha256=false to use a re-packed copy")


def _parse(name: str, archive: Archive, path: pathlib.Path) -> Dataset:
    """Decode the pickles of `archive` found at `path` into NHWC arrays."""
    blobs = _read_dir(archive, path) if path.is_dir() else _read_tar(name, archive, path)
    train = [_batch(_unpickle(blobs[f], f, path), archive.labels_key, f, path)
             for f in archive.train]
    test_images, test_labels = _batch(_unpickle(blobs[archive.test], archive.test, path),
                                      archive.labels_key, archive.test, path)
    meta = _unpickle(blobs[archive.meta], archive.meta, path)
    if archive.names_key not in meta:
        raise UserError(f"{archive.meta} in {path} has no {archive.names_key!r}: it is not the "
                        f"python version of {name} ({archive.filename})")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[archive.names_key])
    return Dataset(train_images=np.concatenate([images for images, _ in train]),
                   train_labels=np.concatenate([labels for _, labels in train]),
                   test_images=test_images, test_labels=test_labels,
                   class_names=names, name=name)


def _members(archive: Archive) -> tuple[str, ...]:
    return (*archive.train, archive.test, archive.meta)


def _read_dir(archive: Archive, path: pathlib.Path) -> dict[str, bytes]:
    """The pickle files of an extracted archive: `path` is its folder or the folder above."""
    base = path / archive.folder if (path / archive.folder).is_dir() else path
    missing = [f for f in _members(archive) if not (base / f).is_file()]
    if missing:
        raise UserError(f"{base} lacks {', '.join(missing)}: point to the extracted "
                        f"{archive.folder}/ folder or to the {archive.filename} archive")
    return {f: (base / f).read_bytes() for f in _members(archive)}


def _read_tar(name: str, archive: Archive, path: pathlib.Path) -> dict[str, bytes]:
    """The pickle files inside the archive at `path`, read without extracting to disk."""
    wanted = {f"{archive.folder}/{f}": f for f in _members(archive)}
    blobs = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                key = wanted.get(member.name.removeprefix("./"))
                if key and member.isfile():
                    blobs[key] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read the {name} archive {path} ({e}): it is corrupt, truncated "
                        f"or not a tar archive; get a fresh copy of {archive.filename}") from e
    missing = [m for m, f in wanted.items() if f not in blobs]
    if missing:
        raise UserError(f"{path} lacks {missing[0]}: is it the python version of {name} "
                        f"({archive.filename})?")
    return blobs


# Only what numpy arrays and plain containers need; anything else in a pickle is refused.
# ndarray.__reduce__ names numpy's reconstructor, wherever this numpy version keeps it; files
# written by numpy 1 (the official ones) name it numpy.core.multiarray, numpy 2 numpy._core.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes written by Python 3
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing {module}.{name}") from None


def _unpickle(blob: bytes, member: str, path: pathlib.Path) -> dict:
    """The dict pickled in `member`; keys and strings come back as bytes, as CIFAR expects."""
    try:
        obj = _Unpickler(io.BytesIO(blob), encoding="bytes").load()
    # Garbage input can make unpickling raise almost any exception type.
    except Exception as e:
        raise UserError(f"cannot unpickle {member} in {path} ({type(e).__name__}: {e}): the "
                        "copy is corrupt or not the python version of CIFAR") from e
    if not isinstance(obj, dict):
        raise UserError(f"{member} in {path} holds a {type(obj).__name__}, expected a dict: "
                        "it is not the python version of CIFAR")
    return obj


def _batch(batch: dict, labels_key: bytes, member: str,
           path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NxHxWxC, labels int32 N) of one pickled batch."""
    if b"data" not in batch or labels_key not in batch:
        raise UserError(f"{member} in {path} lacks b'data' or {labels_key!r}: it is not the "
                        "python version of CIFAR")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[labels_key], dtype=np.int32)
    if data.dtype != np.uint8 or data.shape[1:] != (3072,) or labels.shape != data.shape[:1]:
        raise UserError(f"{member} in {path} holds {data.dtype} data of shape {data.shape} and "
                        f"{labels.shape} labels, expected uint8 Nx3072 and N: the copy is corrupt")
    # Each row is one image, channel-major: 1024 red values (32 rows of 32), then green, blue.
    images_NxHxWxC = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images_NxHxWxC), labels

