"""Class-per-folder image data sets, from a directory or a .tar(.gz)/.zip archive.

Layout: `train/<class>/<image>` and `test/<class>/<image>`, at the top or under one top-level
folder (`cifar10-jpeg/train/cat/0001.jpg`); images may sit deeper inside a class folder.
Class names are the sorted folder names under train/, label i being the i-th; test/ must have
the same set. Within a split, images are ordered by class, then path. Hidden files (`.*`) and
`__MACOSX/` are skipped; any other file in a class folder must be an image Pillow can decode.

Images are converted to RGB (grey repeated, alpha dropped, palettes expanded). Every image takes
the size of the first train image: others are resized to it with Pillow's bilinear filter,
which is antialiased when shrinking. Archives are read member by member, never extracted.
"""

import concurrent.futures
import io
import math
import multiprocessing
import os
import pathlib
import sys
import tarfile
import warnings
import zipfile
import zlib

import numpy as np
from PIL import Image

from jaxcnn.data import cache
from jaxcnn.data.dataset import Dataset
from jaxcnn.errors import UserError

SPLITS = ("train", "test")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (*TAR_SUFFIXES, ".zip")
LAYOUT = "lay it out as train/<class>/<image> and test/<class>/<image>"
# Below this many images a process pool costs more than it saves.
PARALLEL_MIN_IMAGES = 2048

Source = str | bytes  # a file path (directories) or the file's bytes (archives)


def load_folder(path: str, root: pathlib.Path) -> Dataset:
    """The class-per-folder data set at `path` (directory or archive), cached under `root`."""
    src = pathlib.Path(path).expanduser()
    if not src.exists():
        raise UserError(f"image folder {src} does not exist: check the path")
    if not (src.is_dir() or src.name.lower().endswith(ARCHIVE_SUFFIXES)):
        raise UserError(f"{src} is neither a directory nor a supported archive "
                        f"({', '.join(ARCHIVE_SUFFIXES)}): pass a folder or an archive of one")
    return cache.cached(root, "folder", src, lambda: _build(src))


def _build(src: pathlib.Path) -> Dataset:
    """Find, order and decode the images of `src`."""
    if src.is_dir():
        files = {rel: str(src / rel) for rel in _dir_files(src)}
    else:
        files = _archive_files(src)
    by_split = _by_split(files, src)
    class_names = tuple(sorted(by_split["train"]))
    only_train = sorted(set(class_names) - set(by_split["test"]))
    only_test = sorted(set(by_split["test"]) - set(class_names))
    if only_train or only_test:
        raise UserError(f"the class folders of train/ and test/ in {src} differ (only in train: "
                        f"{', '.join(only_train) or '-'}; only in test: "
                        f"{', '.join(only_test) or '-'}): give both the same class folders")
    items = [(f"{rel} in {src}", files[rel], split, label)
             for split in SPLITS for label, cls in enumerate(class_names)
             for rel in sorted(by_split[split][cls])]
    first_name, first_source = items[0][:2]
    size_WxH = _decode(first_name, first_source, None).shape[1::-1]
    images = _decode_all([(n, s) for n, s, _, _ in items], size_WxH)  # one pool for both splits
    labels = np.array([label for *_, label in items], dtype=np.int32)
    n_train = sum(split == "train" for _, _, split, _ in items)
    name = src.name
    for suffix in ARCHIVE_SUFFIXES:
        name = name.removesuffix(suffix)
    return Dataset(train_images=images[:n_train], train_labels=labels[:n_train],
                   test_images=images[n_train:], test_labels=labels[n_train:],
                   class_names=class_names, name=name)


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _in_split(parts: list[str]) -> bool:
    """Whether a path lies under train/ or test/, at the top or under one top-level folder."""
    return bool(parts) and (parts[0] in SPLITS or (len(parts) > 1 and parts[1] in SPLITS))


def _dir_files(src: pathlib.Path) -> list[str]:
    """Paths ('/'-separated, relative to `src`) of the files that may be images of a split."""
    rels = []
    for root, dirs, files in os.walk(src):
        rel_root = os.path.relpath(root, src)
        parts = [] if rel_root == "." else rel_root.split(os.sep)
        # Descend only where train/ or test/ can be, so a big unrelated tree is not walked.
        dirs[:] = [d for d in dirs if not _hidden(d)
                   and (len(parts) != 1 or parts[0] in SPLITS or d in SPLITS)]
        if _in_split(parts):
            rels += ["/".join([*parts, f]) for f in files if not _hidden(f)]
    return rels


def _archive_files(src: pathlib.Path) -> dict[str, bytes]:
    """{path inside the archive: bytes} of the members that may be images of a split."""
    def wanted(name: str) -> bool:
        parts = name.removeprefix("./").strip("/").split("/")
        return _in_split(parts) and not any(_hidden(p) for p in parts)

    files = {}
    try:
        if src.name.lower().endswith(".zip"):
            with zipfile.ZipFile(src) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and wanted(info.filename):
                        files[info.filename.strip("/")] = zf.read(info)
        else:
            with tarfile.open(src, "r:*") as tar:
                for member in tar:
                    if member.isfile() and wanted(member.name):
                        files[member.name.removeprefix("./").strip("/")] = (
                            tar.extractfile(member).read())
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read the archive {src} ({e}): it is corrupt or truncated; "
                        "re-create or re-download it") from e
    return files


def _by_split(files: dict[str, Source], src: pathlib.Path) -> dict[str, dict[str, list[str]]]:
    """{split: {class: [path]}} for the one root that holds both train/ and test/."""
    splits_under: dict[str, set[str]] = {}
    for rel in files:
        parts = rel.split("/")
        for k in (0, 1):
            if len(parts) > k + 1 and parts[k] in SPLITS:
                splits_under.setdefault("/".join(parts[:k]), set()).add(parts[k])
    roots = sorted(r for r, s in splits_under.items() if s == set(SPLITS))
    if not roots:
        raise UserError(f"{src} has no train/ and test/ folders with images: {LAYOUT}")
    if len(roots) > 1 and "" not in roots:
        raise UserError(f"{src} has train/ and test/ under several folders ({', '.join(roots)}): "
                        "keep one data set per archive or directory")
    root = "" if "" in roots else roots[0]
    by_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for rel in files:
        if root and not rel.startswith(root + "/"):
            continue
        parts = rel.split("/")[1 if root else 0:]
        if parts[0] not in SPLITS:
            continue
        if len(parts) < 3:
            raise UserError(f"{rel} in {src} is not inside a class folder: {LAYOUT}")
        by_split[parts[0]].setdefault(parts[1], []).append(rel)
    return by_split


def _decode(name: str, source: Source, size_WxH: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 HxWx3, resized to `size_WxH` if given and different."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()  # decode now, so that a truncated file fails inside this try
            return to_rgb(im, size_WxH)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot decode image {name} ({e}): replace or remove the file") from e


def to_rgb(im: Image.Image, size_WxH: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded Pillow image as uint8 HxWx3, as training images are: RGB, then resized."""
    if im.mode != "RGB":
        im = im.convert("RGB")
    if size_WxH is not None and im.size != tuple(size_WxH):
        im = im.resize(tuple(size_WxH), Image.Resampling.BILINEAR)
    return np.asarray(im)


def _decode_chunk(items: list[tuple[str, Source]], size_WxH: tuple[int, int]) -> np.ndarray:
    out_NxHxWx3 = np.empty((len(items), size_WxH[1], size_WxH[0], 3), np.uint8)
    for i, (name, source) in enumerate(items):
        out_NxHxWx3[i] = _decode(name, source, size_WxH)
    return out_NxHxWx3


def _workers() -> int:
    """$JAXCNN_DECODE_WORKERS, else the CPUs this process may use."""
    env = os.environ.get("JAXCNN_DECODE_WORKERS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"JAXCNN_DECODE_WORKERS={env!r} is not a positive integer: fix or "
                            "unset it")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _decode_all(items: list[tuple[str, Source]], size_WxH: tuple[int, int]) -> np.ndarray:
    """All `items` decoded to uint8 NxHxWx3, on all CPUs when there are many."""
    workers = min(_workers(), math.ceil(len(items) / PARALLEL_MIN_IMAGES))
    # Pillow holds the GIL for most of the work on small images, so threads do not help;
    # processes do. Only fork avoids re-importing the user's __main__ (spawn and forkserver
    # re-run an unguarded script), and it is safe here although JAX warns about it: the
    # workers run only Pillow and numpy, never JAX or its threads.
    if workers <= 1 or sys.platform != "linux":
        return _decode_chunk(items, size_WxH)
    step = max(256, math.ceil(len(items) / (workers * 8)))
    out = np.empty((len(items), size_WxH[1], size_WxH[0], 3), np.uint8)
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        with warnings.catch_warnings():  # the workers are forked during the first submit
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
            warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)")
            futures = [pool.submit(_decode_chunk, items[i:i + step], size_WxH)
                       for i in range(0, len(items), step)]
        try:
            for i, future in zip(range(0, len(items), step), futures, strict=True):
                out[i:i + step] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return out
