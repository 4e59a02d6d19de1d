"""jaxcnn: train, evaluate and fine-tune convolutional networks with JAX, Flax NNX and Optax.

The training API (`build`, `fit`, `train_and_evaluate`, ...) and the `data` and `models`
packages load on first use: a process that only serves an export (`jaxcnn.server`,
`jaxcnn.serving`) imports neither flax nor the training engine.
"""

import importlib

from jaxcnn.errors import UserError

__version__ = "0.1.0"
_TRAIN = ("Job", "Result", "TrainState", "build", "evaluate", "fit", "train_and_evaluate",
          "train_step")
__all__ = [*_TRAIN, "UserError", "data", "models"]


def __getattr__(name: str):
    if name in ("data", "models"):
        return importlib.import_module(f"jaxcnn.{name}")
    if name in _TRAIN:
        return getattr(importlib.import_module("jaxcnn.train"), name)
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")
