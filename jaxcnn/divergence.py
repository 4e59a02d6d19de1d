"""Divergence, fully: a run stops (one line, exit 2) before it saves or reports anything broken.

Checked, on every process alike (each reads the same replicated numbers, so all stop together):
- the train loss: not finite at any step (the step function records the first such step on
  the device), or a read-out of the epoch's running loss above `train.divergence_factor` x the
  running mean of the earlier read-outs (log points and epoch ends);
- the parameters and BatchNorm statistics: not finite, checked before every save, so every
  checkpoint on disk is finite and "the last good checkpoint" is simply the latest;
- the evaluation metrics: not finite (a model whose logits overflow on the test set).
"""

import math

import jax
import jax.numpy as jnp

from jaxcnn import checkpoint, parallel
from jaxcnn.errors import UserError

# A run's first read-out is the reference for the next (a jump at step 2 is divergence too).
WARMUP_READS = 1


class Watch:
    """The train loss's running value over a run's read-outs, and the checks against it."""

    def __init__(self, factor: float, steps_per_epoch: int, ckpt_dir: str | None):
        self.factor, self.spe, self.ckpt_dir = factor, steps_per_epoch, ckpt_dir
        self.mean, self.reads = 0.0, 0

    def train(self, sums: dict, step: int) -> None:
        """`sums`: the epoch's host sums after `step` steps (`workdir.sums_to_host`)."""
        if sums["first_bad"] >= 0:
            self.stop(f"the train loss is not finite at step {sums['first_bad']} (epoch "
                      f"{(sums['first_bad'] - 1) // self.spe + 1})")
        if not sums["count"]:
            return  # an epoch's sums before its first step: nothing read yet
        loss = sums["loss"]
        if not math.isfinite(loss):
            self.stop(f"the train loss is not finite at step {step}")
        if self.reads >= WARMUP_READS and loss > self.factor * self.mean:
            self.stop(f"the train loss reached {loss:.4g} at step {step}, over "
                      f"train.divergence_factor={self.factor:g} x its running mean "
                      f"{self.mean:.4g}")
        self.reads += 1
        # a mean over all read-outs so far: a slow rise is allowed, a jump is not
        self.mean += (loss - self.mean) / self.reads

    def metrics(self, ev: dict, epoch: int) -> None:
        bad = [k for k, v in ev.items() if not math.isfinite(v)]
        if bad:
            self.stop(f"the test {', '.join(bad)} is not finite after epoch {epoch + 1}")

    def state(self, state, step: int) -> None:
        """Refuse to go on (and to save) with non-finite parameters or statistics."""
        trees = {"params": state.params, "model_state": state.model_state}
        bad = int(parallel.to_host(_first_nonfinite(trees)))
        if bad >= 0:
            keys = jax.tree_util.tree_flatten_with_path(trees)[0][bad][0]
            self.stop(f"{checkpoint.path_name(keys)} is not finite after step {step}")

    def stop(self, what: str):
        last = checkpoint.latest_step(self.ckpt_dir) if self.ckpt_dir else None
        good = (f"the last good checkpoint, {self.ckpt_dir}/{last}, is where a rerun resumes"
                if last is not None else "no checkpoint was saved")
        raise UserError(f"training diverged: {what}; {good}; lower optim.learning_rate or add "
                        "warmup")


@jax.jit
def _first_nonfinite(trees) -> jax.Array:
    """The index (in flattening order) of the first leaf with a non-finite value, or -1."""
    leaves = jax.tree.leaves(trees)
    ok = jnp.stack([jnp.isfinite(x).all() if jnp.issubdtype(x.dtype, jnp.inexact)
                    else jnp.bool_(True) for x in leaves])
    return jnp.where(ok.all(), -1, jnp.argmin(ok))
