"""The config schema: every field a run understands, with the seed recipe as defaults.

Config files (`configs/*.py`) start from `default_config()` and override a few fields; the CLI
applies `--config.<group>.<field>=<value>` on top; `check_config` refuses unknown fields.
"""

import ml_collections
from ml_collections import ConfigDict

from jaxcnn.errors import UserError

# Epoch metrics (metrics.jsonl fields) that can pick the best checkpoint.
BEST_METRICS = ("", "test_accuracy", "test_loss", "train_accuracy", "train_loss")


def default_config() -> ConfigDict:
    """Every field with its default: the seed's CIFAR-10 recipe (Adam 1e-3, batch 64, 10 epochs)."""
    c = ConfigDict()
    c.seed = 0  # one seed drives init, data order and augmentation

    c.model = ConfigDict()
    c.model.name = "cnn"  # cnn | resnet20 | resnet18
    c.model.dtype = "float32"  # compute dtype of convolutions and matmuls
    c.model.param_dtype = "float32"  # storage dtype of parameters

    c.data = ConfigDict()
    c.data.name = "cifar10"  # cifar10 | cifar100 | digits | synthetic | folder:<path> | tfds:<name>
    c.data.cache_dir = ""  # downloads and decoded arrays; "" = $JAXCNN_DATA_DIR or ~/.cache/jaxcnn
    c.data.mean = (0.5, 0.5, 0.5)  # per channel, on the 0..1 scale
    c.data.std = (0.5, 0.5, 0.5)
    c.data.crop_padding = 0  # random crop after zero-padding by this many pixels; 0 = off
    c.data.flip = False  # random horizontal flip
    c.data.on_device = "auto"  # auto | yes | no: keep the uint8 data set on the device
    c.data.classes = ""  # keep only these classes (comma list of names or indices), relabelled
    #                      0..k-1 in that order; "" = all
    c.data.train_per_class = 0  # keep the first N training images of each class; 0 = all

    c.optim = ConfigDict()
    c.optim.name = "adam"  # adam | adamw | sgd
    c.optim.learning_rate = 1e-3  # peak learning rate, not scaled with the batch size
    c.optim.schedule = "constant"  # constant | cosine | linear | onecycle
    c.optim.warmup_epochs = 0.0  # linear warmup from 0, in epochs (fractions allowed)
    c.optim.weight_decay = 0.0  # adam/sgd: L2 added to the gradient; adamw: decoupled
    c.optim.momentum = 0.9  # sgd only
    c.optim.nesterov = False  # sgd only
    c.optim.b1 = 0.9  # adam/adamw
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8

    c.train = ConfigDict()
    c.train.epochs = 10
    c.train.batch_size = 64  # global batch, split over all devices
    c.train.eval_batch_size = 1000  # rounded up to a multiple of the device count
    c.train.label_smoothing = 0.0

    # Only with a workdir: <workdir>/checkpoints/<step>; a rerun with the same workdir resumes.
    c.checkpoint = ConfigDict()
    c.checkpoint.every_epochs = 1  # save after every N epochs, and always after the last
    c.checkpoint.every_steps = 0  # also save every N optimizer steps, mid-epoch too; 0 = off
    c.checkpoint.keep = 3  # keep the latest N checkpoints ...
    c.checkpoint.best_metric = "test_accuracy"  # ... and the best by this epoch metric; "" = off
    c.checkpoint.best_mode = "max"  # max | min: what "best" means for best_metric
    c.checkpoint.async_save = True  # write in a background thread while training goes on

    # Start from a trained network: every layer but the head (the last linear layer, sized for
    # this data set's classes) and the BatchNorm statistics come from the checkpoint.
    c.finetune = ConfigDict()
    c.finetune.init_from = ""  # a run's workdir (its latest checkpoint) or a checkpoint dir
    c.finetune.mode = "full"  # full: all layers | linear_probe: head only, BatchNorm frozen
    c.finetune.backbone_lr_scale = 0.1  # full: backbone lr = this x optim.learning_rate
    c.finetune.unfreeze_after_epochs = 0  # linear_probe: train all layers (as full) from this
    #                                       epoch on; 0 = never
    return c


def check_config(config: ConfigDict) -> None:
    """Refuse fields the schema does not know and values no run can use."""
    unknown = sorted(set(_paths(config)) - set(_paths(default_config())))
    if unknown:
        raise UserError(f"unknown config field(s) {', '.join(unknown)}: see jaxcnn/config.py "
                        "for the fields a run understands")
    t = config.train
    for name in ("epochs", "batch_size", "eval_batch_size"):
        v = t[name]
        if not isinstance(v, int) or v < 1:
            raise UserError(f"train.{name} must be a positive integer, got {v!r}")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise UserError(f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    if not config.optim.learning_rate > 0:
        raise UserError(f"optim.learning_rate must be > 0, got {config.optim.learning_rate}")
    if config.data.on_device not in ("auto", "yes", "no"):
        raise UserError(f"data.on_device must be auto, yes or no, got {config.data.on_device!r}")
    if config.data.crop_padding < 0:
        raise UserError(f"data.crop_padding must be >= 0, got {config.data.crop_padding}")
    if not isinstance(config.data.train_per_class, int) or config.data.train_per_class < 0:
        raise UserError(f"data.train_per_class must be an integer >= 0, got "
                        f"{config.data.train_per_class!r}")
    k = config.checkpoint
    for name in ("every_epochs", "every_steps"):
        if not isinstance(k[name], int) or k[name] < 0:
            raise UserError(f"checkpoint.{name} must be an integer >= 0, got {k[name]!r}")
    if not isinstance(k.keep, int) or k.keep < 1:
        raise UserError(f"checkpoint.keep must be a positive integer, got {k.keep!r}")
    if k.best_metric not in BEST_METRICS:
        raise UserError(f"checkpoint.best_metric must be one of {', '.join(BEST_METRICS)} "
                        f"(\"\" = off), got {k.best_metric!r}")
    if k.best_mode not in ("max", "min"):
        raise UserError(f"checkpoint.best_mode must be max or min, got {k.best_mode!r}")
    f = config.finetune
    if f.mode not in ("full", "linear_probe"):
        raise UserError(f"finetune.mode must be full or linear_probe, got {f.mode!r}")
    if not f.backbone_lr_scale >= 0:
        raise UserError(f"finetune.backbone_lr_scale must be >= 0, got {f.backbone_lr_scale}")
    if not isinstance(f.unfreeze_after_epochs, int) or f.unfreeze_after_epochs < 0:
        raise UserError(f"finetune.unfreeze_after_epochs must be an integer >= 0, got "
                        f"{f.unfreeze_after_epochs!r}")


def _paths(c: ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for k, v in c.items():
        if isinstance(v, (ConfigDict, ml_collections.FrozenConfigDict)):
            out += _paths(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out
