"""airbench's lookahead: every k steps, pull an average of the weights along and reset to it.

After every k-th optimizer step t (of T in the run):
    ema    <- decay(t) * ema + (1 - decay(t)) * params
    params <- ema
with decay(t) = rate**k * (t / T)**3 (airbench: rate 0.95, k 5): the average barely lags early
on, when the weights move fast, and smooths over ~4 syncs by the end. After step T the weights
are set to the average once more (airbench's final `update(decay=1.0)`), which discards the
steps since the last sync.

`optax.lookahead` is not this: its slow-weight step size is constant, it wants its parameters
wrapped in `LookaheadParams`, and it has no final reset. This is a plain optax wrapper instead,
its average kept in the optimizer state (so checkpoints and resuming cover it). Unlike airbench,
the BatchNorm running statistics are not averaged: they are not parameters (with airbench's BN
momentum 0.6 they follow the weights within a few steps anyway).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LookaheadState(NamedTuple):
    inner: optax.OptState
    ema: optax.Params  # the running average of the parameters
    count: jax.Array  # int32 scalar: steps taken


def decay(step: jax.Array, total_steps: int, every: int, rate: float = 0.95) -> jax.Array:
    """airbench's averaging weight at 1-based `step`: rate**every * (step / total)**3."""
    return rate ** every * (step / total_steps) ** 3


def lookahead(inner: optax.GradientTransformation, every: int, total_steps: int,
              rate: float = 0.95) -> optax.GradientTransformation:
    """Wrap `inner`: its updates, plus every `every` steps (and after step `total_steps`) the
    jump to the running average. Updates of parameters `inner` leaves at zero stay zero only
    between syncs: the average pulls every parameter, as airbench's does."""
    if every < 1 or total_steps < 1:
        raise ValueError(f"lookahead needs every >= 1 and total_steps >= 1, got {every}, "
                         f"{total_steps}")

    def init(params):
        return LookaheadState(inner.init(params), jax.tree.map(jnp.copy, params),
                              jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("lookahead needs the parameters: call update(grads, state, params)")
        updates, inner_state = inner.update(updates, state.inner, params)
        step = state.count + 1
        new = optax.apply_updates(params, updates)
        d = decay(step, total_steps, every, rate)
        sync = step % every == 0
        ema = jax.tree.map(lambda e, p: jnp.where(sync, d * e + (1 - d) * p, e).astype(e.dtype),
                           state.ema, new)
        reset = sync | (step == total_steps)
        out = jax.tree.map(lambda e, p, u: jnp.where(reset, e - p, u).astype(u.dtype),
                           ema, params, updates)
        return out, LookaheadState(inner_state, ema, step)

    return optax.GradientTransformation(init, update)
