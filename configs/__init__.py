"""Recipes: each module's `get_config()` returns an `ml_collections.ConfigDict`.

`cifar_sgd` is the CIFAR recipe the papers' models (ResNet, VGG, DenseNet, AlexNet) share, so
their configs state only what differs: model, learning rate, batch, epochs, weight decay.
"""

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 train-set statistics, per channel
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar_sgd(model: str, *, learning_rate: float, batch_size: int, epochs: int,
              weight_decay: float, nesterov: bool = False):
    """The seed recipe's data (CIFAR-10) with the papers' training: per-channel normalisation,
    4-pixel pad-and-crop and flips, SGD with momentum 0.9 and a cosine schedule (jaxcnn has no
    step schedule), the last partial batch dropped (BatchNorm: padding would skew it)."""
    from configs.cifar10_cnn import get_config as base_config
    c = base_config()
    c.model.name = model
    c.train.drop_remainder = True
    c.data.mean, c.data.std = CIFAR10_MEAN, CIFAR10_STD
    c.data.crop_padding = 4
    c.data.flip = True
    c.optim.name = "sgd"
    c.optim.learning_rate = learning_rate
    c.optim.momentum = 0.9
    c.optim.nesterov = nesterov
    c.optim.weight_decay = weight_decay
    c.optim.schedule = "cosine"
    c.train.epochs = epochs
    c.train.batch_size = batch_size
    return c
