"""Using a saved model: load a run, predict logits, count a confusion matrix, prepare images.

    from jaxcnn import inference
    run = inference.load_run("runs/digits_cnn")  # a workdir or one of its checkpoints/<step>
    images = inference.prepare_images(["cat.png"], run.meta["image_shape"])
    logits_NxK = inference.predict_logits(run.model, images, run.config)
    print(run.class_names[int(logits_NxK[0].argmax())])

Predictions go through `steps.forward`, the one forward the engine's evaluation uses: images
are normalised exactly as in training (`data.mean`, `data.std`, the compute dtype of the run's
config), the model runs in inference mode (BatchNorm uses its running statistics), and the run's
test-time augmentation (`train.tta_level`) applies. Metrics of a split come from
`jaxcnn.evaluation.evaluate`, the engine's own evaluation.
"""

import functools
import json
import os
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx
from ml_collections import ConfigDict
from PIL import Image

from jaxcnn import checkpoint, ema, models
from jaxcnn.config import compute_dtype
from jaxcnn.data import Dataset, images, load, load_options, prepare
from jaxcnn.errors import UserError
from jaxcnn.steps import StepConfig, forward, num_outputs, step_config

# Runs saved before checkpoints recorded their image shape were all 32x32 RGB: the built-in
# data sets are, and the seed CNN's first dense layer fits no other size.
DEFAULT_IMAGE_SHAPE = (32, 32, 3)


class Run(NamedTuple):
    """A trained run, ready for inference."""
    model: nnx.Module  # parameters and BatchNorm statistics of the checkpoint
    config: ConfigDict  # the run's config.json, checked, missing fields at their defaults
    class_names: tuple[str, ...]  # label i is class_names[i]
    meta: dict  # the checkpoint's meta, plus `checkpoint` (its path) and `image_shape` (H, W, C)


# ---------------------------------------------------------------- loading a run

def load_run(path: str, *, model: nnx.Module | None = None) -> Run:
    """The model, config and class names of a run's workdir (its latest checkpoint) or of one of
    its `checkpoints/<step>` directories.

    The model is rebuilt from `config.json` and the checkpoint's `meta` (model name, number of
    classes); pass `model` to load into a module built by research code instead. A path with no
    checkpoint, a missing or broken config.json, or a checkpoint that does not fit the model
    raises a UserError.
    """
    ckpt = checkpoint.resolve(path)
    workdir = os.path.dirname(os.path.dirname(ckpt))  # <workdir>/checkpoints/<step>
    config = load_config(os.path.join(workdir, "config.json"))
    arrays, meta = checkpoint.load_arrays(ckpt)
    shape = tuple(meta.get("image_shape") or DEFAULT_IMAGE_SHAPE)
    if model is None:
        if "model" not in meta or "num_classes" not in meta:
            raise UserError(f"checkpoint {ckpt} does not say which model it holds (no 'model' "
                            "or 'num_classes' in its meta): load it with load_run(path, "
                            "model=...)")
        # Abstract (shapes only): every array comes from the checkpoint, so initialising
        # them first would be wasted work, seconds of it for a big model on a CPU.
        model = nnx.eval_shape(lambda: _as_run_computes(models.create(
            meta["model"], num_classes=int(meta["num_classes"]), dtype=compute_dtype(config),
            param_dtype=config.model.param_dtype, rngs=nnx.Rngs(0), image_shape=shape,
            **models.options(config.model)), config, shape))
    else:
        model = _as_run_computes(model, config, shape)

    load_weights(model, ema.checkpoint_weights(arrays), ckpt)  # an EMA run: its average
    k = _num_outputs(model)
    names = tuple(meta.get("class_names") or (str(i) for i in range(k)))
    if len(names) != k:
        raise UserError(f"checkpoint {ckpt} names {len(names)} classes but its model has {k} "
                        "outputs: the checkpoint's meta is inconsistent")
    meta = {**meta, "checkpoint": ckpt, "image_shape": shape}
    return Run(model, config, names, meta)


def load_config(path: str) -> ConfigDict:
    """A run's config.json as a checked ConfigDict; fields it predates take their defaults."""
    from jaxcnn.config import check_config, default_config
    try:
        with open(path) as f:
            raw = ConfigDict(json.load(f))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: a run's workdir holds the config.json that "
                        "train_and_evaluate wrote; give the workdir of a run") from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e}): restore the run's config.json") from None
    config = default_config()
    try:
        config.update(raw)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path} does not fit the config schema ({e}): restore the run's "
                        "config.json") from None
    check_config(config)  # refuses fields the schema does not know
    return config


def load_weights(model: nnx.Module, arrays: dict[str, np.ndarray], where: str) -> nnx.Module:
    """Copy every parameter and BatchNorm statistic of `model` from a checkpoint's `arrays`."""
    return checkpoint.copy_into(model, arrays, where)


def _as_run_computes(model: nnx.Module, config: ConfigDict, image_shape) -> nnx.Module:
    """`model` as the run computes it: fake-quantized (quant.mode=qat) or int8 (ptq)."""
    if not config.quant.mode:
        return model
    from jaxcnn import quantize
    build = quantize.qat if config.quant.mode == "qat" else quantize.structure
    return build(model, image_shape)


def _num_outputs(model: nnx.Module) -> int:
    head = getattr(type(model), "HEAD", None)
    layer = getattr(model, head, None) if head else None
    return int(layer.out_features) if isinstance(layer, nnx.Linear) else -1


# ---------------------------------------------------------------- predicting

def forward_config(model: nnx.Module, config: ConfigDict, image_shape_HxWxC, *,
                   tta_level: int | None = None) -> tuple[StepConfig, nnx.State, nnx.State]:
    """`steps.forward`'s settings and arrays for `model` under a run's `config`: normalisation,
    compute dtype and test-time augmentation (default: the run's `train.tta_level`)."""
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    level = config.train.tta_level if tta_level is None else tta_level
    cfg = step_config(config, graphdef, None, int(image_shape_HxWxC[-1]),
                      num_outputs(model, image_shape_HxWxC), tta_level=level)
    return cfg, params, model_state


@functools.partial(jax.jit, static_argnames=("cfg",))
def _logits(params, model_state, images_BxHxWxC, *, cfg):
    return forward(cfg, params, model_state, images_BxHxWxC)


def predict_logits(model: nnx.Module, images_NxHxWxC: np.ndarray, config: ConfigDict, *,
                   batch_size: int | None = None, tta_level: int | None = None) -> np.ndarray:
    """float32 NxK logits of `model` on uint8 images: `steps.forward`, the evaluation's own
    forward (normalisation as in training, inference mode, the run's test-time augmentation).

    Runs in jitted batches of `batch_size` (default `config.train.eval_batch_size`, or the next
    power of two above N when N is smaller); the last batch is padded, so one size compiles once.
    """
    images_NxHxWxC = np.asarray(images_NxHxWxC)
    if images_NxHxWxC.dtype != np.uint8 or images_NxHxWxC.ndim != 4:
        raise UserError(f"images are {images_NxHxWxC.dtype} with shape {images_NxHxWxC.shape}: "
                        "give uint8 NxHxWxC arrays (prepare_images makes them from files)")
    n = len(images_NxHxWxC)
    cfg, params, model_state = forward_config(model, config, images_NxHxWxC.shape[1:],
                                              tta_level=tta_level)
    if n == 0:
        return np.zeros((0, cfg.num_classes), np.float32)
    b = int(batch_size or config.train.eval_batch_size)
    b = max(1, min(b, 1 << max(n - 1, 0).bit_length()))
    out = []
    for i in range(0, n, b):
        chunk = images_NxHxWxC[i:i + b]
        pad = b - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.uint8)])
        out.append(np.asarray(_logits(params, model_state, chunk, cfg=cfg))[:b - pad])
    return np.concatenate(out)


def confusion_matrix(labels_N: np.ndarray, preds_N: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 KxK counts: row = true class, column = predicted class."""
    labels_N, preds_N = np.asarray(labels_N).astype(np.int64), np.asarray(preds_N).astype(np.int64)
    if labels_N.shape != preds_N.shape or labels_N.ndim != 1:
        raise ValueError(f"labels {labels_N.shape} and predictions {preds_N.shape} must be two "
                         "vectors of one length")
    for name, v in (("labels", labels_N), ("predictions", preds_N)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} span {v.min()}..{v.max()}, outside 0..{num_classes - 1}")
    counts = np.bincount(labels_N * num_classes + preds_N, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def per_class(cm_KxK: np.ndarray) -> dict:
    """Per-class metrics from a confusion matrix (rows: true class, columns: predicted).

    recall (= per-class accuracy) = hits / images of the class; precision = hits / images
    predicted as the class; F1 their harmonic mean; each 0 where its denominator is 0. The
    macro averages weigh every class alike, whatever its size.
    """
    hits, counts, predicted = np.diag(cm_KxK), cm_KxK.sum(1), cm_KxK.sum(0)
    recall = hits / np.maximum(counts, 1)
    precision = hits / np.maximum(predicted, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    out = {"per_class_accuracy": recall, "per_class_recall": recall,
           "per_class_precision": precision, "per_class_f1": f1}
    out = {k: [float(x) for x in v] for k, v in out.items()}
    out.update(per_class_count=[int(c) for c in counts], macro_precision=float(precision.mean()),
               macro_recall=float(recall.mean()), macro_f1=float(f1.mean()))
    return out


# ---------------------------------------------------------------- a run's data

def run_dataset(run: Run, spec: str | None = None) -> Dataset:
    """The data set `run` was trained on (its `data.name`, subset by `data.classes` and
    `data.train_per_class` as in training), or `spec`, keeping the run's classes by name.
    """
    c = run.config
    data = prepare(c) if spec is None else load(spec, **load_options(c.data)).with_channels(
        run.meta["image_shape"][-1])
    where = f"data set {spec or c.data.name!r}"
    if "class_names" not in run.meta:  # an older checkpoint: only the count is known
        if data.num_classes != len(run.class_names):
            raise UserError(f"{where} has {data.num_classes} classes but the model has "
                            f"{len(run.class_names)}: give a data set with the run's classes")
    elif data.class_names != run.class_names:
        missing = [n for n in run.class_names if n not in data.class_names]
        if missing:
            raise UserError(f"{where} lacks the model's classes {', '.join(missing[:5])}: give "
                            "a data set with the class folders the run was trained on")
        data = data.subset(list(run.class_names))  # the model's label order
    if data.image_shape != tuple(run.meta["image_shape"]):
        raise UserError(f"{where} has {'x'.join(map(str, data.image_shape))} images but the "
                        f"model takes {'x'.join(map(str, run.meta['image_shape']))}")
    return data


# ---------------------------------------------------------------- images from files

def prepare_images(paths_or_images, image_shape_HxWxC, *,
                   max_image_pixels: int = images.MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 NxHxWxC from image files or Pillow images of any size and mode, decoded by
    `jaxcnn.data.images.decode` as training images are, then resized to HxW.

    RGB models get RGB, 1-channel models grey. A missing, undecodable or oversized
    (`max_image_pixels`) file is a UserError naming it.
    """
    h, w, c = (int(d) for d in image_shape_HxWxC)
    if c not in (1, 3):
        raise UserError(f"the model takes {c}-channel images: only RGB (3-channel) and grey "
                        "(1-channel) models can read image files")
    out_NxHxWxC = np.empty((len(paths_or_images), h, w, c), np.uint8)
    for i, item in enumerate(paths_or_images):
        # isfile is False for a FIFO, which would block the read forever.
        if not isinstance(item, Image.Image) and not os.path.isfile(item):
            raise UserError(f"image {os.fspath(item)} does not exist or is not a file: check "
                            "the path")
        out_NxHxWxC[i] = images.decode(item, (w, h), channels=c,
                                       max_image_pixels=max_image_pixels)
    return out_NxHxWxC
