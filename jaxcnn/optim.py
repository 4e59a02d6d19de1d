"""Optimizers and learning-rate schedules from the `optim` config group, through Optax."""

import jax
import ml_collections
import optax
from flax import nnx
from ml_collections import ConfigDict

from jaxcnn.errors import UserError
from jaxcnn.lookahead import lookahead

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear", "onecycle", "airbench")


def make_schedule(cfg: ConfigDict, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """Learning rate per step. Warmup is linear from 0 over `warmup_epochs`.

    constant: lr after warmup; cosine: cosine decay to 0; linear: linear decay to 0;
    onecycle: linear up to lr over `warmup_epochs` (default 30% of the run), then linear to 0;
    airbench: 0.2 x lr -> lr over the first 23% of the steps, then linearly to 0.07 x lr (relative
    to the step count, so it scales with the epochs; `warmup_epochs` is not used).
    """
    lr, total = cfg.learning_rate, max(1, steps_per_epoch * epochs)
    if not lr > 0:
        raise UserError(f"optim.learning_rate must be > 0, got {lr}")
    if cfg.schedule not in SCHEDULES:
        raise UserError(f"unknown optim.schedule {cfg.schedule!r}: use one of "
                        f"{', '.join(SCHEDULES)}")
    if cfg.schedule == "airbench":
        up = max(1, int(0.23 * total))
        return optax.join_schedules([optax.linear_schedule(0.2 * lr, lr, up),
                                     optax.linear_schedule(lr, 0.07 * lr, max(1, total - up))],
                                    [up])
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
    It applies to every parameter (PyTorch's default) unless `decay_norm_and_bias` is false.
    """
    name, wd = cfg.name, cfg.weight_decay
    if wd < 0:
        raise UserError(f"optim.weight_decay must be >= 0, got {wd}")
    mask = None if cfg.get("decay_norm_and_bias", True) else _kernels_only
    if name == "adam":
        tx = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif name == "adamw":
        return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd,
                           mask=mask)
    elif name == "sgd":
        tx = optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
    else:
        raise UserError(f"unknown optim.name {name!r}: use one of {', '.join(OPTIMIZERS)}")
    if wd:
        tx = optax.chain(optax.add_decayed_weights(wd, mask), tx)
    return tx


def _kernels_only(params):
    """The decay mask of `optim.decay_norm_and_bias=false`: conv and dense kernels (every
    parameter of 2 or more dimensions) decay; biases and BatchNorm scales and offsets (1-D) do
    not, as in Goyal et al. 2017, sec. 5.1 (their ResNet-50 recipe)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_train_optimizer(config: ConfigDict, schedule: optax.Schedule, model: nnx.Module,
                         steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimizer of a run: `make_optimizer`, with airbench's refinements when set.

    optim.decoupled_hparams  (sgd) learning_rate and weight_decay in airbench's units: per 1024
        examples, the step independent of the momentum, the decay independent of the learning
        rate. On the mean loss of a batch of B: step = lr x B / 1024 / (1 + 1 / (1 - momentum)),
        L2 coefficient = weight_decay / lr.
    optim.bias_lr_scale  learning rate x this for BatchNorm parameters (airbench's
        `bias_scaler`), their L2 coefficient / this: the decay step does not grow with it.
    optim.whiten_bias_epochs  parameters of modules with `OPTIM_GROUP = "whiten"` (airbench's
        whitening bias) learn for the first N epochs only, then never move again; 0 = always.
    optim.lookahead_every  wrap everything in `lookahead.lookahead` (airbench94's weight
        averaging: every N steps from epoch `optim.lookahead_start_epochs` on, and a copy-back
        after each epoch); 0 = off.
    """
    o = config.optim
    lr_scale, wd = 1.0, o.weight_decay
    if o.decoupled_hparams:
        if o.name != "sgd" or not 0 <= o.momentum < 1:
            raise UserError("optim.decoupled_hparams is airbench's SGD parametrisation: use "
                            f"optim.name=sgd and 0 <= optim.momentum < 1 (got {o.name}, "
                            f"{o.momentum})")
        lr_scale = config.train.batch_size / (1024 * (1 + 1 / (1 - o.momentum)))
        wd = o.weight_decay / o.learning_rate

    def group(scale: float, until_step: int = 0) -> optax.GradientTransformation:
        def group_schedule(step):
            lr = schedule(step) * (lr_scale * scale)
            return lr * (step < until_step) if until_step else lr
        cfg = ml_collections.ConfigDict(o.to_dict())
        cfg.weight_decay = wd / scale
        return make_optimizer(cfg, group_schedule)

    groups = {"other": group(1.0)}
    if o.bias_lr_scale != 1:
        groups["norm"] = group(o.bias_lr_scale)
    if o.whiten_bias_epochs:
        groups["whiten"] = group(1.0, o.whiten_bias_epochs * steps_per_epoch)
    tx = groups["other"]
    if len(groups) > 1:
        tx = optax.multi_transform(groups, param_labels(model, tuple(groups)))
    if o.lookahead_every:
        tx = lookahead(tx, o.lookahead_every, steps_per_epoch, config.train.epochs,
                       o.lookahead_start_epochs)
    return tx


def param_labels(model: nnx.Module, groups: tuple[str, ...]):
    """`params -> labels` for optax.multi_transform: "norm" for the parameters of BatchNorm
    layers, a module class's `OPTIM_GROUP` for its parameters, "other" for the rest (and for a
    label not in `groups`)."""
    owner = {}
    for path, module in nnx.iter_modules(model):
        name = "norm" if isinstance(module, nnx.BatchNorm) else getattr(module, "OPTIM_GROUP", "")
        if name in groups:
            owner[tuple(path)] = name

    def labels(params):
        def label(path, _):
            keys = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
            return owner.get(keys[:-1], "other")
        return jax.tree_util.tree_map_with_path(label, params)

    return labels
