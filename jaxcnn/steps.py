"""Pure step functions: `train_step`, `forward`, `eval_step`, and the sums a loop accumulates.

Everything here is a function of arrays plus a `StepConfig` that is fixed for a run (static
under jit). The NNX model is split once into its graph definition and arrays (`create_state`),
so the hot loop stays functional; `forward` is the one inference path: the engine's evaluation,
`jaxcnn.evaluate`, `scripts/evaluate.py`, prediction, plots and the exported artifact all call it.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from ml_collections import ConfigDict

from jaxcnn import models, tta
from jaxcnn.config import compute_dtype
from jaxcnn.data.pipeline import Batch, alternating_flip, augment, normalize, take_batch
from jaxcnn.errors import UserError


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar, optimizer steps taken
    params: nnx.State  # nnx.Param leaves
    model_state: nnx.State  # everything else: BatchNorm statistics, frozen weights
    opt_state: optax.OptState


class Preprocess(NamedTuple):
    """How uint8 images become network inputs: (x / 255 - mean) / std, cast to `dtype`."""
    mean: tuple[float, ...]  # per channel
    std: tuple[float, ...]
    dtype: Any = jnp.float32  # the compute dtype


class StepConfig(NamedTuple):
    """What a step needs besides arrays: fixed for a run, static under jit."""
    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation | None  # None: evaluation only
    preprocess: Preprocess
    num_classes: int
    crop_padding: int = 0
    flip: bool | str = False  # False, True (random) or "alternating" (by image row and epoch)
    crop_fill: str = "zero"  # zero | reflect
    label_smoothing: float = 0.0
    bn_train: bool = True  # False: BatchNorm in inference mode (a frozen backbone)
    tta_level: int = 0  # test-time augmentation of `forward` (jaxcnn/tta.py)
    class_weights: tuple[float, ...] | None = None  # the training loss's weight per class


def preprocess_of(config: ConfigDict, channels: int) -> Preprocess:
    """`data.mean` / `data.std` (one value or one per channel) and the compute dtype."""
    mean, std = (_per_channel(config.data[k], channels, k) for k in ("mean", "std"))
    return Preprocess(mean, std, models.dtype_of(compute_dtype(config)))


def step_config(config: ConfigDict, graphdef: nnx.GraphDef,
                tx: optax.GradientTransformation | None, channels: int, num_classes: int, *,
                tta_level: int = 0, bn_train: bool = True,
                train_labels: np.ndarray | None = None) -> StepConfig:
    """The run's static step settings from its config (`train_labels`: for class weights)."""
    weights = (class_weights(config.data.class_weights, train_labels, num_classes)
               if train_labels is not None else None)
    return StepConfig(graphdef, tx, preprocess_of(config, channels), num_classes,
                      config.data.crop_padding, config.data.flip, config.data.crop_fill,
                      config.train.label_smoothing, bn_train, tta_level, weights)


def class_weights(spec: str, train_labels: np.ndarray, num_classes: int
                  ) -> tuple[float, ...] | None:
    """`data.class_weights`: "" none; "balanced" n / (K x n_k), as scikit-learn's, so a class
    with half the images weighs twice; or K comma-separated positive numbers."""
    if not spec:
        return None
    if spec == "balanced":
        counts = np.bincount(np.asarray(train_labels), minlength=num_classes)
        if (counts == 0).any():
            raise UserError(f"data.class_weights=balanced: class {int(np.argmin(counts))} has no "
                            "training images; give the weights as a list instead")
        return tuple(float(w) for w in len(train_labels) / (num_classes * counts))
    try:
        weights = tuple(float(w) for w in spec.split(","))
    except ValueError:
        weights = ()
    if len(weights) != num_classes or not all(math.isfinite(w) and w > 0 for w in weights):
        raise UserError(f"data.class_weights={spec!r} must be balanced or {num_classes} positive "
                        "numbers separated by commas, one per class in label order")
    return weights


def num_outputs(model: nnx.Module, image_shape_HxWxC) -> int:
    """The width of `model`'s output for one image: its number of classes (shapes only)."""
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state,
                         jax.ShapeDtypeStruct((1, *image_shape_HxWxC), jnp.float32))
    return int(out.shape[-1])


def _per_channel(v, channels: int, name: str) -> tuple[float, ...]:
    v = [float(x) for x in (v if isinstance(v, (tuple, list)) else [v])]
    if len(set(v)) == 1:  # one value, or the same for each: any channel count (the default)
        v = v[:1] * channels
    if len(v) != channels:
        raise UserError(f"data.{name} has {len(v)} values but the images have {channels} "
                        "channels: give one value or one per channel")
    if not all(math.isfinite(x) for x in v) or (name == "std" and min(v) <= 0):
        raise UserError(f"data.{name} must be finite{' and > 0' if name == 'std' else ''}, "
                        f"got {tuple(v)}")
    return tuple(v)


def create_state(model: nnx.Module, tx: optax.GradientTransformation | None
                 ) -> tuple[nnx.GraphDef, TrainState]:
    """Split `model` once into its graph definition and a fresh train state."""
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params) if tx is not None else None
    return graphdef, TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state)


def loss_and_metrics(logits_BxK: jax.Array, labels_B: jax.Array, label_smoothing: float,
                     mask_B: jax.Array | None = None, class_weights: tuple | None = None
                     ) -> tuple[jax.Array, dict]:
    """Mean (masked) cross-entropy, plus summed loss / correct / count for logging.

    With `class_weights` the mean is weighted by each image's class weight (sum of w x loss over
    sum of w, as PyTorch's CrossEntropyLoss(weight=...)); the logged sums stay unweighted, so
    train_loss compares with test_loss."""
    k = logits_BxK.shape[-1]
    targets_BxK = optax.smooth_labels(jax.nn.one_hot(labels_B, k), label_smoothing)
    # At least float32 (bf16 logits are promoted), never less than the logits (float64 kept).
    logits_BxK = logits_BxK.astype(jnp.promote_types(logits_BxK.dtype, jnp.float32))
    loss_B = optax.softmax_cross_entropy(logits_BxK, targets_BxK)
    if mask_B is None:
        mask_B = jnp.ones_like(loss_B)
    count = mask_B.sum()
    correct = ((logits_BxK.argmax(-1) == labels_B) * mask_B).sum()
    metrics = {"loss": (loss_B * mask_B).sum(), "correct": correct, "count": count}
    if class_weights is not None:
        w_B = jnp.asarray(class_weights, loss_B.dtype)[labels_B] * mask_B
        return (loss_B * w_B).sum() / jnp.maximum(w_B.sum(), 1e-12), metrics
    return (loss_B * mask_B).sum() / jnp.maximum(count, 1), metrics


# ---------------------------------------------------------------- training

def train_step(state: TrainState, batch: Batch, key: jax.Array, cfg: StepConfig
               ) -> tuple[TrainState, dict]:
    """One optimizer step on a uint8 batch: augment, normalise, forward, backward, update."""
    x = augment(key, batch.image, cfg.crop_padding, cfg.flip, cfg.crop_fill)
    x = normalize(x, *cfg.preprocess)

    def loss_fn(params):
        # copy=True: fresh Variables at this trace level, which BatchNorm may then update.
        model = nnx.merge(cfg.graphdef, params, state.model_state, copy=True)
        logits = model(x, train=cfg.bn_train)
        loss, metrics = loss_and_metrics(logits, batch.label, cfg.label_smoothing, batch.mask,
                                         cfg.class_weights)
        return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

    grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, model_state, opt_state), metrics


def initial_train_sums() -> dict:
    """The per-epoch sums a training loop accumulates: loss, correct, count, and the first step
    (1-based, -1 = none) whose loss was not finite."""
    return {"loss": jnp.zeros(()), "correct": jnp.zeros(()), "count": jnp.zeros(()),
            "first_bad": jnp.full((), -1, jnp.int32)}


def accumulate(sums: dict, metrics: dict, step: jax.Array) -> dict:
    """Add a step's metrics to the epoch's sums; remember the first non-finite loss.

    Kept on the device, so divergence is caught at the next read without a sync per step.
    """
    bad = ~jnp.isfinite(metrics["loss"])
    first_bad = jnp.where((sums["first_bad"] < 0) & bad, step, sums["first_bad"])
    return {**{k: sums[k] + metrics[k] for k in metrics}, "first_bad": first_bad}


def epoch_step_key(aug_key: jax.Array, epoch, i) -> jax.Array:
    """The augmentation key of step `i` of `epoch`: the same whichever call takes the step."""
    return jax.random.fold_in(jax.random.fold_in(aug_key, epoch), i)


def flip_key(aug_key: jax.Array) -> jax.Array:
    """Fixed for the run: which half of the images an alternating flip mirrors in even epochs.
    (Per-epoch keys fold in the epoch, a small number; this one folds in the largest uint32.)"""
    return jax.random.fold_in(aug_key, 2**32 - 1)


def train_batch_step(state: TrainState, sums: dict, batch: Batch, epoch, i, aug_key,
                     cfg: StepConfig) -> tuple[TrainState, dict]:
    """`train_step` on batch `i` of `epoch`, whichever path brought the batch, plus its sums."""
    if cfg.flip == "alternating":
        batch = alternating_flip(flip_key(aug_key), batch, epoch)
    state, metrics = train_step(state, batch, epoch_step_key(aug_key, epoch, i), cfg)
    return state, accumulate(sums, metrics, state.step)


def train_gathered_step(state: TrainState, sums: dict, images, labels, perm, epoch, i, aug_key,
                        cfg: StepConfig, batch_size: int, sharding, valid: int | None = None
                        ) -> tuple[TrainState, dict]:
    """Gather batch `i` of the epoch from the device-resident data set, then train on it
    (`valid`: the data set's size when the last batch is padded, see `take_batch`)."""
    batch = take_batch(images, labels, perm, i, batch_size, valid)
    batch = jax.lax.with_sharding_constraint(batch, sharding)
    return train_batch_step(state, sums, batch, epoch, i, aug_key, cfg)


# ---------------------------------------------------------------- inference

def forward(cfg: StepConfig, params: nnx.State, model_state: nnx.State,
            images_BxHxWxC: jax.Array) -> jax.Array:
    """float32 logits_BxK of uint8 images: normalise, run in inference mode, average the TTA
    views of `cfg.tta_level` (in float32, whatever the compute dtype)."""
    model = nnx.merge(cfg.graphdef, params, model_state, copy=True)
    x = normalize(images_BxHxWxC, *cfg.preprocess)
    return tta.predict(lambda v: model(v, train=False).astype(jnp.float32), x, cfg.tta_level)


def eval_step(state: TrainState, batch: Batch, mask_B: jax.Array, cfg: StepConfig) -> dict:
    """Sums over the unmasked images of `batch`: loss, correct, count and the KxK confusion
    counts (row: true class, column: predicted)."""
    logits_BxK = forward(cfg, state.params, state.model_state, batch.image)
    _, sums = loss_and_metrics(logits_BxK, batch.label, 0.0, mask_B)
    k = cfg.num_classes
    true_BxK = jax.nn.one_hot(batch.label, k, dtype=jnp.float32) * mask_B[:, None]
    pred_BxK = jax.nn.one_hot(logits_BxK.argmax(-1), k, dtype=jnp.float32)
    sums["confusion"] = jnp.einsum("bi,bj->ij", true_BxK, pred_BxK,
                                   precision=jax.lax.Precision.HIGHEST)
    return sums
