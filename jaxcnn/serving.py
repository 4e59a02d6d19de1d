"""Classify images with an exported jaxcnn model, using only jax, numpy and Pillow.

This file imports nothing from jaxcnn or flax, so it can be copied on its own next to an
artifact written by `scripts/export.py` (`model.jax_export` + `model.json`):

    python serving.py runs/digits_cnn/export img1.png img2.jpg --top-k 3 [--json out.json]
    python -m jaxcnn.serving runs/digits_cnn/export img1.png   # the same, from a checkout

    import serving
    model = serving.load("runs/digits_cnn/export")
    out = serving.classify(model, serving.prepare(["img1.png"], model.image_shape))
    out["probabilities"]  # float32 NxK, class names in model.class_names

JAX reads an artifact written by a JAX up to 6 months older, or up to 3 weeks newer, than
itself (the jax.export compatibility guarantee); `model.json` records the exporting version.
Deserializing needs the `flatbuffers` package, which jax.export imports for it.

An artifact is code: its StableHLO (and any custom calls in it) runs on your device, and
loading checks only that the artifact is the one its model.json describes (sha256, input and
output shapes), not who made it. Serve exports you made or trust, as you would a program.

`decode_image` is the one image decoder of jaxcnn: training and predict use it too (through
`jaxcnn.data.images`), so a model sees the same pixels from a file wherever it reads one.
"""

import argparse
import hashlib
import io
import json
import os
import sys
from typing import NamedTuple

import jax
import numpy as np
from jax import export
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

ARTIFACT = "model.jax_export"
METADATA = "model.json"
MAX_IMAGE_PIXELS = 2**26  # per image (width x height), as jaxcnn's data.max_image_pixels


class ServingError(Exception):
    """Bad input (a missing artifact or image, an undecodable file): one line on the CLI."""


class Model(NamedTuple):
    exported: export.Exported  # uint8 BxHxWxC -> {"logits", "probabilities"}, any B >= 1
    meta: dict  # model.json: class names, image shape, versions

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.meta["image_shape"])


def load(directory: str) -> Model:
    """The exported model in `directory` (model.jax_export and model.json).

    The artifact must have the sha256 that model.json records (exports that predate it are not
    checked) and outputs as wide as model.json's class list: a changed artifact, or a
    model.json from another export, is refused rather than served.
    """
    paths = [os.path.join(directory, n) for n in (ARTIFACT, METADATA)]
    for p in paths:
        if not os.path.isfile(p):
            raise ServingError(f"{p} does not exist: give the directory scripts/export.py wrote")
    try:
        with open(paths[1]) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ServingError(f"cannot read {paths[1]} ({e}): export the model again") from None
    with open(paths[0], "rb") as f:
        blob = bytearray(f.read())
    _check_digest(blob, meta, *paths)
    try:
        exported = export.deserialize(blob)
    except Exception as e:  # noqa: BLE001 - flatbuffers and version errors alike
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ServingError(
            f"cannot deserialize {paths[0]} ({type(e).__name__}: {first}): it was exported with "
            f"jax {meta.get('jax_version', '?')} and this is jax {jax.__version__}; JAX reads "
            "artifacts up to 6 months older or 3 weeks newer than itself, so export it again "
            "with a JAX in that window") from None
    _check_outputs(exported, meta, *paths)
    return Model(exported, meta)


def _check_digest(blob: bytearray, meta: dict, artifact: str, metadata: str) -> None:
    want = meta.get("artifact_sha256")
    if want is None:  # written before exports recorded it
        return
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise ServingError(f"{artifact} does not match {metadata} (sha256 {got[:12]}..., "
                           f"expected {str(want)[:12]}...): the files come from different "
                           "exports or were changed; export the run again")


def _check_outputs(exported: export.Exported, meta: dict, artifact: str, metadata: str) -> None:
    """model.json's classes and image shape against the artifact's own output and input shapes."""
    k, hwc = len(meta.get("class_names") or ()), tuple(meta.get("image_shape") or ())
    widths = {int(a.shape[-1]) for a in exported.out_avals if a.shape}
    inputs = {tuple(a.shape[1:]) for a in exported.in_avals}
    if widths != {k} or inputs != {hwc}:
        raise ServingError(f"{artifact} does not match {metadata}: the artifact takes "
                           f"{_dims(inputs)} images and gives {_dims(widths)} classes, model.json "
                           f"says {_dims({hwc})} and {k}: the files come from different exports; "
                           "export the run again")


def _dims(values: set) -> str:
    return " or ".join(sorted("x".join(map(str, v)) if isinstance(v, tuple) else str(v)
                              for v in values))


def prepare(paths_or_images, image_shape_HxWxC, *,
            max_image_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 NxHxWxC from files or Pillow images of any size and mode, converted by
    `decode_image` exactly as training images are, then resized to HxW.

    RGB models get RGB, 1-channel models grey. An image over `max_image_pixels` is refused.
    """
    h, w, c = (int(d) for d in image_shape_HxWxC)
    if c not in (1, 3):
        raise ServingError(f"the model takes {c}-channel images: only RGB and grey models read "
                           "files")
    out_NxHxWxC = np.empty((len(paths_or_images), h, w, c), np.uint8)
    for i, item in enumerate(paths_or_images):
        if not isinstance(item, Image.Image) and not os.path.isfile(item):
            raise ServingError(f"image {os.fspath(item)} does not exist or is not a file: check "
                               "the path")
        out_NxHxWxC[i] = decode_image(item, (w, h), channels=c, max_pixels=max_image_pixels,
                                      limit_name="max_image_pixels of prepare()")
    return out_NxHxWxC


# ---------------------------------------------------------------- decoding one image
# Training (jaxcnn.data.folder), jaxcnn.inference and serving all decode with this one
# function, so a model sees the same pixels wherever an image comes from. It lives here
# because this file must run copied alone; jaxcnn.data.images wraps it with jaxcnn's errors.

# Orientations 5..8 turn the image by 90 degrees: the stored width is the upright height.
_QUARTER_TURNS = (5, 6, 7, 8)
FIX_FILE = "replace or remove the file"  # what to do about an image that does not decode
# Bytes that Pillow does not recognise: its own message would name the BytesIO they were read
# through ("cannot identify image file <_io.BytesIO object at 0x...>").
NOT_AN_IMAGE = "not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)"


def decode_image(source, size_WxH: tuple[int, int] | None = None, *, name: str | None = None,
                 channels: int = 3, max_pixels: int = MAX_IMAGE_PIXELS,
                 limit_name: str = "max_image_pixels", fix: str = FIX_FILE) -> np.ndarray:
    """uint8 HxWxC (C = `channels`: 3 for RGB, 1 for grey) from a path, bytes or Pillow image.

    The steps, in order:
    - the header's width x height is checked against `max_pixels` before any pixel is decoded;
    - the EXIF orientation is applied, so a photo stored sideways comes out upright;
    - 16-bit grey (modes I;16, I;16B, and I, whose values are taken to be 0..65535) becomes
      round(v / 257), clipped to 0..255: 65535 -> 255, 32768 -> 128;
    - float images (mode F) are taken to be 0..1 and become round(v * 255), clipped to 0..255,
      NaN -> 0;
    - then RGB (grey repeated, alpha dropped, palettes expanded) or grey (Pillow's luma), and
      a resize to `size_WxH` with Pillow's bilinear filter (antialiased when shrinking).

    An unreadable, truncated or oversized image raises ServingError naming `name` (default: the
    path) and, for size, `limit_name`, the setting that raises the limit; an unreadable one
    ends with `fix`, what to do about it (the server asks for another file).
    """
    if name is None:
        name = "image" if isinstance(source, (bytes, Image.Image)) else os.fspath(source)
    if isinstance(source, Image.Image):  # the caller's image: read, never closed or changed
        return _convert(source, size_WxH, name, channels, max_pixels, limit_name, fix)
    with open_image(source, name=name, max_pixels=max_pixels, limit_name=limit_name,
                    fix=fix) as im:
        return _convert(im, size_WxH, name, channels, max_pixels, limit_name, fix)


def open_image(source, *, name: str, max_pixels: int = MAX_IMAGE_PIXELS,
               limit_name: str = "max_image_pixels", fix: str = FIX_FILE) -> Image.Image:
    """The image at `source` (path or bytes), opened lazily: header read and size checked,
    pixels not decoded yet. Close it (use `with`)."""
    try:
        im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as e:  # Pillow's own, lower limit: the same error
        raise ServingError(f"image {name} is too large to decode ({e}): shrink it") from None
    except (OSError, ValueError, SyntaxError) as e:
        if isinstance(source, bytes) and isinstance(e, UnidentifiedImageError):
            raise ServingError(f"cannot decode image {name}: {NOT_AN_IMAGE}: {fix}") from None
        raise ServingError(f"cannot decode image {name} ({e}): {fix}") from None
    try:
        _check_pixels(im, name, max_pixels, limit_name)
    except ServingError:
        im.close()
        raise
    return im


def upright_size(im: Image.Image) -> tuple[int, int]:
    """(W, H) of a lazily opened image once its EXIF orientation is applied, without decoding."""
    # PNG's getexif decodes the whole image to look for an eXIf chunk after the pixels. Such
    # files are rare, and callers only use this size to pick a common one, never to index.
    if im.format == "PNG" and "exif" not in im.info:
        return im.size
    w, h = im.size
    turned = im.getexif().get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS
    return (h, w) if turned else (w, h)


def _check_pixels(im: Image.Image, name: str, max_pixels: int, limit_name: str) -> None:
    w, h = im.size
    if w * h > max_pixels:
        raise ServingError(f"image {name} is {w}x{h} = {w * h:,} pixels, more than the limit of "
                           f"{max_pixels:,}: shrink it, or raise {limit_name}")


def _convert(im: Image.Image, size_WxH, name: str, channels: int, max_pixels: int,
             limit_name: str, fix: str) -> np.ndarray:
    _check_pixels(im, name, max_pixels, limit_name)  # before load(): nothing decoded yet
    try:
        im.load()  # decode now, so that a truncated file fails inside this try
        if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # else spare exif_transpose's copy
            im = ImageOps.exif_transpose(im)
        im = _to_8bit(im)
        mode = "RGB" if channels == 3 else "L"
        if im.mode != mode:
            im = im.convert(mode)
        if size_WxH is not None and im.size != tuple(size_WxH):
            im = im.resize(tuple(size_WxH), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ServingError(f"cannot decode image {name} ({e}): {fix}") from None
    pixels = np.asarray(im)
    return pixels if channels == 3 else pixels[..., None]


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and float grey rescaled to 8 bits; Pillow's own convert would clip them."""
    if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I: 0..65535
        v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return Image.fromarray(((v + 128) // 257).astype(np.uint8))  # round(v / 257)
    if im.mode == "F":  # 0..1
        v = np.nan_to_num(np.asarray(im, np.float64), nan=0.0)
        return Image.fromarray(np.clip(np.rint(v * 255), 0, 255).astype(np.uint8))
    return im


def classify(model: Model, images_NxHxWxC: np.ndarray, *, batch_size: int = 256) -> dict:
    """{"logits", "probabilities"}: float32 NxK numpy arrays, in batches of `batch_size`.

    The last batch is padded to `batch_size`, so a long run of images compiles one shape.
    """
    x = np.asarray(images_NxHxWxC)
    want = (model.image_shape, np.dtype(model.meta.get("input_dtype", "uint8")))
    if (tuple(x.shape[1:]), x.dtype) != want or x.ndim != 4:
        raise ServingError(f"images are {x.dtype} with shape {x.shape}: the model takes "
                           f"{want[1]} Nx{'x'.join(map(str, want[0]))} (prepare() makes them)")
    n, b = len(x), max(1, min(batch_size, len(x)))
    outs = []
    for i in range(0, n, b):
        chunk = x[i:i + b]
        pad = b - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], x.dtype)])
        out = model.exported.call(chunk)
        outs.append({k: np.asarray(v)[:b - pad] for k, v in out.items()})
    k = len(model.class_names)
    return {name: (np.concatenate([o[name] for o in outs]) if outs
                   else np.zeros((0, k), np.float32)) for name in ("logits", "probabilities")}


def top_k(probs_NxK: np.ndarray, class_names, k: int) -> list[list[dict]]:
    """Per image, the `k` most probable classes: [{"class", "index", "probability"}, ...]."""
    order_NxK = np.argsort(-np.asarray(probs_NxK), axis=-1, kind="stable")[:, :k]
    return [[{"class": class_names[j], "index": int(j), "probability": float(p[j])}
             for j in row] for p, row in zip(probs_NxK, order_NxK, strict=True)]


def format_top_k(names, results: list[list[dict]]) -> str:
    """One block per image: its name, then `rank. class  probability` lines."""
    blocks = []
    for name, rows in zip(names, results, strict=True):
        lines = [str(name)] + [f"  {r + 1}. {row['class']:<20} {row['probability']:.4f}"
                               for r, row in enumerate(rows)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with an exported model.")
    parser.add_argument("model_dir", help="the directory scripts/export.py wrote")
    parser.add_argument("images", nargs="+", help="image files (any size, mode and format)")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    parser.add_argument("--json", help="also write the results as JSON to this file ('-': "
                        "stdout, instead of the text)")
    args = parser.parse_args(argv)
    try:
        if args.top_k < 1:
            raise ServingError(f"--top-k must be at least 1, got {args.top_k}")
        for p in args.images:  # before loading anything: a typo fails at once
            if not os.path.isfile(p):
                raise ServingError(f"image {p} does not exist or is not a file: check the path")
        model = load(args.model_dir)
        out = classify(model, prepare(args.images, model.image_shape))
    except ServingError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    results = top_k(out["probabilities"], model.class_names, args.top_k)
    rows = [{"image": p, "top_k": r} for p, r in zip(args.images, results, strict=True)]
    if args.json != "-":
        print(format_top_k(args.images, results))
    if args.json:
        text = json.dumps(rows, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
