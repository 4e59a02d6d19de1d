"""AlexNet (CIFAR variant) on CIFAR-10: bearpaw/pytorch-classification's recipe.

  python scripts/train.py --config configs/cifar10_alexnet.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Not measured yet: no run of this config is committed. The source's claim: 22.78% top-1 error
(77.22% accuracy) for alexnet on CIFAR-10 (bearpaw/pytorch-classification's README).

Changes from the source (TRAINING.md: `cifar.py -a alexnet --epochs 164 --schedule 81 122
--gamma 0.1`, with cifar.py's defaults: SGD with momentum 0.9, learning rate 0.1, weight decay
5e-4, batch 128, 4-pixel pad + random crop + flip; the network is bearpaw's `alexnet`,
jaxcnn/models/alexnet.py):
- learning rate 0.01 (the model file's own advice: "Without BN, the start learning rate should
  be 0.01"; TRAINING.md runs cifar.py's default 0.1);
- cosine decay to 0 over 164 epochs (source: /10 at epochs 81 and 122; jaxcnn has no step
  schedule);
- inputs normalised by the train set's true per-channel std (0.2470, 0.2435, 0.2616); the
  source uses (0.2023, 0.1994, 0.2010);
- the epoch's last, smaller batch is dropped (the source keeps it).
"""

from configs import cifar_sgd


def get_config():
    return cifar_sgd("alexnet", learning_rate=0.01, batch_size=128, epochs=164,
                     weight_decay=5e-4)
