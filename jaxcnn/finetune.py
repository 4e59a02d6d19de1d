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

from jaxcnn import checkpoint, ema
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
    arrays, _ = checkpoint.load_arrays(path)
    arrays = ema.checkpoint_weights(arrays)  # an EMA run's weights are its average
    return checkpoint.copy_into(model, arrays, checkpoint.resolve(path), skip=head_name(model))


def load_whole(model: nnx.Module, path: str, class_names) -> nnx.Module:
    """Copy every array, the head's too, from checkpoint `path` (in place): the trained network
    continues on the same classes (`finetune.keep_head`)."""
    arrays, meta = checkpoint.load_arrays(path)
    arrays = ema.checkpoint_weights(arrays)
    saved = meta.get("class_names")
    if saved is not None and tuple(saved) != tuple(class_names):
        raise UserError(f"finetune.keep_head=true keeps the head of {path}, trained on classes "
                        f"{', '.join(saved[:5])}{', ...' if len(saved) > 5 else ''}, but this "
                        f"data set has {', '.join(list(class_names)[:5])}"
                        f"{', ...' if len(class_names) > 5 else ''}: use the same classes, or "
                        "keep_head=false for a new head")
    return checkpoint.copy_into(model, arrays, checkpoint.resolve(path))


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
