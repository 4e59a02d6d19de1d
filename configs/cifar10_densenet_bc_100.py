"""DenseNet-BC (L=100, k=12) on CIFAR-10: Huang et al.'s recipe, cosine instead of steps.

  python scripts/train.py --config configs/cifar10_densenet_bc_100.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Not measured yet: no run of this config is committed. The source's claim: 4.51% test error
(95.49% accuracy) with augmentation (C10+), Huang et al. 2017, "Densely Connected
Convolutional Networks", Table 2; bearpaw/pytorch-classification reports 4.54%.

Changes from the source (sec. 4.2: SGD with Nesterov momentum 0.9, batch 64, 300 epochs,
learning rate 0.1 divided by 10 at 50% and 75% of the epochs, weight decay 1e-4, 4-pixel pad +
random crop + flip (sec. 4.1), per-channel mean/std normalisation; the network is the paper's,
jaxcnn/models/densenet.py):
- cosine decay from 0.1 to 0 over the 300 epochs (source: two steps of /10; jaxcnn has no
  step schedule);
- the epoch's last, smaller batch is dropped (the source keeps it).
"""

from configs import cifar_sgd


def get_config():
    return cifar_sgd("densenet_bc_100", learning_rate=0.1, batch_size=64, epochs=300,
                     weight_decay=1e-4, nesterov=True)
