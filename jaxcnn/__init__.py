"""jaxcnn: train, evaluate and fine-tune convolutional networks with JAX, Flax NNX and Optax."""

from jaxcnn import data, models
from jaxcnn.errors import UserError
from jaxcnn.train import (
    Job,
    Result,
    TrainState,
    build,
    evaluate,
    fit,
    train_and_evaluate,
    train_step,
)

__version__ = "0.1.0"
__all__ = ["Job", "Result", "TrainState", "UserError", "build", "data", "evaluate", "fit",
           "models", "train_and_evaluate", "train_step"]
