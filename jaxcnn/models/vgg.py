"""VGG-11 and VGG-16 with BatchNorm for CIFAR (kuangliu/pytorch-cifar's `VGG`, models/vgg.py).

Stacks of [conv3x3 (with bias), BN, ReLU] separated by 2x2 max pools, five pools in all (32x32
-> 1x1), then linear 512 -> classes. Channels per stage (M = max pool):
  vgg11_bn  64 M 128 M 256 256 M 512 512 M 512 512 M                  9,231,114 parameters
  vgg16_bn  64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M  14,728,266 parameters
for 10 classes, counted from kuangliu's layers (Simonyan & Zisserman 2015's configurations A
and D, with BN, the three ImageNet dense layers replaced by one); 14,728,266 is the count quoted
for kuangliu's VGG16. Forward cost at 32x32: 152.8 / 313.2 M multiply-adds (Li et al. 2017,
"Pruning Filters for Efficient ConvNets", Table 2: 3.13e8 for their CIFAR VGG-16). PyTorch's
default initialisation.
At 32x32 the last map is 1x1 and kuangliu flattens it; here it is averaged over (the same
values), so larger images work too: the model needs at least 32x32 (five halvings).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.errors import UserError
from jaxcnn.models.layers import TORCH_BN, conv_general_dilated, max_pool_2x2, torch_default_init

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class ConvBN(nnx.Module):
    """conv3x3 (PyTorch's padding 1, bias), BN, ReLU."""

    def __init__(self, cin: int, cout: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        init = torch_default_init(cin * 9)
        self.conv = nnx.Conv(cin, cout, (3, 3), padding=1, kernel_init=init, bias_init=init,
                             dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                             conv_general_dilated=conv_general_dilated)
        self.bn = nnx.BatchNorm(cout, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                                **TORCH_BN)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))


class VGG(nnx.Module):
    """Conv-BN-ReLU stacks and max pools as `layers` says, global average pool, `self.head`."""

    HEAD = "head"  # the classifier layer, which fine-tuning replaces

    def __init__(self, num_classes: int = 10, *, layers: Sequence[int | str],
                 in_channels: int = 3, image_size: int | tuple[int, int] = 32,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        pools = sum(v == "M" for v in layers)
        if min(h, w) < 2 ** pools:
            raise UserError(f"vgg needs images of at least {2 ** pools}x{2 ** pools} pixels "
                            f"({pools} 2x2 max pools), got {h}x{w}: set data.image_size larger")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        blocks, cin = [], in_channels
        for v in layers:
            blocks.append(None if v == "M" else ConvBN(cin, v, **kw))
            cin = cin if v == "M" else v
        self.layers = tuple(layers)
        self.blocks = nnx.List([b for b in blocks if b is not None])
        init = torch_default_init(cin)
        self.head = nnx.Linear(cin, num_classes, kernel_init=init, bias_init=init, **kw)

    def features(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        """Pooled features, B x 512."""
        x, blocks = x_BxHxWxC, iter(self.blocks)
        for v in self.layers:
            x = max_pool_2x2(x) if v == "M" else next(blocks)(x, train)
        return x.mean(axis=(1, 2))

    def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.features(x_BxHxWxC, train))


VGG11BN = functools.partial(VGG, layers=VGG11)  # vgg11_bn: 9,231,114 parameters for 10 classes
VGG16BN = functools.partial(VGG, layers=VGG16)  # vgg16_bn: 14,728,266
