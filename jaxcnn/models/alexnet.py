"""AlexNet for CIFAR: bearpaw/pytorch-classification's `alexnet` (models/cifar/alexnet.py).

The five convolutions of Krizhevsky's "One weird trick" AlexNet (arXiv:1404.5997; torchvision's
`alexnet` features) with paddings adjusted for 32x32 images and the three dense layers replaced
by one linear layer, no BatchNorm, no dropout:
  conv11x11/4 (pad 5) 3->64, ReLU, maxpool 2, conv5x5 (pad 2) 64->192, ReLU, maxpool 2,
  conv3x3 192->384, ReLU, conv3x3 384->256, ReLU, conv3x3 256->256, ReLU, maxpool 2,
  flatten (1x1x256 at 32x32), linear -> classes.
2,472,266 parameters for 10 classes (bearpaw's README: 2.47M; 22.78% top-1 error on CIFAR-10),
PyTorch's default initialisation. Another image size changes the flattened width, like the
seed CNN's: at least 29x29 pixels (the stride-4 conv and three 2x2 pools leave 1x1).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.errors import UserError
from jaxcnn.models.layers import conv_general_dilated, max_pool_2x2, torch_default_init


def _conv(cin, cout, k, stride, dtype, param_dtype, rngs) -> nnx.Conv:
    init = torch_default_init(cin * k * k)
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=k // 2, kernel_init=init,
                    bias_init=init, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


class AlexNet(nnx.Module):
    """Five convs (three max pools), one linear layer (`self.head`)."""

    HEAD = "head"  # the classifier layer, which fine-tuning replaces

    def __init__(self, num_classes: int = 10, *, in_channels: int = 3,
                 image_size: int | tuple[int, int] = 32, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        # conv1: floor((n + 2*5 - 11) / 4) + 1, then three floor-mode 2x2 pools
        fh, fw = (((n - 1) // 4 + 1) // 8 for n in (h, w))
        if fh < 1 or fw < 1:
            raise UserError(f"alexnet needs images of at least 29x29 pixels (a stride-4 conv "
                            f"and three 2x2 max pools), got {h}x{w}: set data.image_size larger")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = _conv(in_channels, 64, 11, 4, **kw)
        self.conv2 = _conv(64, 192, 5, 1, **kw)
        self.conv3 = _conv(192, 384, 3, 1, **kw)
        self.conv4 = _conv(384, 256, 3, 1, **kw)
        self.conv5 = _conv(256, 256, 3, 1, **kw)
        flat = fh * fw * 256
        init = torch_default_init(flat)
        self.head = nnx.Linear(flat, num_classes, kernel_init=init, bias_init=init, **kw)

    def features(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        """The conv stack, flattened: B x (H' x W' x 256)."""
        del train  # no BatchNorm, no dropout
        # max-pool before ReLU: the same values (both monotone), 4x less ReLU work
        x = jax.nn.relu(max_pool_2x2(self.conv1(x_BxHxWxC)))
        x = jax.nn.relu(max_pool_2x2(self.conv2(x)))
        x = jax.nn.relu(self.conv4(jax.nn.relu(self.conv3(x))))
        x = jax.nn.relu(max_pool_2x2(self.conv5(x)))
        return x.reshape(x.shape[0], -1)

    def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.features(x_BxHxWxC, train))
