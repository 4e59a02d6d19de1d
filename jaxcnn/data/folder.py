"""Class-per-folder image data sets, from a directory or a .tar(.gz)/.zip archive.

Layout: `train/<class>/<image>` and `test/<class>/<image>`, at the top or under one top-level
folder (`cifar10-jpeg/train/cat/0001.jpg`); images may sit deeper inside a class folder. A
`val/` (or `validation/`) beside them is the validation split; without `test/` it is the split
reported as test (the ImageNet layout: train/ and val/). Class names are the sorted folder names
under train/, label i being the i-th; every split must have the same set, and a class folder
without images is refused. Within a split, images are ordered by class, then path. Hidden
files (`.*`) and `__MACOSX/` are skipped; any other file in a class folder must be an image
Pillow can decode.

Images are decoded by `images.decode` (as predict and serving decode them: EXIF orientation,
16-bit and float scaled, RGB). Every image takes one size: `image_size` x `image_size` if given,
else the most common size in the set (read from the headers, upright; ties: the smaller area).
The others are resized to it with Pillow's bilinear filter (antialiased when shrinking), and a
warning says how many and from which sizes. Archives are read member by member, never extracted.

The folder or archive may come from anyone, so reading it is bounded: a file or archive member
over `max_file_bytes` (checked from the tar/zip header before reading, and while reading) or an
image over `max_image_pixels` (checked from its header before decoding) is a `UserError`.
In a directory only regular files are read: FIFOs, sockets, devices, broken symlinks and
symlinks leading out of the folder are skipped, as are archive members that are links or
devices; one warning per kind gives the count.
"""

import concurrent.futures
import functools
import math
import multiprocessing
import os
import pathlib
import stat
import sys
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter

import numpy as np

from jaxcnn.data import cache, images
from jaxcnn.data.dataset import Dataset
from jaxcnn.errors import UserError

SPLITS = ("train", "val", "validation", "test")  # folder names; "validation" means "val"
EVAL_SPLITS = {"test", "val", "validation"}
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (*TAR_SUFFIXES, ".zip")
LAYOUT = ("lay it out as train/<class>/<image> and test/<class>/<image> (and optionally "
          "val/<class>/<image>)")
# Below this many images a process pool costs more than it saves.
PARALLEL_MIN_IMAGES = 2048
MAX_FILE_BYTES = 64 * 2**20  # default of data.max_file_bytes
# How many of the other image sizes a warning lists.
SIZES_SHOWN = 3
# Why a file is skipped: the warning for each kind says "skipped N <kind> in <src>".
FIFO_ETC = "FIFOs, sockets or devices"
BROKEN_LINK = "broken symlinks"
OUTSIDE_LINK = "symlinks leading out of the folder"
LINK_MEMBER = "archive members that are links or devices"

Source = str | bytes  # a file path (directories) or the file's bytes (archives)


def load_folder(path: str, root: pathlib.Path, *, image_size: int = 0,
                max_file_bytes: int = MAX_FILE_BYTES,
                max_image_pixels: int = images.MAX_IMAGE_PIXELS) -> Dataset:
    """The class-per-folder data set at `path` (directory or archive), cached under `root`.

    `image_size` N > 0 resizes every image to N x N; 0 takes the most common size.
    """
    if image_size < 0:
        raise UserError(f"image_size must be 0 (the most common size) or N > 0, got {image_size}")
    src = pathlib.Path(path).expanduser()
    if not src.exists():
        raise UserError(f"image folder {src} does not exist: check the path")
    if not (src.is_dir() or src.name.lower().endswith(ARCHIVE_SUFFIXES)):
        raise UserError(f"{src} is neither a directory nor a supported archive "
                        f"({', '.join(ARCHIVE_SUFFIXES)}): pass a folder or an archive of one")
    # The size is part of the arrays' cache key; the limits are not, as they only refuse input.
    kind = f"folder-{image_size}px" if image_size else "folder"
    return cache.cached(root, kind, src,
                        lambda: _build(src, image_size, max_file_bytes, max_image_pixels))


def _build(src: pathlib.Path, image_size: int, max_file_bytes: int,
           max_image_pixels: int) -> Dataset:
    """Find, order and decode the images of `src`."""
    dirs: set[str] = set()
    if src.is_dir():
        rels, skipped = _dir_files(src, max_file_bytes, dirs)
        files = {rel: str(src / rel) for rel in rels}
    else:
        files, skipped = _archive_files(src, max_file_bytes, dirs)
    for kind, count in skipped.items():
        warnings.warn(f"skipped {count} {kind} in {src}: only regular files inside it are "
                      "read", stacklevel=2)
    by_split = _by_split(files, src, dirs)
    class_names = tuple(sorted(by_split["train"]))
    for split in by_split:
        only_train = sorted(set(class_names) - set(by_split[split]))
        only_there = sorted(set(by_split[split]) - set(class_names))
        if only_train or only_there:
            raise UserError(f"the class folders of train/ and {split}/ in {src} differ (only in "
                            f"train: {', '.join(only_train) or '-'}; only in {split}: "
                            f"{', '.join(only_there) or '-'}): give every split the same class "
                            "folders")
    items = [(f"{rel} in {src}", files[rel], split, label)
             for split in by_split for label, cls in enumerate(class_names)
             for rel in sorted(by_split[split][cls])]
    images_NxHxWx3 = _decode_all(src, [(n, s) for n, s, _, _ in items], image_size,
                                 max_image_pixels)  # one pool for every split
    labels = np.array([label for *_, label in items], dtype=np.int32)
    at = {split: np.array([sp == split for _, _, sp, _ in items]) for split in by_split}
    arrays = {split: (images_NxHxWx3[m], labels[m]) for split, m in at.items()}
    if "test" not in arrays:  # the ImageNet layout: its val/ is the split results are quoted on
        arrays["test"] = arrays.pop("val")
    val = arrays.get("val")
    name = src.name
    for suffix in ARCHIVE_SUFFIXES:
        name = name.removesuffix(suffix)
    return Dataset(train_images=arrays["train"][0], train_labels=arrays["train"][1],
                   test_images=arrays["test"][0], test_labels=arrays["test"][1],
                   class_names=class_names, name=name,
                   val_images=None if val is None else val[0],
                   val_labels=None if val is None else val[1])


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _in_split(parts: list[str]) -> bool:
    """Whether a path lies under train/ or test/, at the top or under one top-level folder."""
    return bool(parts) and (parts[0] in SPLITS or (len(parts) > 1 and parts[1] in SPLITS))


def _dir_files(src: pathlib.Path, max_file_bytes: int, seen: set[str]
               ) -> tuple[list[str], Counter]:
    """Paths ('/'-separated, relative to `src`) of the regular files that may be images of a
    split, and {why: count} of the files skipped; the folders walked go into `seen`."""
    rels, skipped = [], Counter()
    top = os.path.realpath(src)
    for root, dirs, files in os.walk(src):  # never follows symlinked folders
        rel_root = os.path.relpath(root, src)
        parts = [] if rel_root == "." else rel_root.split(os.sep)
        # Descend only where train/ or test/ can be, so a big unrelated tree is not walked.
        dirs[:] = [d for d in dirs if not _hidden(d)
                   and (len(parts) != 1 or parts[0] in SPLITS or d in SPLITS)]
        if not _in_split(parts):
            continue
        seen.add("/".join(parts))
        for f in (f for f in files if not _hidden(f)):
            why = _skip_reason(os.path.join(root, f), top)
            if why:
                skipped[why] += 1
                continue
            rel = "/".join([*parts, f])
            _check_bytes(f"{rel} in {src}", os.stat(os.path.join(root, f)).st_size,
                         max_file_bytes)
            rels.append(rel)
    return rels, skipped


def _skip_reason(path: str, top: str) -> str | None:
    """Why the directory entry at `path` must not be read, or None for a regular file."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(path)
        if not os.path.exists(real):  # dangling, or a loop
            return BROKEN_LINK
        if os.path.commonpath([real, top]) != top:
            return OUTSIDE_LINK
        st = os.stat(real)
    # Opening a FIFO blocks until someone writes to it; a device may never end.
    return None if stat.S_ISREG(st.st_mode) else FIFO_ETC


def _check_bytes(name: str, size: int, max_file_bytes: int) -> None:
    if size > max_file_bytes:
        raise UserError(f"{name} is {size:,} bytes, more than the limit of {max_file_bytes:,}: "
                        "remove it, or raise data.max_file_bytes")


def _archive_files(src: pathlib.Path, max_file_bytes: int, dirs: set[str]
                   ) -> tuple[dict[str, bytes], Counter]:
    """{path inside the archive: bytes} of the regular members that may be images of a split,
    and {why: count} of the members skipped; the folder members go into `dirs`."""
    try:
        if src.name.lower().endswith(".zip"):
            return _zip_files(src, max_file_bytes, dirs)
        return _tar_files(src, max_file_bytes, dirs)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read the archive {src} ({e}): it is corrupt or truncated; "
                        "re-create or re-download it") from e


def _wanted(name: str) -> bool:
    parts = name.removeprefix("./").strip("/").split("/")
    return _in_split(parts) and not any(_hidden(p) for p in parts)


def _read_member(name: str, size: int, f, max_file_bytes: int) -> bytes:
    """The member's bytes, refused from its declared `size` before reading, and again if the
    header understated it: at most max_file_bytes + 1 bytes are ever read."""
    _check_bytes(name, size, max_file_bytes)
    data = f.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise UserError(f"{name} holds more than {max_file_bytes:,} bytes although its header "
                        f"says {size:,}: remove it, or raise data.max_file_bytes")
    return data


def _zip_files(src: pathlib.Path, max_file_bytes: int, dirs: set[str]
               ) -> tuple[dict[str, bytes], Counter]:
    files, skipped = {}, Counter()
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            if not _wanted(info.filename):
                continue
            if info.is_dir():
                dirs.add(info.filename.strip("/"))
                continue
            # Unix zips keep the file type in the high bits; 0 means "not recorded": a file.
            if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
                skipped[LINK_MEMBER] += 1
                continue
            name = info.filename.strip("/")
            with zf.open(info) as f:
                files[name] = _read_member(f"{name} in {src}", info.file_size, f, max_file_bytes)
    return files, skipped


def _tar_files(src: pathlib.Path, max_file_bytes: int, dirs: set[str]
               ) -> tuple[dict[str, bytes], Counter]:
    files, skipped = {}, Counter()
    with tarfile.open(src, "r:*") as tar:
        for member in tar:
            if not _wanted(member.name):
                continue
            if member.isdir():
                dirs.add(member.name.removeprefix("./").strip("/"))
                continue
            if not member.isfile():  # symlinks, hard links, devices, FIFOs
                skipped[LINK_MEMBER] += 1
                continue
            name = member.name.removeprefix("./").strip("/")
            files[name] = _read_member(f"{name} in {src}", member.size,
                                       tar.extractfile(member), max_file_bytes)
    return files, skipped


def _by_split(files: dict[str, Source], src: pathlib.Path, dirs: set[str]
              ) -> dict[str, dict[str, list[str]]]:
    """{split: {class: [path]}} (splits train, val if any, test if any) for the one root that
    holds train/ and test/ or val/; refuses a class folder of `dirs` without images."""
    splits_under: dict[str, set[str]] = {}
    for rel in files:
        parts = rel.split("/")
        for k in (0, 1):
            if len(parts) > k + 1 and parts[k] in SPLITS:
                splits_under.setdefault("/".join(parts[:k]), set()).add(parts[k])
    roots = sorted(r for r, s in splits_under.items() if "train" in s and s & EVAL_SPLITS)
    if not roots:
        raise UserError(f"{src} has no train/ and test/ (or val/) folders with images: {LAYOUT}")
    if len(roots) > 1 and "" not in roots:
        raise UserError(f"{src} has train/ and test/ under several folders ({', '.join(roots)}): "
                        "keep one data set per archive or directory")
    root = "" if "" in roots else roots[0]
    if {"val", "validation"} <= splits_under[root]:
        raise UserError(f"{src} has both val/ and validation/: keep one validation split")
    by_split: dict[str, dict[str, list[str]]] = {}
    for rel in files:
        if root and not rel.startswith(root + "/"):
            continue
        parts = rel.split("/")[1 if root else 0:]
        if parts[0] not in SPLITS:
            continue
        if len(parts) < 3:
            raise UserError(f"{rel} in {src} is not inside a class folder: {LAYOUT}")
        split = "val" if parts[0] == "validation" else parts[0]
        by_split.setdefault(split, {}).setdefault(parts[1], []).append(rel)
    for d in sorted(dirs):
        if root and not d.startswith(root + "/"):
            continue
        parts = d.split("/")[1 if root else 0:]
        split = "val" if parts[0] == "validation" else parts[0]
        if len(parts) == 2 and parts[0] in SPLITS and parts[1] not in by_split.get(split, {}):
            raise UserError(f"the class folder {d} in {src} has no images: add some, or remove "
                            "the folder (every class needs images in every split)")
    return {s: by_split[s] for s in ("train", "val", "test") if s in by_split}


def _decode(name: str, source: Source, size_WxH: tuple[int, int],
            max_image_pixels: int) -> np.ndarray:
    """One image as uint8 HxWx3, resized to `size_WxH`."""
    return images.decode(source, size_WxH, name=name, max_image_pixels=max_image_pixels)


def _decode_chunk(items: list[tuple[str, Source]], size_WxH: tuple[int, int],
                  max_image_pixels: int) -> np.ndarray:
    out_NxHxWx3 = np.empty((len(items), size_WxH[1], size_WxH[0], 3), np.uint8)
    for i, (name, source) in enumerate(items):
        out_NxHxWx3[i] = _decode(name, source, size_WxH, max_image_pixels)
    return out_NxHxWx3


def _size_chunk(items: list[tuple[str, Source]], max_image_pixels: int) -> list[tuple[int, int]]:
    return [images.upright_size(source, name=name, max_image_pixels=max_image_pixels)
            for name, source in items]


def _common_size(src: pathlib.Path, sizes_WxH: list[tuple[int, int]]) -> tuple[int, int]:
    """The most common size (ties: the smallest area, then the narrowest); a warning says how
    many images have another size and will be resized."""
    counts = Counter(sizes_WxH)
    w, h = min(counts, key=lambda s: (-counts[s], s[0] * s[1], s))
    others = Counter({s: n for s, n in counts.items() if s != (w, h)})
    if others:
        shown = ", ".join(f"{sw}x{sh} ({n})" for (sw, sh), n in others.most_common(SIZES_SHOWN))
        more = ", ..." if len(others) > SIZES_SHOWN else ""
        warnings.warn(f"{others.total()} of {len(sizes_WxH)} images in {src} are resized to "
                      f"{w}x{h}, the most common size, from {shown}{more}: set data.image_size "
                      "to N for N x N instead", stacklevel=2)
    return w, h


def _workers() -> int:
    """$JAXCNN_DECODE_WORKERS, else the CPUs this process may use."""
    env = os.environ.get("JAXCNN_DECODE_WORKERS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"JAXCNN_DECODE_WORKERS={env!r} is not a positive integer: fix or "
                            "unset it")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _decode_all(src: pathlib.Path, items: list[tuple[str, Source]], image_size: int,
                max_image_pixels: int) -> np.ndarray:
    """All `items` decoded to uint8 NxHxWx3 of one size (see the module docstring), on all CPUs
    when there are many."""
    workers = min(_workers(), math.ceil(len(items) / PARALLEL_MIN_IMAGES))
    # Pillow holds the GIL for most of the work on small images, so threads do not help;
    # processes do. Only fork avoids re-importing the user's __main__ (spawn and forkserver
    # re-run an unguarded script), and it is safe here although JAX warns about it: the
    # workers run only Pillow and numpy, never JAX or its threads.
    if workers <= 1 or sys.platform != "linux":
        return _decode_in(_here, src, items, image_size, max_image_pixels)
    step = max(256, math.ceil(len(items) / (workers * 8)))
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return _decode_in(functools.partial(_in_pool, pool, step), src, items, image_size,
                          max_image_pixels)


def _decode_in(map_chunks, src: pathlib.Path, items: list[tuple[str, Source]], image_size: int,
               max_image_pixels: int) -> np.ndarray:
    """Find the size from the headers (unless `image_size` fixes it), then decode to it;
    `map_chunks` is `_here` or `_in_pool`."""
    if image_size:
        size_WxH = (image_size, image_size)
    else:
        sizes = [s for _, chunk in map_chunks(_size_chunk, items, max_image_pixels)
                 for s in chunk]
        size_WxH = _common_size(src, sizes)
    out_NxHxWx3 = np.empty((len(items), size_WxH[1], size_WxH[0], 3), np.uint8)
    for i, chunk in map_chunks(_decode_chunk, items, size_WxH, max_image_pixels):
        out_NxHxWx3[i:i + len(chunk)] = chunk
    return out_NxHxWx3


def _here(fn, items: list, *args):
    """(0, fn(items, *args)): everything in this process, in one chunk."""
    yield 0, fn(items, *args)


def _in_pool(pool, step: int, fn, items: list, *args):
    """(start, fn(chunk, *args)) for consecutive chunks of `step` items, in order, in `pool`."""
    with warnings.catch_warnings():  # the workers are forked during the first submit
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)")
        futures = [pool.submit(fn, items[i:i + step], *args) for i in range(0, len(items), step)]
    try:
        for i, future in zip(range(0, len(items), step), futures, strict=True):
            yield i, future.result()
    finally:  # an error, or the caller stopped early: drop the chunks not started yet
        for future in futures:
            future.cancel()
