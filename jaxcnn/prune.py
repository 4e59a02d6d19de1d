"""Magnitude pruning as an Optax wrapper: masks in the optimizer state, so they are checkpointed
with it and a resumed run continues exactly.

    tx = prune.pruned(tx, config.prune, updates_per_epoch)

At the start of each epoch from `prune.start_epoch` to `prune.end_epoch` the masks are set
anew from the weights' magnitudes: the smallest |w| of every conv and dense kernel (`scope=layer`)
or of all of them together (`scope=global`) are zeroed, the fraction growing as a cubic from 0
to `prune.sparsity` (Zhu & Gupta 2017, "To prune, or not to prune"); start = end prunes once.
Between mask updates a pruned weight stays exactly 0: its gradient is masked before the inner
optimizer (so no momentum builds up for it) and the update puts it back to 0. Biases, BatchNorm
and frozen weights are never pruned.

One-shot pruning of a trained run, then fine-tuning: train with `finetune.init_from=<run>`,
`finetune.keep_head=true`, `prune.sparsity=0.9` (start = end = 0).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict


class PruneState(NamedTuple):
    count: jax.Array  # int32: updates taken
    masks: optax.Params  # 1 keeps a weight, 0 prunes it; a scalar 1 for what is never pruned
    inner: optax.OptState


def _names(path) -> list[str]:
    return [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]


def prunable(path, x) -> bool:
    """Conv and dense kernels: a `kernel` of 2 or more dimensions."""
    names = _names(path)
    return bool(names) and names[-1] == "kernel" and jnp.ndim(x) >= 2


def sparsity_at(epoch, cfg: ConfigDict) -> jax.Array:
    """The target fraction of zero weights from the start of 0-based `epoch` (cubic ramp)."""
    span = max(cfg.end_epoch - cfg.start_epoch, 1)
    done = jnp.clip((epoch - cfg.start_epoch + (cfg.end_epoch == cfg.start_epoch)) / span, 0, 1)
    return cfg.sparsity * (1 - (1 - done) ** 3)


def masks_for(params, sparsity: jax.Array, scope: str):
    """Masks that zero the `sparsity` fraction of smallest-magnitude prunable weights."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    chosen = [jnp.abs(x).astype(jnp.float32) for p, x in leaves if prunable(p, x)]

    def threshold(magnitudes):  # the k-th smallest; weights at or below it are pruned
        flat = jnp.sort(magnitudes.ravel())
        k = jnp.floor(sparsity * flat.size).astype(jnp.int32)
        return jnp.where(k > 0, flat[jnp.maximum(k - 1, 0)], -1.0)

    if scope == "global":
        t = threshold(jnp.concatenate([m.ravel() for m in chosen]))
        limits = [t] * len(chosen)
    else:
        limits = [threshold(m) for m in chosen]
    it = iter(zip(chosen, limits, strict=True))
    masks = [(lambda m, t: (m > t).astype(x.dtype))(*next(it)) if prunable(p, x)
             else jnp.ones((), x.dtype) for p, x in leaves]
    return treedef.unflatten(masks)


def pruned(inner: optax.GradientTransformation, cfg: ConfigDict, updates_per_epoch: int
           ) -> optax.GradientTransformation:
    """`inner` with magnitude pruning as `cfg` (the config's `prune` group) schedules it."""
    first, last = cfg.start_epoch * updates_per_epoch, cfg.end_epoch * updates_per_epoch

    def init(params):
        ones = jax.tree.map(lambda x: jnp.ones((), x.dtype), params)
        full = jax.tree_util.tree_map_with_path(
            lambda p, x, o: jnp.ones_like(x) if prunable(p, x) else o, params, ones)
        return PruneState(jnp.zeros((), jnp.int32), full, inner.init(params))

    def update(grads, state, params):
        step = state.count
        due = (step >= first) & (step <= last) & (step % updates_per_epoch == 0)
        masks = jax.lax.cond(
            due, lambda: masks_for(params, sparsity_at(step // updates_per_epoch, cfg),
                                   cfg.scope),
            lambda: state.masks)
        grads = jax.tree.map(lambda g, m: g * m, grads, masks)
        updates, inner_state = inner.update(grads, state.inner, params)
        # A pruned weight's update is minus the weight, so it lands exactly on 0; the others
        # get the inner optimizer's update untouched.
        updates = jax.tree.map(lambda u, p, m: jnp.where(m > 0, u, -p), updates, params, masks)
        return updates, PruneState(step + 1, masks, inner_state)

    return optax.GradientTransformation(init, update)


def sparsity_of(params) -> dict:
    """Per prunable kernel and overall: the fraction of weights that are exactly 0."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    out, zeros, total = {}, 0, 0
    for p, x in leaves:
        if prunable(p, x):
            z = int((jnp.asarray(x) == 0).sum())
            out["/".join(_names(p))] = z / x.size
            zeros, total = zeros + z, total + x.size
    out["total"] = zeros / max(total, 1)
    return out
