"""The on-disk cache: downloaded archives and decoded arrays, under `cache_dir()`.

Decoded data sets are stored as uncompressed `.npz` in `cache_dir()/arrays/`, keyed by the
source's absolute path, size and mtime (every file's, for a directory), so editing the source
rebuilds the arrays and an unchanged source loads in a fraction of a second. Stale files are
never deleted automatically: remove `cache_dir()/arrays` to reclaim the space.
"""

import contextlib
import hashlib
import os
import pathlib
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable

import numpy as np

from jaxcnn.data.dataset import Dataset
from jaxcnn.errors import UserError

# Bump when a reader's output changes (e.g. a new resize rule), so old arrays are rebuilt.
# 2: folders take the most common image size, and decode EXIF, 16-bit and float images.
FORMAT_VERSION = 2


def cache_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
    """`override`, else $JAXCNN_DATA_DIR, else ~/.cache/jaxcnn (not created here)."""
    path = override or os.environ.get("JAXCNN_DATA_DIR") or "~/.cache/jaxcnn"
    return pathlib.Path(path).expanduser().absolute()


def fingerprint(path: str | os.PathLike) -> str:
    """A hex key that changes when the file at `path`, or any file under the directory, changes."""
    path = os.path.abspath(path)
    digest = hashlib.sha256(f"v{FORMAT_VERSION}|{path}".encode())
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()  # os.walk visits in the order of `dirs`: sort it for a stable key
            for name in sorted(files):
                st = _stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), path)
                digest.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    else:
        st = os.stat(path)
        digest.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _stat(path: str) -> os.stat_result:
    """A symlink's target, so that editing the target rebuilds; a dangling one's own entry."""
    try:
        return os.stat(path)
    except OSError:
        return os.lstat(path)


def cached(root: pathlib.Path, kind: str, source: str | os.PathLike,
           build: Callable[[], Dataset]) -> Dataset:
    """What `build()` makes from `source`; from the cache while `source` is unchanged."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{kind}-{os.path.basename(os.path.abspath(source))}")
    path = root / "arrays" / f"{stem}-{fingerprint(source)}.npz"
    dataset = _read(path)
    if dataset is None:
        dataset = build().validate()
        _write(path, dataset)
    return dataset


def _read(path: pathlib.Path) -> Dataset | None:
    """The cached data set at `path`, or None (with a warning if the file is unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            val = {k: z[k] for k in ("val_images", "val_labels") if k in z.files}
            dataset = Dataset(train_images=z["train_images"], train_labels=z["train_labels"],
                              test_images=z["test_images"], test_labels=z["test_labels"],
                              class_names=tuple(str(c) for c in z["class_names"]),
                              name=str(z["name"]), **val)
        return dataset.validate()
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UserError) as e:
        warnings.warn(f"ignoring the unreadable cache file {path} ({e}); decoding the source again",
                      stacklevel=3)
        return None


def _write(path: pathlib.Path, dataset: Dataset) -> None:
    """Save `dataset` at `path` atomically; warn (not fail) when the cache is not writable."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temp file in the same directory, then os.replace: readers never see a partial file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            val = ({"val_images": dataset.val_images, "val_labels": dataset.val_labels}
                   if dataset.has_validation else {})
            np.savez(f, train_images=dataset.train_images, train_labels=dataset.train_labels,
                     test_images=dataset.test_images, test_labels=dataset.test_labels,
                     class_names=np.array(dataset.class_names, dtype=str),
                     name=np.array(dataset.name), **val)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a shared cache dir needs it readable
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        warnings.warn(f"could not cache the decoded arrays at {path} ({e}); the next load will "
                      f"decode again: make {path.parent} writable or set JAXCNN_DATA_DIR",
                      stacklevel=3)
