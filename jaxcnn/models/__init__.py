"""Models by name: `create("cnn", num_classes=10, rngs=nnx.Rngs(0), image_shape=(32, 32, 3))`."""

import functools
import inspect

import jax.numpy as jnp
from flax import nnx

from jaxcnn.errors import UserError
from jaxcnn.models.airbench import Airbench
from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.cnn import CNN
from jaxcnn.models.densenet import DenseNet
from jaxcnn.models.layers import count_params
from jaxcnn.models.resnet import ResNet, ResNet18, ResNet20, ResNet50, ResNet56, ResNet110
from jaxcnn.models.vgg import VGG, VGG11BN, VGG16BN

MODELS = {
    "airbench": Airbench,
    "cnn": CNN,
    "resnet20": ResNet20,
    "resnet18": ResNet18,
    "alexnet": AlexNet,
    "vgg11_bn": VGG11BN,
    "vgg16_bn": VGG16BN,
    "densenet_bc_100": DenseNet,  # depth 100, growth 12: the constructor's defaults
    "resnet56": ResNet56,
    "resnet110": ResNet110,
    "resnet50": ResNet50,
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def create(name: str, *, num_classes: int, rngs: nnx.Rngs, dtype="float32",
           param_dtype="float32", image_shape: tuple[int, int, int] | None = None,
           **kwargs) -> nnx.Module:
    """Build model `name` for `num_classes`; `dtype` is the compute dtype, `param_dtype` storage.

    `image_shape` (H, W, C) sizes the model for its data: `in_channels=C` and `image_size=(H, W)`
    go to the constructor when it takes them (the seed CNN's first dense layer depends on H x W;
    models that pool globally only need C). None: the constructor's defaults (32x32 RGB).
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))} "
                        "(--config.model.name)")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if image_shape is not None:
        kwargs = {**shape_options(name, image_shape), **kwargs}
    return MODELS[name](num_classes, dtype=dtype_of(dtype), param_dtype=dtype_of(param_dtype),
                        rngs=rngs, **kwargs)


def shape_options(name: str, image_shape: tuple[int, int, int]) -> dict:
    """The constructor arguments of model `name` that size it for (H, W, C) images."""
    h, w, c = (int(d) for d in image_shape)
    cls = MODELS[name]
    cls = cls.func if isinstance(cls, functools.partial) else cls  # ResNet20 = partial(ResNet..)
    # the class's __init__: NNX's metaclass hides the class's own signature
    accepts = inspect.signature(cls.__init__).parameters
    out = {"in_channels": c} if "in_channels" in accepts else {}
    if "image_size" in accepts:
        out["image_size"] = (h, w)
    return out


def register(name: str):
    """A decorator that makes a research model a model by name, like the built-in ones:

        @jaxcnn.models.register("tiny")
        class Tiny(nnx.Module):
            HEAD = "out"  # the attribute holding the classifier, an nnx.Linear
            def __init__(self, num_classes, *, dtype, param_dtype, rngs): ...
            def __call__(self, x_BxHxWxC, train=False): ...   # logits BxK

    Then `--config.model.name=tiny` trains it, and `inference.load_run`, `scripts/evaluate.py`,
    export and summary rebuild it from a workdir, in any process that has registered it first
    (import the module that defines it). A name already taken by another model is refused.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise UserError(f"a model name must be a non-empty word, got {name!r}")

    def add(cls):
        if not isinstance(getattr(cls, "HEAD", None), str):
            # load_run counts the classes on it, fine-tuning replaces it
            raise UserError(f"{cls.__name__} has no HEAD: set the class attribute HEAD to the "
                            "name of its classifier layer (an nnx.Linear)")
        if MODELS.get(name, cls) is not cls:
            raise UserError(f"model name {name!r} is taken by {MODELS[name].__name__}: register "
                            "yours under another name")
        MODELS[name] = cls
        return cls
    return add


def options(model_cfg) -> dict:
    """Constructor options of model `model_cfg.name` from its config subgroup (`model.airbench`
    for `airbench`); {} for a model without one."""
    sub = model_cfg.get(model_cfg.name)
    return dict(sub.to_dict()) if sub is not None and hasattr(sub, "to_dict") else {}


def dtype_of(d):
    """A dtype from its name (float32, bfloat16, float16) or as given."""
    if isinstance(d, str):
        if d not in DTYPES:
            raise UserError(f"unknown dtype {d!r}: use one of {', '.join(DTYPES)}")
        return DTYPES[d]
    return d


__all__ = ["VGG", "AlexNet", "Airbench", "CNN", "DenseNet", "MODELS", "ResNet", "ResNet18",
           "ResNet20", "ResNet50", "ResNet56", "ResNet110", "VGG11BN", "VGG16BN", "count_params",
           "create", "dtype_of", "options", "register", "shape_options"]
