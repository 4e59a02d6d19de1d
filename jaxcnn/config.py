"""The config schema: every field a run understands, with the seed recipe as defaults.

Config files (`configs/*.py`) start from `default_config()` and override a few fields; the CLI
applies `--config.<group>.<field>=<value>` on top; `check_config` refuses unknown fields.
"""

import ml_collections
from ml_collections import ConfigDict

from jaxcnn.errors import UserError


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


def _paths(c: ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for k, v in c.items():
        if isinstance(v, (ConfigDict, ml_collections.FrozenConfigDict)):
            out += _paths(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out
