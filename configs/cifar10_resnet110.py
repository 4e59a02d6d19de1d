"""ResNet-110 on CIFAR-10: He et al.'s CIFAR recipe, with a cosine schedule instead of steps.

  python scripts/train.py --config configs/cifar10_resnet110.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Not measured yet: no run of this config is committed. The source's claim: 6.43% test error
(93.57% accuracy; 6.61 +- 0.16% over 5 runs) for ResNet-110, He et al. 2016, "Deep Residual
Learning for Image Recognition", Table 6.

Changes from the source (sec. 4.2, the recipe of configs/cifar10_resnet56.py; for ResNet-110
the paper warms up at learning rate 0.01 until the training error is below 80%, about 400
iterations, then uses 0.1):
- a linear warmup over the first epoch (391 iterations) instead of a constant 0.01 until the
  error drops;
- cosine decay from 0.1 to 0 over 164 epochs (paper: two steps of /10 at 32k and 48k of 64k
  iterations; jaxcnn has no step schedule);
- trained on all 50,000 training images (paper: 45k, 5k held out for validation);
- inputs normalised by the per-channel mean and std (paper: per-pixel mean subtracted).
"""

from configs.cifar10_resnet56 import get_config as base_config


def get_config():
    c = base_config()
    c.model.name = "resnet110"
    c.optim.warmup_epochs = 1.0
    return c
