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

from configs import cifar_sgd


def get_config():
    return cifar_sgd("vgg16_bn", learning_rate=0.1, batch_size=128, epochs=200,
                     weight_decay=5e-4)
