"""Fine-tuning: a trained backbone, a new head for the new task's classes, and its optimizer.

The head is the model's classifier layer, named by the model class's `HEAD` attribute (`fc2`
for `cnn`, `head` for the ResNets); everything else is the backbone. Modes (`finetune.mode`):
  linear_probe  only the head learns; the backbone and its BatchNorm statistics stay exactly as
                restored (the network runs in inference mode); `unfreeze_after_epochs` N > 0
                switches to `full` from epoch N+1 on
  full          every layer learns, the backbone at `backbone_lr_scale` x the learning rate
                (an Optax partition: one optimizer for the head, one for the backbone)
"""

import jax
import optax
from flax import nnx
from ml_collections import ConfigDict

from jaxcnn import checkpoint
from jaxcnn.errors import UserError
from jaxcnn.optim import make_optimizer


def head_name(model: nnx.Module) -> str:
    """The attribute holding `model`'s classifier layer."""
    name = getattr(type(model), "HEAD", None)
    if name is None or not isinstance(getattr(model, name, None), nnx.Linear):
        raise UserError(f"{type(model).__name__} names no linear head: set its class attribute "
                        "HEAD to the name of its classifier layer")
    return name


def replace_head(model: nnx.Module, num_classes: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """Swap `model`'s head for a freshly initialised one with `num_classes` outputs (in place)."""
    name = head_name(model)
    old = getattr(model, name)
    setattr(model, name, nnx.Linear(old.in_features, num_classes, dtype=old.dtype,
                                    param_dtype=old.param_dtype, rngs=rngs))
    return model


def load_backbone(model: nnx.Module, path: str) -> nnx.Module:
    """Copy every parameter and BatchNorm statistic but the head from checkpoint `path` (in place).

    `path` is a run's workdir (its latest checkpoint) or a checkpoint directory. An array the
    checkpoint lacks, or one whose shape differs, is a UserError naming it and both shapes.
    """
    head = head_name(model)
    arrays, _ = checkpoint.load_arrays(path)
    where = checkpoint.resolve(path)
    state = nnx.state(model)
    leaves, treedef = _flatten(state)
    new = []
    for keys, x in leaves:
        name = checkpoint.path_name(keys)
        if name.split("/")[0] == head:
            new.append(x)
            continue
        # a run's checkpoint holds a TrainState; `checkpoint.save(path, nnx.state(model))` not
        saved = next((arrays[k] for k in (f"params/{name}", f"model_state/{name}", name)
                      if k in arrays), None)
        if saved is None:
            raise UserError(f"checkpoint {where} has no {name}: it was trained with a "
                            "different model; use the same model.name")
        if saved.shape != x.shape:
            raise UserError(f"checkpoint {where} does not fit the model: {name} has shape "
                            f"{saved.shape} in the checkpoint but {x.shape} in the model")
        new.append(saved.astype(x.dtype))
    nnx.update(model, treedef.unflatten(new))
    return model


def param_labels(params: nnx.State, head: str):
    """`"head"` for the head's parameters, `"backbone"` for the rest (optax.multi_transform)."""
    leaves, treedef = _flatten(params)
    return treedef.unflatten(["head" if checkpoint.path_name(k).split("/")[0] == head
                              else "backbone" for k, _ in leaves])


def make_finetune_optimizer(config: ConfigDict, schedule: optax.Schedule, steps_per_epoch: int,
                            head: str) -> optax.GradientTransformation:
    """The run's optimizer for the head; for the backbone: frozen, or at a scaled learning rate."""
    f = config.finetune
    scale, unfreeze_step = f.backbone_lr_scale, f.unfreeze_after_epochs * steps_per_epoch
    if f.mode == "linear_probe" and not unfreeze_step:
        backbone = optax.set_to_zero()  # exact: the backbone never moves, and has no state
    else:
        def backbone_schedule(step):
            lr = scale * schedule(step)
            # linear_probe with unfreezing: learning rate 0 (no update at all) until then.
            return lr if f.mode == "full" else (step >= unfreeze_step) * lr
        backbone = make_optimizer(config.optim, backbone_schedule)
    return optax.multi_transform({"head": make_optimizer(config.optim, schedule),
                                  "backbone": backbone},
                                 lambda params: param_labels(params, head))


def frozen_in_epoch(config: ConfigDict, epoch: int) -> bool:
    """Whether the backbone is frozen (inference-mode BatchNorm) in 0-based `epoch`."""
    f = config.finetune
    return (bool(f.init_from) and f.mode == "linear_probe"
            and (not f.unfreeze_after_epochs or epoch < f.unfreeze_after_epochs))


def _flatten(tree):
    return jax.tree_util.tree_flatten_with_path(tree)
