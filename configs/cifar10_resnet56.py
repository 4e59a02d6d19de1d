"""ResNet-56 on CIFAR-10: He et al.'s CIFAR recipe, with a cosine schedule instead of steps.

  python scripts/train.py --config configs/cifar10_resnet56.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Not measured yet: no run of this config is committed. The source's claim: 6.97% test error
(93.03% accuracy) for ResNet-56, He et al. 2016, "Deep Residual Learning for Image
Recognition", Table 6 (the best of 5 runs, trained on 45k images with 5k held out).

Changes from the source (sec. 4.2: SGD with momentum 0.9, batch 128, learning rate 0.1 divided
by 10 at 32k and 48k iterations, 64k iterations, weight decay 1e-4, 4-pixel pad + random crop +
flip, per-pixel mean subtracted; the network is the paper's, jaxcnn/models/resnet.py):
- cosine decay from 0.1 to 0 over 164 epochs (paper: two steps of /10; jaxcnn has no step
  schedule), 164 epochs of 50,000 images = the paper's 64k iterations;
- trained on all 50,000 training images (paper: 45k, 5k held out for validation);
- inputs normalised by the per-channel mean and std (paper: per-pixel mean subtracted).
"""

from configs import cifar_sgd


def get_config():
    return cifar_sgd("resnet56", learning_rate=0.1, batch_size=128, epochs=164,
                     weight_decay=1e-4)
