"""DenseNet-BC for CIFAR (Huang et al. 2017, "Densely Connected Convolutional Networks"):
depth 100, growth rate k = 12, as bearpaw/pytorch-classification's `densenet` builds it
(models/cifar/densenet.py, after the authors' Torch code).

  conv3x3 3 -> 2k, three dense blocks of 16 bottleneck layers, each
      BN-ReLU-conv1x1 (-> 4k) -BN-ReLU-conv3x3 (-> k), its output concatenated to its input,
  between blocks a transition BN-ReLU-conv1x1 (compression 0.5: channels halved, floored)
      -avgpool 2x2,
  BN-ReLU, global average pool, linear -> classes.
Convolutions without bias, He-normal with fan-out (the authors' init), PyTorch's default for
the linear layer. 769,162 parameters for 10 classes (bearpaw's README: 0.77M, 4.54% error on
CIFAR-10; the paper's Table 2: 0.8M, 4.51% error with augmentation); 287.9 M multiply-adds per
32x32 image in its convolutions and linear layer (the paper gives no FLOPs for its CIFAR
models; the ~0.29 G usually quoted agrees to two digits). Globally pooled: any image of at
least 4x4 pixels.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.errors import UserError
from jaxcnn.models.layers import TORCH_BN, avg_pool_2x2, conv_general_dilated, torch_default_init


def _conv(cin, cout, k, dtype, param_dtype, rngs) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), padding=k // 2, use_bias=False,
                    kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


def _bn(c, dtype, param_dtype, rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(c, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **TORCH_BN)


class DenseLayer(nnx.Module):
    """BN-ReLU-conv1x1 (4k), BN-ReLU-conv3x3 (k); returns the k new channels."""

    def __init__(self, cin: int, growth: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn1 = _bn(cin, **kw)
        self.conv1 = _conv(cin, 4 * growth, 1, **kw)
        self.bn2 = _bn(4 * growth, **kw)
        self.conv2 = _conv(4 * growth, growth, 3, **kw)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.conv1(jax.nn.relu(self.bn1(x, use_running_average=not train)))
        return self.conv2(jax.nn.relu(self.bn2(y, use_running_average=not train)))


class Transition(nnx.Module):
    """BN-ReLU-conv1x1 (compressed channels), 2x2 average pool."""

    def __init__(self, cin: int, cout: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.bn = _bn(cin, dtype, param_dtype, rngs)
        self.conv = _conv(cin, cout, 1, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return avg_pool_2x2(self.conv(jax.nn.relu(self.bn(x, use_running_average=not train))))


class DenseNet(nnx.Module):
    """DenseNet-BC: stem conv, dense blocks with transitions, BN-ReLU, global pool, `self.head`."""

    HEAD = "head"  # the classifier layer, which fine-tuning replaces

    def __init__(self, num_classes: int = 10, *, depth: int = 100, growth: int = 12,
                 in_channels: int = 3, image_size: int | tuple[int, int] = 32,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if min(h, w) < 4:
            raise UserError(f"densenet needs images of at least 4x4 pixels (two 2x2 average "
                            f"pools), got {h}x{w}: set data.image_size larger")
        if (depth - 4) % 6:
            raise UserError(f"DenseNet-BC depth must be 6n + 4 (100, 190, ...), got {depth}")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        n = (depth - 4) // 6  # bottleneck layers per block (two convs each)
        c = 2 * growth
        self.stem = _conv(in_channels, c, 3, **kw)
        layers, transitions = [], []
        for block in range(3):
            for _ in range(n):
                layers.append(DenseLayer(c, growth, **kw))
                c += growth
            if block < 2:
                transitions.append(Transition(c, c // 2, **kw))
                c //= 2
        self.layers_per_block = n
        self.layers = nnx.List(layers)
        self.transitions = nnx.List(transitions)
        self.bn = _bn(c, **kw)
        init = torch_default_init(c)
        self.head = nnx.Linear(c, num_classes, kernel_init=init, bias_init=init, **kw)

    def features(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        """Pooled features, B x 342 for depth 100."""
        x = self.stem(x_BxHxWxC)
        for i, layer in enumerate(self.layers):
            # each layer sees every earlier feature map of its block: a concatenation
            x = jnp.concatenate([x, layer(x, train)], axis=-1)
            block, j = divmod(i, self.layers_per_block)
            if j == self.layers_per_block - 1 and block < len(self.transitions):
                x = self.transitions[block](x, train)
        x = jax.nn.relu(self.bn(x, use_running_average=not train))
        return x.mean(axis=(1, 2))

    def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.features(x_BxHxWxC, train))
