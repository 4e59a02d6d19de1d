"""VGG-11 with BatchNorm on CIFAR-10: kuangliu/pytorch-cifar's recipe (main.py), as for VGG-16.

  python scripts/train.py --config configs/cifar10_vgg11_bn.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Not measured yet: no run of this config is committed. The source publishes no figure for
VGG-11 (its README lists VGG16 at 92.64%); Simonyan & Zisserman's configuration A is the
shallowest VGG, so expect a little less.

Changes from the source: those of configs/cifar10_vgg16_bn.py (the train set's true per-channel
std, the last smaller batch dropped); the network is kuangliu's `VGG('VGG11')`.
"""

from configs.cifar10_vgg16_bn import get_config as base_config


def get_config():
    c = base_config()
    c.model.name = "vgg11_bn"
    return c
