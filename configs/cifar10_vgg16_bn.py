"""VGG-16 with BatchNorm on CIFAR-10: kuangliu/pytorch-cifar's recipe (main.py).

  python scripts/train.py --config configs/cifar10_vgg16_bn.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Not measured yet: no run of this config is committed. The source's claim: 92.64% test accuracy
for VGG16 (kuangliu/pytorch-cifar's README).

Changes from the source (SGD with momentum 0.9, learning rate 0.1, weight decay 5e-4, batch
128, cosine annealing over 200 epochs, 4-pixel pad + random crop + flip; the network is
kuangliu's `VGG('VGG16')`, jaxcnn/models/vgg.py):
- inputs normalised by the CIFAR-10 train set's per-channel std (0.2470, 0.2435, 0.2616);
  kuangliu's transform uses (0.2023, 0.1994, 0.2010), a widely copied miscomputed std;
- the epoch's last, smaller batch is dropped (kuangliu's DataLoader keeps it): 390 steps per
  epoch instead of 391.
"""

from configs.cifar10_cnn import get_config as base_config


def get_config():
    c = base_config()
    c.model.name = "vgg16_bn"
    c.train.drop_remainder = True  # BatchNorm: a padded last batch would skew its statistics
    c.data.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 train-set statistics
    c.data.std = (0.2470, 0.2435, 0.2616)
    c.data.crop_padding = 4
    c.data.flip = True
    c.optim.name = "sgd"
    c.optim.learning_rate = 0.1  # for batch 128
    c.optim.momentum = 0.9
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "cosine"
    c.train.epochs = 200
    c.train.batch_size = 128
    return c
