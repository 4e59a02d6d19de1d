"""ResNet-20 on CIFAR-10: SGD with Nesterov momentum, one-cycle schedule, crop + flip.

  python scripts/train.py --config configs/cifar10_resnet20.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Measured: not yet. Its 30 epochs have not been run on the 2-core CPU machine, and no GPU was at
hand; the accuracy and time go here once measured.
"""

from configs.cifar10_cnn import get_config as base_config


def get_config():
    c = base_config()
    c.model.name = "resnet20"
    c.data.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 train-set statistics
    c.data.std = (0.2470, 0.2435, 0.2616)
    c.data.crop_padding = 4
    c.data.flip = True
    c.optim.name = "sgd"
    c.optim.learning_rate = 0.2  # for batch 512; scale linearly with the batch if you change it
    c.optim.momentum = 0.9
    c.optim.nesterov = True
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "onecycle"
    c.train.epochs = 30
    c.train.batch_size = 512
    c.train.label_smoothing = 0.1
    return c
