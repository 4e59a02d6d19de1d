"""The seed's CIFAR-10 CNN, layer for layer.

conv3x3 3->32, ReLU, maxpool 2, conv3x3 32->64, ReLU, maxpool 2, dense 4096->1024, ReLU,
dense 1024->classes: 4,224,970 parameters for 10 classes, PyTorch's default initialisation.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.errors import UserError
from jaxcnn.models.layers import (
    conv_general_dilated,
    max_pool_2x2,
    micro_batched,
    torch_default_init,
)


def _conv(cin: int, cout: int, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Conv:
    init = torch_default_init(cin * 9)
    return nnx.Conv(cin, cout, (3, 3), padding="SAME", kernel_init=init, bias_init=init,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


def _dense(cin: int, cout: int, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    init = torch_default_init(cin)
    return nnx.Linear(cin, cout, kernel_init=init, bias_init=init,
                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class CNN(nnx.Module):
    """Two conv layers and two dense layers; `width` scales the channels (32 in the seed)."""

    HEAD = "fc2"  # the classifier layer, which fine-tuning replaces

    def __init__(self, num_classes: int = 10, *, width: int = 32, hidden: int = 1024,
                 image_size: int | tuple[int, int] = 32, in_channels: int = 3, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv1 = _conv(in_channels, width, dtype, param_dtype, rngs)
        self.conv2 = _conv(width, 2 * width, dtype, param_dtype, rngs)
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if h < 4 or w < 4:
            raise UserError(f"the cnn model needs images of at least 4x4 pixels (two 2x2 "
                            f"poolings), got {h}x{w}: set data.image_size larger")
        flat = (h // 4) * (w // 4) * 2 * width
        self.fc1 = _dense(flat, hidden, dtype, param_dtype, rngs)
        self.fc2 = _dense(hidden, num_classes, dtype, param_dtype, rngs)

    def features(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """The conv stack: B x H/4 x W/4 x 2*width."""
        # max-pool before ReLU: relu(max(x)) == max(relu(x)) and it is 4x less ReLU work.
        x = jax.nn.relu(max_pool_2x2(self.conv1(x_BxHxWxC)))
        return jax.nn.relu(max_pool_2x2(self.conv2(x)))

    def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        # No dropout or BatchNorm in the seed network; `train` only picks the execution:
        # inference runs the conv stack in micro-batches on the CPU (see `micro_batched`).
        x = self.features(x_BxHxWxC) if train else micro_batched(self.features, x_BxHxWxC)
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(self.fc1(x))
        return self.fc2(x)
