"""airbench94's network (Keller Jordan's cifar10-airbench): 94% on CIFAR-10 in ~10 epochs.

  2x2 patch-whitening conv (3 -> 24, VALID, frozen kernel, trained bias), GELU,
  three blocks of [conv3x3, maxpool 2, BN, GELU, conv3x3, BN, GELU] of 64 / 256 / 256 channels,
  global max pool, linear 256 -> classes without bias, logits x 1/9.

1,971,352 trainable parameters for 10 classes (the whitening kernel and the BatchNorm scales are
not trained). The pieces that make it train fast, each a constructor switch:
  whiten      the first layer's kernel comes from the training data (`init_from_data`): the
              eigenvectors of the 2x2x3 patch covariance, scaled to unit variance, and their
              negatives; frozen. Off: an ordinary trainable conv, PyTorch's default init.
  dirac       every 3x3 conv starts as the identity on its first `in` output channels (the
              second conv of a block is exactly the identity at init): a deep net that starts
              shallow. Off: PyTorch's default init everywhere.
  bn_scale    False (airbench): BatchNorm without a scale (frozen at 1), only a bias.
  bn_momentum 0.6 (flax's convention: the weight of the old running statistic; airbench's
              `batchnorm_momentum`, PyTorch momentum 0.4), epsilon 1e-12.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.models.layers import conv_general_dilated, conv_nhwc, torch_default_init


class Frozen(nnx.Variable):
    """A weight that is not trained: not an nnx.Param, so it lives (and is checkpointed) with
    the BatchNorm statistics and gets no gradient or optimizer state."""


class Whitening(nnx.Module):
    """2x2 VALID conv with 2 x (2*2*C) outputs and a bias: the patch-whitening first layer.

    `OPTIM_GROUP` puts its bias in the optimizer's `whiten` group, which
    `optim.whiten_bias_epochs` freezes after the first epochs (airbench's `whiten_bias_epochs`).
    """

    OPTIM_GROUP = "whiten"

    def __init__(self, in_channels: int, *, frozen: bool, dtype, param_dtype, rngs: nnx.Rngs):
        k = 2 * 2 * in_channels
        init = torch_default_init(k)
        kernel_2x2xCx2K = init(rngs.params(), (2, 2, in_channels, 2 * k), param_dtype)
        self.kernel = (Frozen if frozen else nnx.Param)(kernel_2x2xCx2K)
        self.bias = nnx.Param(jnp.zeros((2 * k,), param_dtype))
        self.dtype = dtype

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        w = self.kernel[...].astype(self.dtype)
        y = conv_nhwc(x_BxHxWxC.astype(self.dtype), w, padding="VALID")
        return y + self.bias[...].astype(self.dtype)


def whitening_kernel(x_NxHxWxC: jax.Array, eps: float = 5e-4) -> jax.Array:
    """2x2xCx(8C) kernel whose first 4C filters map 2x2 patches of `x` onto the eigenvectors of
    their covariance (largest first), each divided by sqrt(eigenvalue + eps); the other 4C are
    their negatives (so that GELU passes both signs).

    The covariance is the raw second moment E[p p^T], as airbench computes it (the images are
    normalised, so it is close to the centred covariance).
    """
    n, h, w, c = x_NxHxWxC.shape
    x = x_NxHxWxC.astype(jnp.float32)
    # Every 2x2 patch, flattened in (dy, dx, c) order: the order of an HWIO kernel's first axes.
    patches_PxD = jnp.concatenate([x[:, i:h - 1 + i, j:w - 1 + j, :] for i in range(2)
                                   for j in range(2)], axis=-1).reshape(-1, 4 * c)
    cov_DxD = patches_PxD.T @ patches_PxD / patches_PxD.shape[0]
    eigenvalues_D, eigenvectors_DxD = jnp.linalg.eigh(cov_DxD)  # ascending, columns
    order = jnp.arange(4 * c)[::-1]
    scaled_DxD = eigenvectors_DxD[:, order] / jnp.sqrt(eigenvalues_D[order] + eps)
    kernel_Dx2D = jnp.concatenate([scaled_DxD, -scaled_DxD], axis=1)
    return kernel_Dx2D.reshape(2, 2, c, 8 * c)


def _dirac_init(cin: int, bound_fan_in: int):
    """PyTorch's default init, then `torch.nn.init.dirac_` on the first `cin` output channels:
    output channel o < cin copies input channel o (the centre tap), so the conv starts as an
    identity on them."""
    default = torch_default_init(bound_fan_in)

    def init(key, shape, dtype=jnp.float32):
        kh, kw, i, o = shape
        w = default(key, shape, dtype)
        eye_IxO = jnp.eye(i, o, dtype=dtype)  # 1 where input channel == output channel
        centre = jnp.zeros((kh, kw), dtype).at[kh // 2, kw // 2].set(1)
        dirac = centre[:, :, None, None] * eye_IxO
        return jnp.where(jnp.arange(o) < min(cin, o), dirac, w)

    return init


def _conv3x3(cin: int, cout: int, dirac: bool, dtype, param_dtype, rngs) -> nnx.Conv:
    init = _dirac_init(cin, cin * 9) if dirac else torch_default_init(cin * 9)
    return nnx.Conv(cin, cout, (3, 3), padding="SAME", use_bias=False, kernel_init=init,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


def _max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
    """Non-overlapping 2x2 max pool that drops an odd last row / column (PyTorch's floor mode).

    The maximum of four strided slices: its gradient is elementwise selects, not XLA:CPU's slow
    select-and-scatter (see layers.max_pool_2x2)."""
    _, h, w, _ = x_BxHxWxC.shape
    x = x_BxHxWxC[:, :h // 2 * 2, :w // 2 * 2]
    return jnp.maximum(jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
                       jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


class ConvGroup(nnx.Module):
    """conv3x3, maxpool 2, BN, GELU, conv3x3, BN, GELU."""

    def __init__(self, cin: int, cout: int, *, dirac: bool, bn_scale: bool, bn_momentum: float,
                 dtype, param_dtype, rngs: nnx.Rngs):
        bn = dict(use_scale=bn_scale, momentum=bn_momentum, epsilon=1e-12, dtype=dtype,
                  param_dtype=param_dtype, rngs=rngs)
        self.conv1 = _conv3x3(cin, cout, dirac, dtype, param_dtype, rngs)
        self.norm1 = nnx.BatchNorm(cout, **bn)
        self.conv2 = _conv3x3(cout, cout, dirac, dtype, param_dtype, rngs)
        self.norm2 = nnx.BatchNorm(cout, **bn)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = _max_pool_2x2(self.conv1(x))
        x = _gelu(self.norm1(x, use_running_average=not train))
        return _gelu(self.norm2(self.conv2(x), use_running_average=not train))


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)  # PyTorch's nn.GELU(), which airbench uses


class Airbench(nnx.Module):
    """airbench94's network; see the module docstring for the switches."""

    HEAD = "head"  # the classifier layer, which fine-tuning replaces
    INIT_FROM_DATA_IMAGES = 5000  # training images `init_from_data` wants (airbench's count)

    def __init__(self, num_classes: int = 10, *, widths: Sequence[int] = (64, 256, 256),
                 whiten: bool = True, dirac: bool = True, bn_scale: bool = False,
                 bn_momentum: float = 0.6, logit_scale: float = 1 / 9, in_channels: int = 3,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.whiten = Whitening(in_channels, frozen=whiten, **kw)
        cin, blocks = 2 * 2 * 2 * in_channels, []
        for width in widths:
            blocks.append(ConvGroup(cin, width, dirac=dirac, bn_scale=bn_scale,
                                    bn_momentum=bn_momentum, **kw))
            cin = width
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(cin, num_classes, use_bias=False,
                               kernel_init=torch_default_init(cin), **kw)
        self.logit_scale = logit_scale
        self.whiten_from_data = whiten

    def init_from_data(self, x_NxHxWxC: jax.Array) -> None:
        """Set the whitening kernel from normalised training images (the engine calls this once
        before training with `INIT_FROM_DATA_IMAGES` training images, when the model has this
        method). No-op when built with `whiten=False`."""
        if self.whiten_from_data:
            kernel = whitening_kernel(x_NxHxWxC)
            self.whiten.kernel[...] = kernel.astype(self.whiten.kernel[...].dtype)

    def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
        x = _gelu(self.whiten(x_BxHxWxC))
        for block in self.blocks:
            x = block(x, train)
        # airbench's MaxPool2d(3) on the final 3x3 map of a 32x32 image: a global max.
        x_BxC = x.max(axis=(1, 2))
        return self.head(x_BxC) * self.logit_scale


__all__ = ["Airbench", "ConvGroup", "Frozen", "Whitening", "whitening_kernel"]
