"""One-shot magnitude pruning of a trained seed CNN, then 2 epochs of fine-tuning at a tenth of
the learning rate (the pruned weights stay 0: jaxcnn/prune.py).

  python scripts/train.py --config configs/cifar10_cnn_pruned.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz \
      --config.finetune.init_from=runs/cifar10_cnn --config.prune.sparsity=0.9

Global scope: one magnitude threshold over all kernels, so the 4.19M-weight fc1 (99% of the
network) gives up most of the zeros and the 864-weight conv1 few.

Measured (CIFAR-10 JPEG copy, 2-core AMD EPYC CPU, jax 0.10.2, 2026-11-29), from the seed
recipe's seed-0 run (0.7051 after its 10 epochs, overfitted), `--config.prune.sparsity=S`:
`results/runs/cifar10_cnn_pruned_s0/metrics.jsonl` (S=0, the dense control): test_accuracy 0.7358,
`results/runs/cifar10_cnn_pruned_s50/metrics.jsonl`: 0.7341,
`results/runs/cifar10_cnn_pruned_s80/metrics.jsonl`: 0.7275,
`results/runs/cifar10_cnn_pruned_s90/metrics.jsonl`: 0.7094 (one seed each). Export sizes and
speed: BENCHMARKS.md ("Deployment").

Changes from the source (the seed recipe, configs/cifar10_cnn.py, which it continues): 2 epochs
at learning rate 1e-4 instead of 10 at 1e-3, starting from the trained network; the kernels'
smallest weights (by magnitude, over all layers at once) set to 0 before the first step and kept
0. The usual gradual schedule (Zhu & Gupta 2017, `prune.start_epoch < prune.end_epoch`) is not
what this config runs: it prunes in one shot.
"""

from configs.cifar10_cnn import get_config as base_config


def get_config():
    c = base_config()
    c.train.epochs = 2
    c.optim.learning_rate = 1e-4  # fine-tuning: a tenth of the recipe's
    c.finetune.keep_head = True  # the same 10 classes: the whole trained network goes on
    c.prune.sparsity = 0.9
    c.prune.scope = "global"
    c.prune.start_epoch = 0  # start = end: one shot, before the first fine-tuning step
    c.prune.end_epoch = 0
    return c
