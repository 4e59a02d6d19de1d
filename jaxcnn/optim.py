"""Optimizers and learning-rate schedules from the `optim` config group, through Optax."""

import optax
from ml_collections import ConfigDict

from jaxcnn.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear", "onecycle")


def make_schedule(cfg: ConfigDict, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """Learning rate per step. Warmup is linear from 0 over `warmup_epochs`.

    constant: lr after warmup; cosine: cosine decay to 0; linear: linear decay to 0;
    onecycle: linear up to lr over `warmup_epochs` (default 30% of the run), then linear to 0.
    """
    lr, total = cfg.learning_rate, max(1, steps_per_epoch * epochs)
    if not lr > 0:
        raise UserError(f"optim.learning_rate must be > 0, got {lr}")
    if cfg.schedule not in SCHEDULES:
        raise UserError(f"unknown optim.schedule {cfg.schedule!r}: use one of "
                        f"{', '.join(SCHEDULES)}")
    warmup_epochs = cfg.warmup_epochs
    if cfg.schedule == "onecycle" and not warmup_epochs:
        warmup_epochs = 0.3 * epochs
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(1, total - warmup))
    else:
        main = optax.linear_schedule(lr, 0.0, max(1, total - warmup))
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg: ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """adam (the seed's), adamw (decoupled decay) or sgd (momentum, optional nesterov).

    For adam and sgd `weight_decay` is PyTorch-style L2: added to the gradient before the update.
    """
    name, wd = cfg.name, cfg.weight_decay
    if wd < 0:
        raise UserError(f"optim.weight_decay must be >= 0, got {wd}")
    if name == "adam":
        tx = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif name == "adamw":
        return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd)
    elif name == "sgd":
        tx = optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
    else:
        raise UserError(f"unknown optim.name {name!r}: use one of {', '.join(OPTIMIZERS)}")
    if wd:
        tx = optax.chain(optax.add_decayed_weights(wd), tx)
    return tx
