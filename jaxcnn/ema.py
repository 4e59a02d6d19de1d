"""An exponential moving average (EMA) of the weights, as an Optax wrapper: the average lives in
the optimizer state, so checkpoints hold it and a resumed run continues it exactly.

    tx = ema.averaged(tx, config.train.ema_decay)  # train.build, inside optax.MultiSteps
    ema.evaluated(state)                            # the TrainState to evaluate and export

After optimizer update t (0-based; with gradient accumulation there is one per `accum` steps,
since optax.MultiSteps keeps its inner state only when it emits an update):
    d_t     = min(decay, (1 + t) / (10 + t))
    average <- d_t * average + (1 - d_t) * params_after_update_t
starting from the initial weights. The warm-up of d_t (0.1 at the first update; TensorFlow's
ExponentialMovingAverage with `num_updates`, tfa's MovingAverage `dynamic_decay`) keeps a
short run's average from being mostly its random initialisation. The average is kept in at
least float32 (a bfloat16 one would not move at decay 0.999) and cast back to each parameter's
dtype when it is used.

With pruning (`prune.pruned` inside this wrapper) the average is masked like the weights: a
pruned weight is exactly 0 in the average too, so an EMA run still exports its zeros.

BatchNorm: only the parameters are averaged; the running statistics used with the average are
the run's own. This is the default of PyTorch's `AveragedModel` (use_buffers=False) and of the
TF Model Garden's EMA optimizer (trainable_weights_only=True); timm's ModelEmaV2 averages the
buffers as well. Here the optimizer sees the parameters only, and the statistics are already
a moving average of recent batches (the zoo's PyTorch-style momentum 0.9: the last ~10);
averaging them again would need the pure train step to hand them to the optimizer. The cost:
with a decay of 0.999 the averaged weights lag ~1,000 updates while the statistics follow the
latest weights, a mismatch that shrinks as training settles (a low learning rate at the end).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcnn import prune
from jaxcnn.steps import TrainState

FIELD = "ema_params"  # EmaState's field of the average: checkpoint paths `.../ema_params/<name>`


class EmaState(NamedTuple):
    count: jax.Array  # int32: updates averaged so far
    ema_params: optax.Params  # the average, in at least float32
    inner: optax.OptState


def decay_at(count: jax.Array, decay: float) -> jax.Array:
    """The averaging weight of update `count` (0-based): min(decay, (1 + t) / (10 + t))."""
    t = count.astype(jnp.float32)
    return jnp.minimum(decay, (1 + t) / (10 + t))


def _wide(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def averaged(inner: optax.GradientTransformation, decay: float
             ) -> optax.GradientTransformation:
    """`inner`, its updates untouched, plus a moving average of the parameters it produces."""
    if not 0 < decay < 1:
        raise ValueError(f"an EMA needs 0 < decay < 1, got {decay}")

    def init(params):
        # a copy, not the parameters' own buffers: the train step donates both
        average = jax.tree.map(lambda p: jnp.copy(_wide(p)), params)
        return EmaState(jnp.zeros((), jnp.int32), average, inner.init(params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("ema.averaged needs the parameters: update(grads, state, params)")
        updates, inner_state = inner.update(updates, state.inner, params)
        new = optax.apply_updates(params, updates)
        d = decay_at(state.count, decay)
        average = jax.tree.map(lambda e, p: d * e + (1 - d) * _wide(p), state.ema_params, new)
        if isinstance(inner_state, prune.PruneState):  # pruned weights are 0 in the average too
            average = jax.tree.map(lambda e, m: jnp.where(m > 0, e, 0).astype(e.dtype),
                                   average, inner_state.masks)
        return updates, EmaState(state.count + 1, average, inner_state)

    return optax.GradientTransformation(init, update)


def find(opt_state) -> EmaState | None:
    """The EmaState inside an optimizer state (wrapped by optax.MultiSteps or not), or None."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaState))
             if isinstance(s, EmaState)]
    if len(found) > 1:
        raise ValueError(f"the optimizer state holds {len(found)} EMAs; wrap it once")
    return found[0] if found else None


def evaluated(state: TrainState) -> TrainState:
    """The state whose weights are evaluated and exported: the EMA of the parameters when the
    run keeps one (`train.ema_decay`), else `state` itself. BatchNorm statistics are the run's."""
    s = find(state.opt_state)
    if s is None:
        return state
    params = jax.tree.map(lambda e, p: e.astype(p.dtype), s.ema_params, state.params)
    return state._replace(params=params)


def checkpoint_weights(arrays: dict) -> dict:
    """A checkpoint's arrays (`checkpoint.load_arrays`, by path) with `params/<name>` replaced by
    the EMA's `opt_state/.../ema_params/<name>` when the run keeps one: what `load_run` loads."""
    marker = f"/{FIELD}/"
    average = {"params/" + k.split(marker, 1)[1]: v for k, v in arrays.items()
               if k.startswith("opt_state/") and marker in k}
    return {**arrays, **average}
