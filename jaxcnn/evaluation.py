"""The one evaluation path: metrics of a model on a labelled split, on any mesh.

`Evaluator` keeps the split, padded to whole batches, on the device and runs `steps.eval_step`
over every batch in one compiled loop (static trip count): every image counts exactly once
(the padding is masked out), whatever the device count. The engine evaluates through it after
every epoch (and with test-time augmentation at the end), and so do `evaluate` (research code),
`scripts/evaluate.py` and the plots.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx  # noqa: F401 - in type hints
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxcnn import ema, parallel
from jaxcnn.data.pipeline import Batch
from jaxcnn.steps import (
    StepConfig,
    TrainState,
    create_state,
    eval_step,
    num_outputs,
    step_config,
)


def pad_for_eval(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Pad to a whole number of batches; the mask counts each real image exactly once."""
    n = len(labels)
    pad = -n % batch_size
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    return images, labels, mask


def _eval_split(state: TrainState, images, labels, mask, *, cfg: StepConfig, batch_size: int,
                sharding) -> dict:
    """Summed metrics over every batch of the padded split: one compiled loop."""
    state = ema.evaluated(state)  # the weights' moving average, when the run keeps one
    k = cfg.num_classes
    zeros = {"loss": jnp.zeros(()), "correct": jnp.zeros(()), "count": jnp.zeros(()),
             "confusion": jnp.zeros((k, k))}

    def body(i, sums):
        batch = Batch(*(jax.lax.dynamic_slice_in_dim(a, i * batch_size, batch_size)
                        for a in (images, labels)))
        batch = jax.lax.with_sharding_constraint(batch, sharding)
        m = jax.lax.dynamic_slice_in_dim(mask, i * batch_size, batch_size)
        return jax.tree.map(jnp.add, sums, eval_step(state, batch, m, cfg))

    return jax.lax.fori_loop(0, len(mask) // batch_size, body, zeros)


class Evaluator:
    """`evaluator(state) -> {loss, accuracy, count, confusion_matrix}` over one split."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, cfg: StepConfig,
                 batch_size: int, mesh: Mesh):
        self.count = len(labels)
        repl = parallel.replicated(mesh)
        # The split lives on every device; each batch is cut from it and spread over the mesh.
        self.split = jax.device_put(pad_for_eval(images, labels, batch_size), repl)
        self._run = jax.jit(functools.partial(_eval_split, cfg=cfg, batch_size=batch_size,
                                              sharding=parallel.batch_sharding(mesh)),
                            in_shardings=(repl, repl, repl, repl), out_shardings=repl)

    def compile(self, state: TrainState) -> None:
        """Compile ahead of time, so that a timed evaluation does not."""
        self._run.lower(state, *self.split).compile()

    def __call__(self, state: TrainState) -> dict:
        sums = parallel.to_host(self._run(state, *self.split))
        count = float(sums["count"])
        assert round(count) == self.count, (count, self.count)  # each image once, padding masked
        return {"loss": float(sums["loss"]) / max(count, 1.0),
                "accuracy": float(sums["correct"]) / max(count, 1.0),
                "count": self.count,
                "confusion_matrix": np.rint(sums["confusion"]).astype(np.int64)}


def eval_batch_size(config: ConfigDict, mesh: Mesh, count: int) -> int:
    """`train.eval_batch_size`, at most the `count` images evaluated (a larger batch would be
    all padding), rounded up to a multiple of the device count."""
    size = min(config.train.eval_batch_size, max(count, 1))
    return -(-size // mesh.size) * mesh.size


def evaluate(model: nnx.Module, images: np.ndarray, labels: np.ndarray, config: ConfigDict,
             *, devices="all") -> dict:
    """Loss, accuracy, count and confusion matrix of `model` (inference mode) on uint8 `images`.

    Normalisation, batch size and test-time augmentation come from `config` (`data.mean`,
    `data.std`, `train.eval_batch_size`, `train.tta_level`), as in the final evaluation of
    training, so a run's model gives exactly the run's final test accuracy.
    """
    mesh = parallel.make_mesh(parallel.select_devices(devices))
    graphdef, state = create_state(model, None)
    cfg = step_config(config, graphdef, None, images.shape[-1],
                      num_outputs(model, images.shape[1:]), tta_level=config.train.tta_level)
    state = jax.device_put(state, parallel.replicated(mesh))
    return Evaluator(images, labels, cfg, eval_batch_size(config, mesh, len(labels)),
                     mesh)(state)
