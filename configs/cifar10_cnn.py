"""The seed recipe: the 4.2M-parameter CNN, Adam 1e-3, batch 64, 10 epochs, no augmentation.

  python scripts/train.py --config configs/cifar10_cnn.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Measured (CIFAR-10 JPEG copy, 2-core AMD EPYC CPU, jax 0.10.2, 2026-11-29, `--config.seed=S`):
`results/runs/cifar10_cnn_seed0/metrics.jsonl`: test_accuracy 0.7083,
`results/runs/cifar10_cnn_seed1/metrics.jsonl`: 0.7053,
`results/runs/cifar10_cnn_seed2/metrics.jsonl`: 0.7011 after 10 epochs (0.705 +- 0.004; best
epochs 0.7263 / 0.7211 / 0.7166, after epoch 4-5 the recipe overfits), 176-181 s of training
(17-19 s per epoch) and 3 min 17-23 s end to end with the archive already decoded.
"""

from jaxcnn.config import default_config


def get_config():
    c = default_config()
    c.model.name = "cnn"
    c.data.name = "cifar10"
    c.data.mean = (0.5, 0.5, 0.5)  # transforms.Normalize((0.5,) * 3, (0.5,) * 3) in the seed
    c.data.std = (0.5, 0.5, 0.5)
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.train.epochs = 10
    c.train.batch_size = 64
    c.train.drop_remainder = False  # the seed's DataLoader also trains on the last 16 images
    return c
