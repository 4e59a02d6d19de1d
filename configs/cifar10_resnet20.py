"""ResNet-20 on CIFAR-10: SGD with Nesterov momentum, one-cycle schedule, crop + flip.

  python scripts/train.py --config configs/cifar10_resnet20.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Measured (2-core AMD EPYC CPU, jax 0.10.2, 2026-11-29), one epoch of the 30:
`results/runs/cifar10_resnet20_1ep/metrics.jsonl`: test_accuracy 0.4956 after 1 epoch
(`--config.train.epochs=1`, so the one-cycle schedule is squeezed into 97 steps), 118.6 s of
training (419 img/s), 2 min 41 s end to end; `results/runs/cifar10_resnet20_8ep/metrics.jsonl`:
test_accuracy 0.7914 after 8 epochs (`--config.train.epochs=8`, on a machine shared with other
jobs, so its times are not the recipe's). The full 30 epochs have not been run here.

Changes from the source (He et al. 2016, "Deep Residual Learning for Image Recognition",
sec. 4.2: SGD with momentum 0.9, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k iterations, weight decay 1e-4, 4-pixel pad + random crop + flip, per-pixel mean
subtracted); the network is the paper's (jaxcnn/models/resnet.py):
- batch 512, peak learning rate 0.2 with a one-cycle schedule over 30 epochs (paper: batch
  128, 0.1 in steps, 64k iterations = 164 epochs of 50,000 images);
- Nesterov momentum (paper: plain momentum);
- weight decay 5e-4, as L2 on every parameter (paper: 1e-4);
- label smoothing 0.1 (paper: none);
- inputs normalised by the per-channel mean and std (paper: per-pixel mean subtracted).
"""

from configs.cifar10_cnn import get_config as base_config


def get_config():
    c = base_config()
    c.train.drop_remainder = True  # BatchNorm: a padded last batch would skew its statistics
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
