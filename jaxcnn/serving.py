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
"""

import argparse
import json
import os
import sys
from typing import NamedTuple

import jax
import numpy as np
from jax import export
from PIL import Image

ARTIFACT = "model.jax_export"
METADATA = "model.json"


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
    """The exported model in `directory` (model.jax_export and model.json)."""
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
    try:
        exported = export.deserialize(blob)
    except Exception as e:  # noqa: BLE001 - flatbuffers and version errors alike
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ServingError(
            f"cannot deserialize {paths[0]} ({type(e).__name__}: {first}): it was exported with "
            f"jax {meta.get('jax_version', '?')} and this is jax {jax.__version__}; JAX reads "
            "artifacts up to 6 months older or 3 weeks newer than itself, so export it again "
            "with a JAX in that window") from None
    return Model(exported, meta)


def prepare(paths_or_images, image_shape_HxWxC) -> np.ndarray:
    """uint8 NxHxWxC from files or Pillow images of any size and mode, converted as training
    images are: to RGB (grey repeated, alpha dropped, palettes expanded), then resized to HxW
    with Pillow's bilinear filter (antialiased when shrinking).

    The same steps as jaxcnn.data.folder, repeated here so this file stands alone.
    """
    h, w, c = (int(d) for d in image_shape_HxWxC)
    if c != 3:
        raise ServingError(f"the model takes {c}-channel images: only RGB models read files")
    out_NxHxWxC = np.empty((len(paths_or_images), h, w, 3), np.uint8)
    for i, item in enumerate(paths_or_images):
        if isinstance(item, Image.Image):
            out_NxHxWxC[i] = _to_rgb(item, (w, h))
            continue
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise ServingError(f"image {path} does not exist or is not a file: check the path")
        try:
            with Image.open(path) as im:
                im.load()  # decode now, so that a truncated file fails inside this try
                out_NxHxWxC[i] = _to_rgb(im, (w, h))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ServingError(f"cannot decode image {path} ({e}): replace or remove the "
                               "file") from None
    return out_NxHxWxC


def _to_rgb(im: Image.Image, size_WxH: tuple[int, int]) -> np.ndarray:
    if im.mode != "RGB":
        im = im.convert("RGB")
    if im.size != tuple(size_WxH):
        im = im.resize(tuple(size_WxH), Image.Resampling.BILINEAR)
    return np.asarray(im)


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
