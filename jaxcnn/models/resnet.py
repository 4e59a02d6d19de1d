"""ResNets: the CIFAR ResNets of He et al. 2016 (20, 56, 110 layers), the CIFAR ResNet-18 and
the ImageNet ResNet-50.

ResNet-20/56/110 (He et al., "Deep Residual Learning for Image Recognition", sec. 4.2): 3x3
stem of 16 channels, three stages of n = 3 / 9 / 18 basic blocks (16, 32, 64 channels),
parameter-free shortcuts (option A: stride-2 subsample + zero channel padding), global average
pool, linear head. 269,722 / 853,018 / 1,727,962 parameters for 10 classes ("0.27M / 0.85M /
1.7M" in the paper's Table 6 and in akamaster/pytorch_resnet_cifar10, the common PyTorch
reference; 1,730,714, as some tables give for ResNet-110, counts option-B projections).
Forward cost at 32x32: 40.6 / 125.5 / 252.9 M multiply-adds (Li et al. 2017, "Pruning Filters
for Efficient ConvNets", Table 2: 1.25e8 for ResNet-56, 2.53e8 for ResNet-110).
ResNet-18 (CIFAR variant): 3x3 stem of 64 channels without max pool, four stages of two basic
blocks (64..512), 1x1 projection shortcuts: 11,173,962 parameters for 10 classes.
ResNet-50 (ImageNet, torchvision's `resnet50`, "v1.5": the stride of a downsampling bottleneck
is on its 3x3 conv): 7x7/2 stem of 64 channels, 3x3/2 max pool, stages of 3, 4, 6, 3
bottleneck blocks (1x1, 3x3, 1x1 convs; 256..2048 channels out), 1x1 projection shortcuts:
25,557,032 parameters for 1000 classes, 4.09 G multiply-adds at 224x224 (torchvision's
figures for ResNet50_Weights.IMAGENET1K_V1: 25,557,032 parameters, 4.09 GFLOPS).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.models.layers import TORCH_BN as _BN
from jaxcnn.models.layers import conv_general_dilated, torch_default_init


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
                 image_size: int | tuple[int, int] = 32, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        del image_size  # any size: the strided convs round up and the features pool globally
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
ResNet56 = functools.partial(ResNet, stage_sizes=(9, 9, 9), widths=(16, 32, 64),
                             shortcut="zero_pad")
ResNet110 = functools.partial(ResNet, stage_sizes=(18, 18, 18), widths=(16, 32, 64),
                              shortcut="zero_pad")


# ---- ImageNet ResNets with bottleneck blocks (torchvision's layout and initialisation)

def _tv_conv(cin, cout, k, stride, dtype, param_dtype, rngs):
    """torchvision's conv: symmetric padding k // 2 (PyTorch's, not XLA's SAME, which pads a
    strided conv on one side only), no bias, kaiming_normal(mode=fan_out, relu)."""
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=k // 2, use_bias=False,
                    kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


def max_pool_3x3_s2(x_BxHxWxC: jax.Array) -> jax.Array:
    """PyTorch's MaxPool2d(3, stride=2, padding=1) as the maximum of nine strided slices of the
    input padded with -inf: elementwise-select gradients, no select-and-scatter (see
    layers.max_pool_2x2)."""
    _, h, w, _ = x_BxHxWxC.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    x = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    taps = [x[:, i:i + 2 * ho - 1:2, j:j + 2 * wo - 1:2] for i in range(3) for j in range(3)]
    out = taps[0]
    for t in taps[1:]:
        out = jnp.maximum(out, t)
    return out


class Bottleneck(nnx.Module):
    """1x1 conv-BN-ReLU, 3x3 conv (strided)-BN-ReLU, 1x1 conv-BN (x4 channels), plus the
    shortcut (1x1 conv-BN where the shape changes), then ReLU."""

    def __init__(self, cin: int, width: int, stride: int, *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        cout = 4 * width
        self.conv1 = _tv_conv(cin, width, 1, 1, dtype, param_dtype, rngs)
        self.bn1 = nnx.BatchNorm(width, **kw, **_BN)
        self.conv2 = _tv_conv(width, width, 3, stride, dtype, param_dtype, rngs)
        self.bn2 = nnx.BatchNorm(width, **kw, **_BN)
        self.conv3 = _tv_conv(width, cout, 1, 1, dtype, param_dtype, rngs)
        self.bn3 = nnx.BatchNorm(cout, **kw, **_BN)
        self.project = stride != 1 or cin != cout
        if self.project:
            self.proj = _tv_conv(cin, cout, 1, stride, dtype, param_dtype, rngs)
            self.proj_bn = nnx.BatchNorm(cout, **kw, **_BN)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        avg = not train
        y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=avg))
        y = jax.nn.relu(self.bn2(self.conv2(y), use_running_average=avg))
        y = self.bn3(self.conv3(y), use_running_average=avg)
        if self.project:
            x = self.proj_bn(self.proj(x), use_running_average=avg)
        return jax.nn.relu(x + y)


class BottleneckResNet(nnx.Module):
    """7x7/2 stem, 3x3/2 max pool, stages of bottleneck blocks, global average pool, linear head
    (`self.head`)."""

    HEAD = "head"  # the classifier layer, which fine-tuning replaces

    def __init__(self, num_classes: int = 1000, *, stage_sizes: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3,
                 image_size: int | tuple[int, int] = 224, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        del image_size  # any size: every stride rounds up and the features pool globally
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem = _tv_conv(in_channels, 64, 7, 2, dtype, param_dtype, rngs)
        self.stem_bn = nnx.BatchNorm(64, **kw, **_BN)
        blocks, cin = [], 64
        for i, (n, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            for j in range(n):
                blocks.append(Bottleneck(cin, width, 2 if (i > 0 and j == 0) else 1, **kw))
                cin = 4 * width
        self.blocks = nnx.List(blocks)
        init = torch_default_init(cin)  # PyTorch's default for nn.Linear, as torchvision keeps
        self.head = nnx.Linear(cin, num_classes, kernel_init=init, bias_init=init, **kw)

    def features(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        """Pooled backbone features, B x 2048."""
        x = jax.nn.relu(self.stem_bn(self.stem(x_BxHxWxC), use_running_average=not train))
        x = max_pool_3x3_s2(x)
        for block in self.blocks:
            x = block(x, train)
        return x.mean(axis=(1, 2))

    def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.features(x_BxHxWxC, train))


ResNet50 = functools.partial(BottleneckResNet, stage_sizes=(3, 4, 6, 3))
