"""Small building blocks shared by the models."""

import math

import jax
import jax.numpy as jnp
from flax import nnx


def torch_default_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv/linear weights and biases.

    The seed recipe was tuned with PyTorch's initialisation, so reproducing its numbers needs it.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
    """Non-overlapping 2x2 max pool as the maximum of four strided slices.

    Same values as `nnx.max_pool(x, (2, 2), (2, 2))`. Its gradient is elementwise selects
    instead of a select-and-scatter, which is 2-3x slower on XLA:CPU (and a reshape + max
    reduction is slower still); on GPU the difference is noise.
    """
    x = x_BxHxWxC
    return jnp.maximum(jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
                       jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


# ---- 3x3 convolution with a faster backward pass on XLA:CPU
#
# Measured on a 2-core x86 CPU (jax 0.10.2), seed CNN at batch 512: XLA:CPU computes the filter
# gradient of a convolution with a generic loop, 3x slower than nine matmuls over shifted
# inputs, and a forward convolution with 3 input channels runs at ~15 GFLOP/s where the
# equivalent im2col matmul is several times faster. Together they took the seed CNN's
# training from 0.55x to ~1.1x PyTorch eager. GPUs keep XLA's own (cuDNN) convolutions.

_DN = ("NHWC", "HWIO", "NHWC")
_IM2COL_MAX_CHANNELS = 8  # below this, im2col + matmul beats XLA:CPU's convolution


def _shifted(x_BxHxWxC: jax.Array):
    """The nine 3x3-neighbourhood shifts of x (SAME padding), in (dy, dx) row-major order."""
    _, h, w, _ = x_BxHxWxC.shape
    xp = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv3x3_cpu(x_BxHxWxC: jax.Array, w_3x3xCxO: jax.Array) -> jax.Array:
    """3x3, stride 1, SAME convolution; same values as XLA's, faster gradients on XLA:CPU."""
    return _conv3x3_fwd(x_BxHxWxC, w_3x3xCxO)[0]


def _conv3x3_fwd(x, w):
    b, h, wd, c = x.shape
    if c <= _IM2COL_MAX_CHANNELS:
        cols = jnp.concatenate(_shifted(x), axis=-1).reshape(b * h * wd, 9 * c)
        y = (cols @ w.reshape(9 * c, -1)).reshape(b, h, wd, -1)
        return y, (x, w, cols)
    return _conv(x, w), (x, w, None)


def _conv3x3_bwd(res, dy_BxHxWxO):
    x, w, cols = res
    c, o = w.shape[2], w.shape[3]
    dy = dy_BxHxWxO.reshape(-1, o)
    contract_rows = (((0,), (0,)), ((), ()))
    if cols is not None:
        dw = jax.lax.dot_general(cols, dy, contract_rows).reshape(w.shape)
    else:
        dw = jnp.stack([jax.lax.dot_general(s.reshape(-1, c), dy, contract_rows)
                        for s in _shifted(x)]).reshape(w.shape)
    # dx is the convolution of dy with the spatially flipped, in/out-swapped kernel.
    dx = _conv(dy_BxHxWxO, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    return dx.astype(x.dtype), dw.astype(w.dtype)


conv3x3_cpu.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
    """Drop-in for `lax.conv_general_dilated` (as nnx.Conv calls it) that takes the CPU fast
    path for 3x3 / stride 1 / SAME convolutions when the default backend is the CPU."""
    if (jax.default_backend() == "cpu" and lhs.ndim == 4 and rhs.shape[:2] == (3, 3)
            and tuple(window_strides) == (1, 1) and feature_group_count == 1
            and _is_same_3x3(padding) and precision is None
            and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
            and _is_nhwc(dimension_numbers, lhs, rhs)
            and not kwargs.get("preferred_element_type")
            and kwargs.get("out_sharding") is None):
        return conv3x3_cpu(lhs, rhs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision, **kwargs)


# ---- cache-sized micro-batches for inference on XLA:CPU
#
# At batch 1024 the seed CNN's full-resolution conv outputs (134 MB for conv1) go to memory and
# back before pooling; the inference forward is then memory-bound. Running the conv stack over
# micro-batches of 16 images in a loop keeps them in cache. Seed CNN forward at batch 1024 on a
# 2-core x86 (jax 0.10.2), wall time: 5,600 img/s whole, 6,370 / 6,050 / 5,610 / 5,130 img/s
# in micro-batches of 16 / 32 / 64 / 128. GPUs keep the whole batch.

MICRO_BATCH = 16


def micro_batch_size(batch: int) -> int | None:
    """The divisor of `batch` nearest `MICRO_BATCH` in [MICRO_BATCH / 2, 2 * MICRO_BATCH], if
    splitting pays."""
    if not isinstance(batch, int) or batch <= 2 * MICRO_BATCH:
        return None  # small or symbolic (jax.export) batches run whole
    sizes = [d for d in range(MICRO_BATCH // 2, 2 * MICRO_BATCH + 1) if batch % d == 0]
    return min(sizes, key=lambda d: abs(d - MICRO_BATCH)) if sizes else None


def micro_batched(f, x_BxHxWxC: jax.Array) -> jax.Array:
    """`f(x)` computed over cache-sized micro-batches on the CPU backend (same values)."""
    b = x_BxHxWxC.shape[0]
    size = micro_batch_size(b) if jax.default_backend() == "cpu" else None
    if size is None:
        return f(x_BxHxWxC)
    y = jax.lax.map(f, x_BxHxWxC.reshape(b // size, size, *x_BxHxWxC.shape[1:]))
    return y.reshape(b, *y.shape[2:])


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param leaves)."""
    params = nnx.state(model, nnx.Param)
    return sum(x.size for x in jax.tree.leaves(params))


def _is_same_3x3(padding) -> bool:
    if isinstance(padding, str):
        return padding.upper() == "SAME"
    return [tuple(p) for p in padding] == [(1, 1), (1, 1)]


def _is_nhwc(dimension_numbers, lhs, rhs) -> bool:
    want = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN)
    if dimension_numbers is None:
        return False  # lax's default is NCHW/OIHW
    return jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == want
