"""CIFAR ResNets: ResNet-20 (He et al. 2016, option-A shortcuts) and the CIFAR ResNet-18.

ResNet-20: 3x3 stem of 16 channels, three stages of three basic blocks (16, 32, 64 channels),
parameter-free shortcuts (stride-2 subsample + zero channel padding): 269,722 parameters.
ResNet-18 (CIFAR variant): 3x3 stem of 64 channels without max pool, four stages of two basic
blocks (64..512), 1x1 projection shortcuts: 11,173,962 parameters for 10 classes.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.models.layers import conv_general_dilated

# PyTorch's BatchNorm momentum 0.1 is flax's 0.9 (flax weights the running value).
_BN = dict(momentum=0.9, epsilon=1e-5)


def _conv(cin, cout, k, stride, dtype, param_dtype, rngs):
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding="SAME" if k > 1 else "VALID",
                    use_bias=False, kernel_init=nnx.initializers.he_normal(),
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


class BasicBlock(nnx.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str, *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, 3, stride, dtype, param_dtype, rngs)
        self.bn1 = nnx.BatchNorm(cout, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **_BN)
        self.conv2 = _conv(cout, cout, 3, 1, dtype, param_dtype, rngs)
        self.bn2 = nnx.BatchNorm(cout, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **_BN)
        self.stride, self.pad = stride, cout - cin
        self.project = (stride != 1 or cin != cout) and shortcut == "projection"
        if self.project:
            self.proj = _conv(cin, cout, 1, stride, dtype, param_dtype, rngs)
            self.proj_bn = nnx.BatchNorm(cout, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                                         **_BN)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        y = self.bn2(self.conv2(y), use_running_average=not train)
        if self.project:
            x = self.proj_bn(self.proj(x), use_running_average=not train)
        elif self.stride != 1 or self.pad:
            # Option A: subsample and zero-pad the channels, no parameters.
            x = x[:, ::self.stride, ::self.stride, :]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.pad)))
        return jax.nn.relu(x + y)


class ResNet(nnx.Module):
    """Stem conv, stages of basic blocks, global average pool, linear head (`self.head`)."""

    HEAD = "head"  # the classifier layer, which fine-tuning replaces

    def __init__(self, num_classes: int = 10, *, stage_sizes: Sequence[int],
                 widths: Sequence[int], shortcut: str, in_channels: int = 3,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem = _conv(in_channels, widths[0], 3, 1, dtype, param_dtype, rngs)
        self.stem_bn = nnx.BatchNorm(widths[0], **kw, **_BN)
        blocks, cin = [], widths[0]
        for i, (n, cout) in enumerate(zip(stage_sizes, widths, strict=True)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride, shortcut, **kw))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(cin, num_classes, **kw)

    def features(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        """Pooled backbone features, B x width."""
        x = jax.nn.relu(self.stem_bn(self.stem(x_BxHxWxC), use_running_average=not train))
        for block in self.blocks:
            x = block(x, train)
        return x.mean(axis=(1, 2))

    def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.features(x_BxHxWxC, train))


ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), widths=(16, 32, 64),
                             shortcut="zero_pad")
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                             shortcut="projection")
