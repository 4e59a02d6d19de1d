"""The seed recipe: the 4.2M-parameter CNN, Adam 1e-3, batch 64, 10 epochs, no augmentation.

  python scripts/train.py --config configs/cifar10_cnn.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz

Measured (CIFAR-10 JPEG copy, 2-core AMD EPYC CPU, jax 0.10.2, 2026-11-29, `--config.seed=S`):
`results/runs/cifar10_cnn_seed0/metrics.jsonl`: test_accuracy 0.7051,
`results/runs/cifar10_cnn_seed1/metrics.jsonl`: 0.7071,
`results/runs/cifar10_cnn_seed2/metrics.jsonl`: 0.7039,
`results/runs/cifar10_cnn_seed3/metrics.jsonl`: 0.7040,
`results/runs/cifar10_cnn_seed4/metrics.jsonl`: 0.7107 after 10 epochs (0.706 +- 0.003; best
epochs 0.715-0.721, after epoch 4 the recipe overfits), 169-175 s of training (17 s per
epoch), 3 min 07-15 s end to end with the archive already decoded. The seed's PyTorch code
on the same images (scripts/torch_seed.py, seeds 0-4): 0.708 +- 0.005
(`results/runs/torch_cnn_seed0/metrics.jsonl`: 0.7089,
`results/runs/torch_cnn_seed1/metrics.jsonl`: 0.7144,
`results/runs/torch_cnn_seed2/metrics.jsonl`: 0.7018,
`results/runs/torch_cnn_seed3/metrics.jsonl`: 0.7109,
`results/runs/torch_cnn_seed4/metrics.jsonl`: 0.7057).

Changes from the source (the seed's PyTorch loop, scripts/torch_seed.py): none in the
computation. Same network and PyTorch's default initialisation, Adam 1e-3 with PyTorch's
defaults, mean cross-entropy, batch 64 with the last 16 images kept, 10 epochs,
Normalize((0.5,) * 3, (0.5,) * 3); tests/test_torch_parity.py holds the two step for step. The
random draws differ: initial weights and batch order come from JAX's keys, so seed S here is
not `torch.manual_seed(S)` there.
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
