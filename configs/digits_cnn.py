"""The seed CNN on scikit-learn's handwritten digits (32x32, offline): the quick-start job.

  python scripts/train.py --config configs/digits_cnn.py --devices all

Measured: (filled in below once run)
"""

from configs.cifar10_cnn import get_config as base_config


def get_config():
    c = base_config()
    c.data.name = "digits"
    c.train.epochs = 10
    return c
