"""The config schema: every field a run understands, with the seed recipe as defaults.

Config files (`configs/*.py`) start from `default_config()` and override a few fields; the CLI
applies `--config.<group>.<field>=<value>` on top; `check_config` refuses unknown fields.
"""

import math

import ml_collections
from ml_collections import ConfigDict, config_dict

from jaxcnn.errors import UserError

# Epoch metrics (metrics.jsonl fields) that can pick the best checkpoint; "auto" is
# val_accuracy with a validation split and off without one (`selection_metric`).
BEST_METRICS = ("auto", "", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
                "train_accuracy", "train_loss")


def default_config() -> ConfigDict:
    """Every field with its default: the seed's CIFAR-10 recipe (Adam 1e-3, batch 64, 10 epochs)."""
    c = ConfigDict()
    c.seed = 0  # one seed drives init, data order and augmentation
    # float32 | bf16: bf16 computes convolutions and matmuls in bfloat16 (GPUs' fast path) while
    # parameters, optimizer state, BatchNorm statistics and the loss stay float32. On CPUs
    # without bf16 matmul kernels it is slower: keep float32 there.
    c.precision = "float32"

    c.model = ConfigDict()
    c.model.name = "cnn"  # cnn | resnet20 | resnet18 | airbench, or one of models.register
    c.model.dtype = "float32"  # compute dtype with precision=float32 (`compute_dtype`): float32
    #                            or bfloat16 (float16 is refused: it needs loss scaling)
    c.model.param_dtype = "float32"  # storage dtype of parameters
    # Constructor options of model `airbench` (jaxcnn/models/airbench.py says what each does).
    c.model.airbench = ConfigDict()
    c.model.airbench.widths = (64, 256, 256)  # channels of the three conv groups
    c.model.airbench.whiten = True  # first layer: frozen patch whitening set from training data
    c.model.airbench.dirac = True  # 3x3 convs start as the identity on their first channels
    c.model.airbench.bn_scale = False  # False: BatchNorm scale frozen at 1, only the bias learns
    c.model.airbench.bn_momentum = 0.6  # weight of the old running statistic (flax convention)
    c.model.airbench.logit_scale = 1 / 9  # logits x this

    c.data = ConfigDict()
    c.data.name = "cifar10"  # cifar10 | cifar100 | digits | synthetic | folder:<path> | tfds:<name>
    c.data.cache_dir = ""  # downloads and decoded arrays; "" = $JAXCNN_DATA_DIR or ~/.cache/jaxcnn
    c.data.mean = (0.5, 0.5, 0.5)  # per channel, on the 0..1 scale
    c.data.std = (0.5, 0.5, 0.5)
    c.data.crop_padding = 0  # random crop after zero-padding by this many pixels; 0 = off
    # horizontal flip: False | True (random, p=1/2) | "alternating" (airbench: a fixed random half
    # of the images mirrored in even epochs, the other half in odd epochs)
    c.data.flip = config_dict.FieldReference(False, field_type=object)
    c.data.crop_fill = "zero"  # zero | reflect: what the crop's padding shows (airbench: reflect)
    # Streamed data only (data.on_device=no; jaxcnn/data/transforms.py, on the host)
    c.data.random_resized_crop = ()  # (lo, hi): torchvision's RandomResizedCrop, lo..hi of the
    #                                  area, then resized to the image size; ImageNet (0.08, 1.0)
    c.data.random_resized_crop_ratio = (3 / 4, 4 / 3)  # its aspect ratio (w/h) range
    c.data.center_crop = 0.0  # eval: resize to cover size / f, then the central crop (ImageNet
    #                           0.875: 224 from 256); 0 = resize the whole image
    c.data.channels = 0  # 1 grey | 3 RGB; 0 = the data's
    c.data.on_device = "auto"  # auto | yes | no: keep the uint8 data set on the device
    # no streams folder:/arrayrecord:/tfds: records, decoded every epoch (jaxcnn/data/stream.py)
    c.data.workers = 2  # streamed: Grain worker processes decoding and augmenting; 0 = in-process
    c.data.classes = ""  # keep only these classes (comma list of names or indices), relabelled
    #                      0..k-1 in that order; "" = all
    c.data.train_per_class = 0  # keep the first N training images of each class; 0 = all
    c.data.validation = 0.0  # hold out of the training split, stratified by class and fixed by
    #                          `seed`: a fraction (0.1) or a count (5000); 0 = none, unless the
    #                          source has its own (folder: val/ or validation/, TFDS validation)
    c.data.class_weights = ""  # the training loss per class: "" equal, "balanced" (n / (K x n_k))
    #                            or K comma-separated weights in label order
    # Untrusted folders and archives (folder:): files and images above these limits are refused
    c.data.image_size = 0  # resize every image to N x N (a folder's on decoding); 0 = as they
    #                        are (a folder's: its most common size)
    c.data.max_file_bytes = 64 * 2**20  # per image file or archive member
    c.data.max_image_pixels = 2**26  # per decoded image (width x height)
    c.data.verify_sha256 = True  # a local CIFAR archive must be the official file; False for a
    #                              re-packed copy (its pickles are still checked)

    c.optim = ConfigDict()
    c.optim.name = "adam"  # adam | adamw | sgd
    c.optim.learning_rate = 1e-3  # peak learning rate, not scaled with the batch size
    c.optim.schedule = "constant"  # constant | cosine | linear | onecycle
    c.optim.warmup_epochs = 0.0  # linear warmup from 0, in epochs (fractions allowed)
    c.optim.weight_decay = 0.0  # adam/sgd: L2 added to the gradient; adamw: decoupled
    c.optim.momentum = 0.9  # sgd only
    c.optim.nesterov = False  # sgd only
    c.optim.decay_norm_and_bias = True  # False: weight decay skips biases and BatchNorm (1-D)
    c.optim.b1 = 0.9  # adam/adamw
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    # airbench's refinements (jaxcnn/optim.py, make_train_optimizer); not with fine-tuning
    c.optim.decoupled_hparams = False  # sgd: learning_rate and weight_decay per 1024 examples,
    #                                    step independent of momentum, decay of learning rate
    c.optim.bias_lr_scale = 1.0  # learning rate x this for BatchNorm parameters, decay step kept
    c.optim.whiten_bias_epochs = 0  # train the whitening layer's bias for N epochs only; 0 = all
    c.optim.lookahead_every = 0  # every N steps reset the weights to their running average; 0 = off
    c.optim.lookahead_start_epochs = 0  # ... from epoch N (0-based) on; then also after each epoch

    c.train = ConfigDict()
    c.train.epochs = 10
    c.train.batch_size = 64  # global batch, split over all devices
    c.train.eval_batch_size = 1000  # rounded up to a multiple of the device count
    c.train.label_smoothing = 0.0
    c.train.ema_decay = 0.0  # an exponential moving average of the weights, updated after every
    #                          optimizer update (jaxcnn/ema.py), evaluated, saved and exported in
    #                          their place; e.g. 0.999; 0 = off
    c.train.grad_accum_steps = 1  # update every N steps with their mean gradient
    #                               (optax.MultiSteps): batch_size x N images per update;
    #                               BatchNorm still sees each batch of batch_size
    c.train.drop_remainder = True  # False: also train on the epoch's last, smaller batch (the
    #                                rest of the data set, padded and masked), as PyTorch's
    #                                DataLoader does by default; not with BatchNorm
    c.train.steps_per_call = 0  # data on the device: optimizer steps per compiled call (one
    #                             lax.fori_loop); 0 = auto by backend (train.AUTO_STEPS_PER_CALL)
    c.train.tta_level = 0  # test-time augmentation of the final evaluation: 0 none, 1 mirror,
    #                        2 mirror + 1-pixel shifts (jaxcnn/tta.py); other epochs: none
    c.train.log_every_steps = 50  # TensorBoard: learning rate, running train loss and step time
    #                               every N steps (each point waits for the device); 0 = off
    c.train.profile_steps = 0  # with a workdir: a jax.profiler trace of the first N steps after
    #                            compilation, for TensorBoard's profile tab (XProf); 0 = off
    c.train.peer_timeout_s = 60.0  # several processes: a process silent this long is lost, and
    #                                the others stop (exit 75) instead of hanging in a collective
    c.train.early_stop_patience = 0  # stop after N epochs without a better selection metric
    #                                  (checkpoint.best_metric, on validation) and restore the
    #                                  best epoch's weights for the final test; 0 = off
    c.train.test_every_epoch = False  # with a validation split: also evaluate the test split
    #                                   after every epoch (test_* in each row), not only at the end
    c.train.divergence_factor = 100.0  # stop when a logged train loss exceeds this x its running
    #                                    mean (non-finite losses, parameters, metrics always stop)

    # Only with a workdir: <workdir>/checkpoints/<step>; a rerun with the same workdir resumes.
    c.checkpoint = ConfigDict()
    c.checkpoint.every_epochs = 1  # save after every N epochs, and always after the last
    c.checkpoint.every_steps = 0  # also save every N optimizer steps, mid-epoch too; 0 = off
    c.checkpoint.keep = 3  # keep the latest N checkpoints ...
    # ... and the best by this epoch metric; "" = off; auto = val_accuracy with a validation
    # split, else off (never the test set: choosing on it biases the reported figure)
    c.checkpoint.best_metric = "auto"
    c.checkpoint.best_mode = "max"  # max | min: what "best" means for best_metric (auto: max)
    c.checkpoint.select_on_test = False  # allow best_metric=test_* with a validation split
    c.checkpoint.async_save = True  # write in a background thread while training goes on
    c.checkpoint.stop_timeout_s = 120.0  # after SIGTERM, a save still stuck this long is abandoned
    #                                      (the process exits 1; earlier checkpoints are intact)

    # Start from a trained network: every layer but the head (the last linear layer, sized for
    # this data set's classes) and the BatchNorm statistics come from the checkpoint.
    c.finetune = ConfigDict()
    c.finetune.init_from = ""  # a run's workdir (its latest checkpoint) or a checkpoint dir
    c.finetune.mode = "full"  # full: all layers | linear_probe: head only, BatchNorm frozen
    c.finetune.backbone_lr_scale = 0.1  # full: backbone lr = this x optim.learning_rate
    c.finetune.unfreeze_after_epochs = 0  # linear_probe: train all layers (as full) from this
    #                                       epoch on; 0 = never
    c.finetune.keep_head = False  # True: restore the head too (same classes) and train the whole
    #                               network with the run's own optimizer: pruning, QAT

    # Deployment (jaxcnn/quantize.py, jaxcnn/prune.py)
    c.quant = ConfigDict()
    c.quant.mode = ""  # "" float | qat: train fake-quantized int8 | ptq: an int8 run that
    #                    scripts/quantize.py wrote (evaluates and exports; does not train)
    c.quant.calibration_images = 1000  # PTQ: training images that calibrate activation scales
    c.prune = ConfigDict()
    c.prune.sparsity = 0.0  # final fraction of zero weights in conv and dense kernels; 0 = off
    c.prune.scope = "layer"  # layer: every kernel reaches the sparsity | global: one threshold
    c.prune.start_epoch = 0  # masks are set at the start of each epoch from this one (0-based)
    c.prune.end_epoch = 0  # ... growing as a cubic (Zhu & Gupta 2017) to `sparsity` at this
    #                        one; start = end: one shot (after a trained finetune.init_from)
    return c


def check_config(config: ConfigDict) -> None:
    """Refuse fields the schema does not know and values no run can use."""
    unknown = sorted(set(_paths(config)) - set(_paths(default_config())))
    if unknown:
        raise UserError(f"unknown config field(s) {', '.join(unknown)}: see jaxcnn/config.py "
                        "for the fields a run understands")
    t = config.train
    for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum_steps"):
        v = t[name]
        if not isinstance(v, int) or v < 1:
            raise UserError(f"train.{name} must be a positive integer, got {v!r}")
    if not isinstance(t.drop_remainder, bool):
        raise UserError(f"train.drop_remainder must be true or false, got {t.drop_remainder!r}")
    if isinstance(t.profile_steps, bool) or not isinstance(t.profile_steps, int) or (
            t.profile_steps < 0):
        raise UserError(f"train.profile_steps must be an integer >= 0, got {t.profile_steps!r}")
    if not isinstance(t.steps_per_call, int) or t.steps_per_call < 0:
        raise UserError(f"train.steps_per_call must be an integer >= 0 (0 = auto), got "
                        f"{t.steps_per_call!r}")
    if not isinstance(t.log_every_steps, int) or t.log_every_steps < 0:
        raise UserError(f"train.log_every_steps must be an integer >= 0, got "
                        f"{t.log_every_steps!r}")
    if config.precision not in ("float32", "bf16"):
        raise UserError(f"precision must be float32 or bf16, got {config.precision!r}")
    for name in ("dtype", "param_dtype"):
        if config.model[name] not in ("float32", "bfloat16"):
            # float16 has 5 exponent bits: without loss scaling its gradients underflow to 0
            raise UserError(f"model.{name} must be float32 or bfloat16, got "
                            f"{config.model[name]!r}: float16 needs loss scaling, which jaxcnn "
                            "does not do; use --config.precision=bf16 for 16-bit compute")
    _check_numbers(config)
    _check_recipe_fields(config)
    _check_data_limits(config.data)
    w = config.model.airbench.widths
    if not (isinstance(w, (tuple, list)) and len(w) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 2**16 for x in w)):
        raise UserError(f"model.airbench.widths must be three channel counts in 1..65536, got "
                        f"{w!r}")
    if config.data.on_device not in ("auto", "yes", "no"):
        raise UserError(f"data.on_device must be auto, yes or no, got {config.data.on_device!r}")
    if not isinstance(config.data.crop_padding, int) or config.data.crop_padding < 0:
        raise UserError(f"data.crop_padding must be an integer >= 0, got "
                        f"{config.data.crop_padding!r}")
    _check_host_transforms(config.data)
    if not isinstance(config.data.train_per_class, int) or config.data.train_per_class < 0:
        raise UserError(f"data.train_per_class must be an integer >= 0, got "
                        f"{config.data.train_per_class!r}")
    _check_checkpoint(config)
    if isinstance(t.early_stop_patience, bool) or not isinstance(t.early_stop_patience, int) \
            or t.early_stop_patience < 0:
        raise UserError(f"train.early_stop_patience must be an integer >= 0, got "
                        f"{t.early_stop_patience!r}")
    v = config.data.validation
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise UserError(f"data.validation must be a fraction in (0, 1) or a count of images "
                        f"(0 = none), got {v!r}")
    _check_deploy(config)
    _check_finetune(config)


def _check_checkpoint(config: ConfigDict) -> None:
    t = config.train
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
    for name, value in (("checkpoint.select_on_test", k.select_on_test),
                        ("train.test_every_epoch", t.test_every_epoch)):
        if not isinstance(value, bool):
            raise UserError(f"{name} must be true or false, got {value!r}")


def _check_finetune(config: ConfigDict) -> None:
    t = config.train
    f = config.finetune
    if f.mode not in ("full", "linear_probe"):
        raise UserError(f"finetune.mode must be full or linear_probe, got {f.mode!r}")
    if not isinstance(f.unfreeze_after_epochs, int) or f.unfreeze_after_epochs < 0:
        raise UserError(f"finetune.unfreeze_after_epochs must be an integer >= 0, got "
                        f"{f.unfreeze_after_epochs!r}")
    if not isinstance(f.keep_head, bool):
        raise UserError(f"finetune.keep_head must be true or false, got {f.keep_head!r}")
    if f.keep_head and (not f.init_from or f.mode != "full"):
        raise UserError("finetune.keep_head=true continues a trained network: it needs "
                        "finetune.init_from and finetune.mode=full")
    # Fine-tuning builds its own optimizer (a head and a backbone group), which has no place
    # for airbench's refinements: refuse them rather than train with a different optimizer.
    used = [f"optim.{k}={config.optim[k]!r}" for k, off in AIRBENCH_OPTIM_FIELDS.items()
            if config.optim[k] != off]
    if used and t.grad_accum_steps > 1:
        raise UserError(f"train.grad_accum_steps={t.grad_accum_steps} does not apply "
                        f"{', '.join(used)} (airbench's optimizer refinements count single "
                        "steps): use one or the other")
    if f.init_from and used:
        raise UserError(f"fine-tuning (--init-from) does not apply {', '.join(used)} (airbench's "
                        "optimizer refinements): set them back to "
                        f"{', '.join(f'{k}={v}' for k, v in AIRBENCH_OPTIM_FIELDS.items())}, "
                        "and a learning rate for plain optim.name")


def _check_deploy(config: ConfigDict) -> None:
    q, p = config.quant, config.prune
    if q.mode not in ("", "qat", "ptq"):
        raise UserError(f"quant.mode must be \"\" (float), qat or ptq, got {q.mode!r}")
    if not isinstance(q.calibration_images, int) or q.calibration_images < 1:
        raise UserError(f"quant.calibration_images must be a positive integer, got "
                        f"{q.calibration_images!r}")
    if p.scope not in ("layer", "global"):
        raise UserError(f"prune.scope must be layer or global, got {p.scope!r}")
    for name in ("start_epoch", "end_epoch"):
        if isinstance(p[name], bool) or not isinstance(p[name], int) or p[name] < 0:
            raise UserError(f"prune.{name} must be an integer >= 0, got {p[name]!r}")
    if p.sparsity and not p.start_epoch <= p.end_epoch < config.train.epochs:
        raise UserError(f"prune.start_epoch={p.start_epoch} and prune.end_epoch={p.end_epoch} "
                        f"must satisfy start <= end < train.epochs={config.train.epochs}")


# airbench's optimizer fields and the values that switch them off.
AIRBENCH_OPTIM_FIELDS = {"decoupled_hparams": False, "bias_lr_scale": 1.0,
                         "whiten_bias_epochs": 0, "lookahead_every": 0}


# (field, lowest, highest, whether the bounds themselves are allowed): finite numbers only, so a
# nan or inf is refused here instead of diverging (or allocating) later.
NUMBERS = [
    ("optim.learning_rate", 0.0, None, (False, True)),
    ("optim.eps", 0.0, None, (True, True)),
    ("optim.b1", 0.0, 1.0, (True, False)),
    ("optim.b2", 0.0, 1.0, (True, False)),
    ("optim.momentum", 0.0, 1.0, (True, False)),
    ("optim.weight_decay", 0.0, None, (True, True)),
    ("optim.warmup_epochs", 0.0, None, (True, True)),
    ("optim.bias_lr_scale", 0.0, None, (False, True)),
    ("train.label_smoothing", 0.0, 1.0, (True, False)),
    ("train.ema_decay", 0.0, 1.0, (True, False)),
    ("finetune.backbone_lr_scale", 0.0, None, (True, True)),
    ("train.divergence_factor", 1.0, None, (False, True)),
    ("checkpoint.stop_timeout_s", 0.0, None, (False, True)),
    ("train.peer_timeout_s", 0.0, 86400.0, (False, True)),
    ("data.max_file_bytes", 0, 2**40, (False, True)),
    ("data.max_image_pixels", 0, 2**40, (False, True)),
    ("data.image_size", 0, 2**16, (True, True)),
    ("data.workers", 0, 256, (True, True)),
    ("model.airbench.bn_momentum", 0.0, 1.0, (True, True)),
    ("prune.sparsity", 0.0, 1.0, (True, False)),
    ("model.airbench.logit_scale", 0.0, None, (False, True)),
]
SEED_RANGE = (-2**63, 2**63)  # what jax.random.key takes


def _check_numbers(config: ConfigDict) -> None:
    for field, lo, hi, (lo_ok, hi_ok) in NUMBERS:
        v = config
        for part in field.split("."):
            v = v[part]
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and (v >= lo if lo_ok else v > lo)
              and (hi is None or (v <= hi if hi_ok else v < hi)))
        if not ok:
            low = f"{'>=' if lo_ok else '>'} {_number(lo)}"
            bounds = low if hi is None else f"{low} and {'<=' if hi_ok else '<'} {_number(hi)}"
            raise UserError(f"{field} must be {bounds} (a finite number), got {v!r}")
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not (
            SEED_RANGE[0] <= seed < SEED_RANGE[1]):
        raise UserError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}")


def _number(x) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _check_data_limits(d: ConfigDict) -> None:
    if not isinstance(d.class_weights, str):
        raise UserError(f"data.class_weights must be balanced or a comma list of numbers, got "
                        f"{d.class_weights!r}")
    for name in ("image_size", "max_file_bytes", "max_image_pixels", "workers"):
        if isinstance(d[name], bool) or not isinstance(d[name], int):
            raise UserError(f"data.{name} must be an integer, got {d[name]!r}")
    if not isinstance(d.verify_sha256, bool):
        raise UserError(f"data.verify_sha256 must be true or false, got {d.verify_sha256!r}")


def selection_metric(config: ConfigDict, has_validation: bool) -> tuple[str, str]:
    """(metric, "max"|"min") that picks the best checkpoint and drives early stopping; ("", _)
    = none. Refuses selecting on the test split when there is a validation split (unless
    `checkpoint.select_on_test`), and early stopping without a metric to watch."""
    k, patience = config.checkpoint, config.train.early_stop_patience
    metric, mode = k.best_metric, k.best_mode
    if metric == "auto":
        metric, mode = ("val_accuracy", "max") if has_validation else ("", "max")
    if metric.startswith("val_") and not has_validation:
        raise UserError(f"checkpoint.best_metric={metric} needs a validation split: set "
                        "data.validation (e.g. 0.1 or 5000) or give the folder a val/ split")
    if metric.startswith("test_") and has_validation and not k.select_on_test:
        raise UserError(f"checkpoint.best_metric={metric} selects on the test split although "
                        "there is a validation split: use val_accuracy or val_loss (or set "
                        "checkpoint.select_on_test=true to choose on test knowingly)")
    if patience and not metric:
        raise UserError(f"train.early_stop_patience={patience} needs a validation split to "
                        "watch: set data.validation (e.g. 0.1) or a checkpoint.best_metric")
    if patience and metric.startswith("test_") and not k.select_on_test:
        raise UserError(f"train.early_stop_patience with checkpoint.best_metric={metric} stops "
                        "on the test split: set data.validation and use val_accuracy (or set "
                        "checkpoint.select_on_test=true to stop on test knowingly)")
    return metric, mode


def _check_host_transforms(d: ConfigDict) -> None:
    def pair(v) -> bool:
        return (isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in v) and 0 < v[0] <= v[1])
    rrc, ratio = d.random_resized_crop, d.random_resized_crop_ratio
    if rrc not in ((), []) and not (pair(rrc) and rrc[1] <= 1):
        raise UserError(f"data.random_resized_crop must be () (off) or (lo, hi) fractions of the "
                        f"area with 0 < lo <= hi <= 1, e.g. (0.08, 1.0), got {rrc!r}")
    if not pair(ratio):
        raise UserError(f"data.random_resized_crop_ratio must be (lo, hi) aspect ratios with "
                        f"0 < lo <= hi, e.g. (0.75, 1.3333), got {ratio!r}")
    f = d.center_crop
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
        raise UserError(f"data.center_crop must be 0 (off) or a fraction in (0, 1], e.g. 0.875, "
                        f"got {f!r}")
    if d.channels not in (0, 1, 3) or isinstance(d.channels, bool):
        raise UserError(f"data.channels must be 0 (the data's), 1 (grey) or 3 (RGB), got "
                        f"{d.channels!r}")


def compute_dtype(config: ConfigDict) -> str:
    """The dtype convolutions and matmuls run in: bfloat16 for precision=bf16, else model.dtype."""
    return "bfloat16" if config.precision == "bf16" else config.model.dtype


def _check_recipe_fields(config: ConfigDict) -> None:
    """The fields airbench's recipe added: flip modes, crop fill, TTA, optimizer refinements."""
    d, o = config.data, config.optim
    if d.flip not in (False, True, "none", "random", "alternating"):
        raise UserError(f"data.flip must be False, True (random) or alternating, got {d.flip!r}")
    if d.crop_fill not in ("zero", "reflect"):
        raise UserError(f"data.crop_fill must be zero or reflect, got {d.crop_fill!r}")
    if config.train.tta_level not in (0, 1, 2):
        raise UserError(f"train.tta_level must be 0, 1 or 2, got {config.train.tta_level!r}")
    for name in ("whiten_bias_epochs", "lookahead_every", "lookahead_start_epochs"):
        if not isinstance(o[name], int) or o[name] < 0:
            raise UserError(f"optim.{name} must be an integer >= 0, got {o[name]!r}")


def _paths(c: ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for k, v in c.items():
        if isinstance(v, (ConfigDict, ml_collections.FrozenConfigDict)):
            out += _paths(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out
