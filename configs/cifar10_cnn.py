"""The seed recipe: the 4.2M-parameter CNN, Adam 1e-3, batch 64, 10 epochs, no augmentation.

  python scripts/train.py --config configs/cifar10_cnn.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Measured: (filled in below once run)
"""

from jaxcnn.config import default_config


def get_config():
    c = default_config()
    c.model.name = "cnn"
    c.data.name = "cifar10"
    c.data.mean = (0.5, 0.5, 0.5)  # transforms.Normalize((0.5,) * 3, (0.5,) * 3) in the seed
    c.data.std = (0.5, 0.5, 0.5)
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.train.epochs = 10
    c.train.batch_size = 64
    return c
