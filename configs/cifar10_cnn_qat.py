"""Quantization-aware fine-tuning of a trained seed CNN: 2 epochs fake-quantized (int8 weights and
activations in the forward pass, straight-through gradients; jaxcnn/quantize.py) at a tenth of
the learning rate, then int8 PTQ of the result.

  python scripts/train.py --config configs/cifar10_cnn_qat.py \
      --config.data.name=folder:../shared/data/cifar10-jpeg.tar.gz \
      --config.finetune.init_from=runs/cifar10_cnn --workdir runs/cifar10_cnn_qat
  python scripts/quantize.py runs/cifar10_cnn_qat

Measured (CIFAR-10 JPEG copy, 2-core AMD EPYC CPU, jax 0.10.2, qwix 0.1.8, 2026-11-29), from the
seed recipe's seed-0 run (0.7051): `results/runs/cifar10_cnn_qat/metrics.jsonl`: test_accuracy
0.7353 fake-quantized after 2 epochs (one seed; 1 min 32 s end to end), 0.7358 once quantized to
int8 (`results/quantize-2026-11-29/cnn_qat.txt`). The same 2 epochs without quantization reach
0.7358 too (`configs/cifar10_cnn_pruned.py`, sparsity 0): on this network PTQ alone loses 0.01
points, so QAT has little to recover.

Changes from the source (the seed recipe, configs/cifar10_cnn.py, which it continues): 2 epochs
at learning rate 1e-4 instead of 10 at 1e-3, starting from the trained network, with every
convolution and dense layer fake-quantized by qwix (int8 per-channel weights, int8 activations
with per-batch ranges); airbench-style TTA and augmentation stay off, as in the seed.
"""

from configs.cifar10_cnn import get_config as base_config


def get_config():
    c = base_config()
    c.train.epochs = 2
    c.optim.learning_rate = 1e-4  # fine-tuning: a tenth of the recipe's
    c.finetune.keep_head = True  # the same 10 classes: the whole trained network goes on
    c.quant.mode = "qat"
    return c
