"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3; fastai's
`lr_find`): train from the initial weights while the learning rate grows geometrically from
`low` to `high`, one rate per optimizer step, and watch the loss.

    python scripts/lr_find.py --config configs/digits_cnn.py --low 1e-6 --high 1 --steps 100

The run is the config's own (`train.build`: its model, data, batch size, augmentation and
optimizer, `optim.learning_rate` replaced by the rising rate), through the engine's feed and
pure train step. The loss is smoothed as fastai does (an exponential average, bias-corrected),
over a window 1 / (1 - beta) of a fifth of the steps (fastai's fixed beta 0.98 lags by half of
a 100-step test; 0.98 is the most here too). The test stops early once the smoothed loss is not
finite, exceeds `diverge` x its minimum, or, having fallen 10% below its first value, climbs back
above it. The suggestion is the rate of steepest descent of the smoothed loss against
log(rate), among the points up to its minimum: a rate where the loss still falls fastest, below
the one where it turns (fastai's `steep`; not min / 10).

Gradient accumulation, pruning and the EMA of the weights play no part here, and
`optim.lookahead_every` is switched off (its resets would show as jumps in the loss); a
fine-tuning config's backbone is restored, but the rate is one for every layer.
"""

import json
import math
import os
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from jaxcnn import parallel
from jaxcnn.errors import UserError
from jaxcnn.optim import make_train_optimizer
from jaxcnn.steps import create_state, initial_train_sums

DIVERGE = 4.0  # stop once the smoothed loss exceeds this x its minimum (fastai's choice)
CHECK_EVERY = 8  # steps dispatched between reads of their losses


class RangeTest(NamedTuple):
    lrs: np.ndarray  # the rate of each step taken
    losses: np.ndarray  # its training loss (the batch mean, before the step's update)
    smoothed: np.ndarray  # the bias-corrected exponential average of `losses`
    suggested: float  # the rate of steepest descent of `smoothed` (see the module docstring)
    stopped: str  # "diverged" (above DIVERGE x the minimum, or not finite) or "steps"


def rates(low: float, high: float, steps: int) -> np.ndarray:
    """`steps` rates from `low` to `high`, each the previous x (high / low)**(1 / (steps - 1))."""
    check(low, high, steps)
    return low * (high / low) ** (np.arange(steps) / (steps - 1))


def check(low: float, high: float, steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise UserError(f"the range test needs at least 2 steps, got {steps!r}: give --steps, "
                        "e.g. 100")
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise UserError(f"the range test needs 0 < low < high (finite), got low={low:g} "
                        f"high={high:g}: e.g. --low 1e-7 --high 10")


def beta_for(steps: int) -> float:
    """The loss smoothing of a `steps`-step test: an average over about a fifth of them."""
    return float(np.clip(1 - 5 / steps, 0.5, 0.98))


def smooth(losses: np.ndarray, beta: float) -> np.ndarray:
    """fastai's smoothing: avg_i = beta avg_(i-1) + (1 - beta) loss_i, divided by 1 - beta**i."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * float(loss)
        out.append(avg / (1 - beta ** i))
    return np.asarray(out)


def _diverged_at(smoothed: np.ndarray, diverge: float) -> int | None:
    """The number of steps up to and including the first whose smoothed loss is not finite,
    above `diverge` x the lowest so far, or, once that lowest is 10% below the first, back
    above the first (the rate undoes all the learning: Adam's dead networks return to the
    chance-level loss rather than blow up); None if none is."""
    best = np.minimum.accumulate(np.where(np.isfinite(smoothed), smoothed, np.inf))
    start = smoothed[0]
    bad = (~np.isfinite(smoothed) | (smoothed > diverge * best)
           | ((best < 0.9 * start) & (smoothed > start)))
    return int(np.argmax(bad)) + 1 if bad.any() else None


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    """The rate where the smoothed loss falls fastest per unit of log(rate), before its minimum
    (central differences: each point's slope looks one step either side)."""
    turn = int(np.argmin(smoothed))
    if turn < 2:  # the loss never fell: the range starts too high
        return float(lrs[0])
    slope = np.gradient(smoothed, np.log(lrs))
    return float(lrs[int(np.argmin(slope[:turn]))])


def range_test(config: ConfigDict, *, low: float = 1e-7, high: float = 10.0, steps: int = 100,
               diverge: float = DIVERGE, beta: float | None = None, dataset=None, model=None,
               devices="all") -> RangeTest:
    """The range test of `config`'s run (`dataset`, `model`, `devices` as `train.build` takes)."""
    from jaxcnn.train import build
    lrs = rates(low, high, steps)
    beta = beta_for(steps) if beta is None else beta
    if not diverge > 1:
        raise UserError(f"the divergence factor must be > 1, got {diverge:g}")
    config = config.copy_and_resolve_references()
    config.optim.lookahead_every = 0
    job, state = build(config, dataset=dataset, model=model, devices=devices)
    model = nnx.merge(job.graphdef, state.params, state.model_state)
    tx = make_train_optimizer(config, lambda step: low * (high / low) ** (step / (steps - 1)),
                              model, job.steps_per_epoch)
    cfg = job.steps._replace(tx=tx)
    state = jax.device_put(create_state(model, tx)[1], parallel.replicated(job.mesh))
    spe, repl, pending, losses = job.steps_per_epoch, parallel.replicated(job.mesh), [], []
    for i in range(steps):
        sums = jax.device_put(initial_train_sums(), repl)
        state, sums = job.feed.advance(state, sums, i // spe, i % spe, 1, cfg, job.keys)
        pending.append(sums)
        if len(pending) < CHECK_EVERY and i < steps - 1:
            continue  # steps are dispatched ahead; their losses are read a few at a time
        losses += [float(s["loss"]) / max(float(s["count"]), 1.0) for s in pending]
        pending = []
        n = _diverged_at(smooth(np.asarray(losses), beta), diverge)
        if n is not None:
            losses = losses[:n]
            break
    n = len(losses)
    stopped = "steps" if n == steps and _diverged_at(smooth(np.asarray(losses), beta),
                                                    diverge) is None else "diverged"
    smoothed = smooth(np.asarray(losses), beta)
    fine = np.isfinite(smoothed)
    return RangeTest(lrs[:n], np.asarray(losses), smoothed,
                     suggest(lrs[:n][fine], smoothed[fine]) if fine.any() else float(lrs[0]),
                     stopped)


def write(result: RangeTest, out_dir: str, title: str = "") -> list[str]:
    """lr_find.json, lr_find.csv (step, lr, loss, smoothed loss) and lr_find.png in `out_dir`."""
    from jaxcnn import plots
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"lr_find.{ext}") for ext in ("json", "csv", "png")]
    with open(paths[0], "w") as f:
        json.dump({"suggested_lr": result.suggested, "stopped": result.stopped,
                   "suggestion": "steepest descent of the smoothed loss vs log(lr)",
                   "lr": result.lrs.tolist(),
                   "loss": [x if math.isfinite(x) else None for x in result.losses.tolist()],
                   "smoothed_loss": [x if math.isfinite(x) else None
                                     for x in result.smoothed.tolist()]}, f, indent=1)
    with open(paths[1], "w") as f:
        f.write("step,lr,loss,smoothed_loss\n")
        f.writelines(f"{i},{lr:.6g},{loss:.6g},{s:.6g}\n" for i, (lr, loss, s) in
                     enumerate(zip(result.lrs, result.losses, result.smoothed, strict=True)))
    plots.plot_lr_find(result, paths[2], title=title)
    return paths
