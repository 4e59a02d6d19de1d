"""airbench94's lookahead: from epoch `start` on, every k steps pull an average of the weights
along and reset the weights to it; after every epoch reset them to it again.

What airbench94 does (KellerJordan/cifar10-airbench, `airbench94.py`: class `LookaheadState`,
and the lines of `main` that call it), with t the 1-based optimizer step of T in the run
(airbench: T = ceil(48 x 9.9) = 476, k = 5, start = 3, rate 0.95, power 3):
  - nothing until the loop's 0-based epoch is >= start (3: the first three epochs run without);
  - at the first step t of those epochs with t % k == 0 the state is created: the average is a
    copy of the weights after that step (`LookaheadState(model)`), the weights are unchanged;
  - at each later such step, `update(model, decay=rho)` with rho = rate**k x (t / T)**power:
    average <- rho x average + (1 - rho) x weights (`ema_param.lerp_(net_param, 1 - decay)`),
    then weights <- average (`net_param.copy_(ema_param)`);
  - after every epoch's last step (the last epoch's is step T), once the state exists,
    `update(model, decay=1.0)`: the average is kept and copied into the weights, so the steps
    since the last sync are discarded and every evaluation, the final one included, sees it;
  - it averages every floating-point entry of the network's `state_dict()`: the parameters and
    the BatchNorm running means and variances (not the integer `num_batches_tracked`), and
    touches nothing in the optimizer (SGD's momentum buffers carry on).
Here the same happens in terms of optimizer steps, with T = steps per epoch x epochs (whole
epochs: jaxcnn's 10 epochs are 480 steps). One difference: only the parameters are averaged,
since the BatchNorm statistics live outside the optimizer (the train step updates them). During
training that fades within a few steps (BatchNorm momentum 0.6), but an evaluation right after
a copy-back, the final one included, sees the averaged weights with the statistics of the last
few batches' weights, where airbench94 averages those too. Matching it would need the train
step (jaxcnn/steps.py) to hand the statistics to the lookahead.

`optax.lookahead` is not this: its slow-weight step size is constant, it wants its parameters
wrapped in `LookaheadParams`, and it has no start or epoch resets. This is a plain optax wrapper
instead, its average kept in the optimizer state (so checkpoints and resuming cover it); whether
the average exists yet is a function of the step count, so the state is (inner, ema, count).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LookaheadState(NamedTuple):
    inner: optax.OptState
    ema: optax.Params  # the running average of the parameters (unused before its first sync)
    count: jax.Array  # int32 scalar: steps taken


def decay(step: jax.Array, total_steps: int, every: int, rate: float = 0.95,
          power: float = 3.0) -> jax.Array:
    """airbench's averaging weight at 1-based `step`: rate**every * (step / total)**power."""
    return rate ** every * (step / total_steps) ** power


def first_sync(every: int, steps_per_epoch: int, start_epochs: int) -> int:
    """The 1-based step that creates the average: the first multiple of `every` in epoch
    `start_epochs` (0-based) or later."""
    first_step = start_epochs * steps_per_epoch + 1
    return -(-first_step // every) * every


def lookahead(inner: optax.GradientTransformation, every: int, steps_per_epoch: int,
              epochs: int, start_epochs: int = 0, rate: float = 0.95,
              power: float = 3.0) -> optax.GradientTransformation:
    """Wrap `inner` in airbench94's lookahead (module docstring): its updates, plus the jumps to
    the running average. Updates of parameters `inner` leaves at zero stay zero only between
    syncs: the average pulls every parameter, as airbench's does."""
    if every < 1 or steps_per_epoch < 1 or epochs < 1 or start_epochs < 0:
        raise ValueError(f"lookahead needs every, steps_per_epoch, epochs >= 1 and start_epochs "
                         f">= 0, got {every}, {steps_per_epoch}, {epochs}, {start_epochs}")
    total = steps_per_epoch * epochs
    first = first_sync(every, steps_per_epoch, start_epochs)

    def init(params):
        return LookaheadState(inner.init(params), jax.tree.map(jnp.copy, params),
                              jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("lookahead needs the parameters: call update(grads, state, params)")
        updates, inner_state = inner.update(updates, state.inner, params)
        step = state.count + 1
        new = optax.apply_updates(params, updates)
        on = step >= first  # the average exists after this step
        sync = on & (step % every == 0)
        d = jnp.where(step == first, 0.0, decay(step, total, every, rate, power))  # 0: create
        ema = jax.tree.map(lambda e, p: jnp.where(sync, d * e + (1 - d) * p, e).astype(e.dtype),
                           state.ema, new)
        # creating the average leaves the weights as they are; an epoch's end copies it back
        reset = (sync & (step != first)) | (on & ((step % steps_per_epoch == 0) | (step == total)))
        out = jax.tree.map(lambda e, p, u: jnp.where(reset, e - p, u).astype(u.dtype),
                           ema, params, updates)
        return out, LookaheadState(inner_state, ema, step)

    return optax.GradientTransformation(init, update)
