"""Small building blocks shared by the models."""

import contextlib
import contextvars
import functools
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


# PyTorch's BatchNorm (momentum 0.1, eps 1e-5) in flax's convention: flax weights the running
# value, so PyTorch's momentum 0.1 is flax's 0.9. The zoo's CIFAR references all use it.
TORCH_BN = dict(momentum=0.9, epsilon=1e-5)


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
    """Non-overlapping 2x2 max pool as the maximum of four strided slices; an odd last row or
    column is dropped (PyTorch's floor mode).

    Same values as `nnx.max_pool(x, (2, 2), (2, 2))`. Its gradient is elementwise selects
    instead of a select-and-scatter, which is 2-3x slower on XLA:CPU (and a reshape + max
    reduction is slower still); on GPU the difference is noise.
    """
    _, h, w, _ = x_BxHxWxC.shape
    x = x_BxHxWxC[:, :h // 2 * 2, :w // 2 * 2]
    return jnp.maximum(jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
                       jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


def avg_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
    """Non-overlapping 2x2 average pool (PyTorch's `avg_pool2d(x, 2)`, floor mode), as the mean
    of four strided slices: no reduce-window, and additions only (no FLOPs in `summary`)."""
    _, h, w, _ = x_BxHxWxC.shape
    x = x_BxHxWxC[:, :h // 2 * 2, :w // 2 * 2]
    return (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * 0.25


# ---- convolutions for XLA:CPU, chosen per lowering platform
#
# XLA:CPU runs a convolution with Eigen only in the canonical layout (NHWC input, HWIO kernel,
# NHWC output); any other convolution becomes a naive loop nest, many times slower. Autodiff of
# an NHWC convolution produces non-canonical ones (the filter gradient contracts over the
# batch, the input gradient swaps the kernel's in/out), and XLA:CPU rewrites those into the
# canonical form only in the entry computation (its ConvCanonicalization pass), not inside a
# while loop: ResNet-20's train step ran 32x slower inside `lax.fori_loop` (6.2 s vs 0.20 s at
# batch 64, jax 0.10.2; results/conv-in-loop-2026-11-29). `conv_cpu` therefore writes its own
# backward pass in canonical operations only: the filter gradient as one matmul per kernel tap
# over strided shifts of the input (in the loop faster than the filter gradient as a canonical
# convolution for ResNet-20, ResNet-18 and airbench: results/cpu-step-experiments-2026-11-29),
# the input gradient as a canonical convolution of the (stride-dilated) output gradient with
# the flipped kernel. A forward convolution with few input channels runs as im2col + one
# matmul, faster than XLA:CPU's convolution with 3 input channels. `conv_general_dilated` picks
# this path for the CPU lowering only (`lax.platform_dependent`): a CUDA lowering of the same
# trace keeps XLA's convolutions (cuDNN).

_DN = ("NHWC", "HWIO", "NHWC")
_XLA_ONLY = contextvars.ContextVar("jaxcnn_xla_only", default=False)


@contextlib.contextmanager
def xla_convolutions():
    """Trace models with XLA's own convolutions and whole batches, for every platform.

    The CPU paths below (`conv_cpu`, `micro_batched`) are training and inference speed-ups that
    compute the same values. Code that reads or rewrites the traced operations needs the plain
    ones instead: qwix quantization (it intercepts `lax.conv_general_dilated` and swaps the
    kernel for int8) and ONNX export (one Conv node per convolution, no platform switch).
    """
    token = _XLA_ONLY.set(True)
    try:
        yield
    finally:
        _XLA_ONLY.reset(token)

CPU_CONV_SCOPE = "jaxcnn_cpu_conv"  # the name scope of the CPU path in a lowering's locations
_IM2COL_MAX_CHANNELS = 8  # below this, im2col + matmul beats XLA:CPU's convolution


def _conv(x, w, strides=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=None):
    return jax.lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dilation,
                                        dimension_numbers=_DN)


def _taps(x_BxHxWxC: jax.Array, kernel_hw, strides, padding, out_hw):
    """For every kernel tap (dy, dx), row-major: the input pixels it meets, B x Ho x Wo x C."""
    xp = jnp.pad(x_BxHxWxC, ((0, 0), *padding, (0, 0)))
    (sh, sw), (ho, wo) = strides, out_hw
    return [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kernel_hw[0]) for j in range(kernel_hw[1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_cpu(x_BxHxWxC: jax.Array, w_KxKxCxO: jax.Array, strides=(1, 1),
             padding=((1, 1), (1, 1))) -> jax.Array:
    """NHWC x HWIO convolution (explicit padding pairs); same values as XLA's, and every
    operation of its forward and backward pass is one XLA:CPU runs fast, inside loops too."""
    return _conv_cpu_fwd(x_BxHxWxC, w_KxKxCxO, strides, padding)[0]


def _conv_cpu_fwd(x, w, strides, padding):
    kh, kw, c, o = w.shape
    if c > _IM2COL_MAX_CHANNELS:
        return _conv(x, w, strides, padding), (x, w, None)
    b, h, wd, _ = x.shape
    out_hw = tuple((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s
                   in zip((h, wd), padding, (kh, kw), strides, strict=True))
    cols = jnp.concatenate(_taps(x, (kh, kw), strides, padding, out_hw), axis=-1)
    cols = cols.reshape(-1, kh * kw * c)
    y = (cols @ w.reshape(kh * kw * c, o)).reshape(b, *out_hw, o)
    return y, (x, w, cols)


def _conv_cpu_bwd(strides, padding, res, dy_BxHoxWoxO):
    x, w, cols = res
    kh, kw, c, o = w.shape
    out_hw = dy_BxHoxWoxO.shape[1:3]
    dy = dy_BxHoxWoxO.reshape(-1, o)
    contract_rows = (((0,), (0,)), ((), ()))
    if cols is not None:
        dw = jax.lax.dot_general(cols, dy, contract_rows).reshape(w.shape)
    else:
        dw = jnp.stack([jax.lax.dot_general(t.reshape(-1, c), dy, contract_rows)
                        for t in _taps(x, (kh, kw), strides, padding, out_hw)]).reshape(w.shape)
    # dx: the output gradient, dilated by the stride, convolved with the flipped kernel whose
    # in/out channels are swapped; the padding puts every input pixel under its taps.
    pads = [(k - 1 - lo, n + lo - 1 - s * (m - 1)) for n, m, k, s, (lo, _) in
            zip(x.shape[1:3], out_hw, (kh, kw), strides, padding, strict=True)]
    w_flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    dx = _conv(dy_BxHoxWoxO, w_flipped, (1, 1), pads, lhs_dilation=tuple(strides))
    return dx.astype(x.dtype), dw.astype(w.dtype)


conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
    """Drop-in for `lax.conv_general_dilated` (as nnx.Conv calls it): an undilated, ungrouped
    NHWC x HWIO convolution lowers to `conv_cpu` for CPUs and to XLA's own elsewhere."""
    def xla(x, w):
        return jax.lax.conv_general_dilated(x, w, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers,
                                            feature_group_count, precision=precision, **kwargs)

    if _XLA_ONLY.get() or not (lhs.ndim == 4 and feature_group_count == 1 and precision is None
            and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
            and _is_nhwc(dimension_numbers, lhs, rhs)
            and not kwargs.get("preferred_element_type")
            and kwargs.get("out_sharding") is None):
        return xla(lhs, rhs)
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    def cpu(x, w):
        with jax.named_scope(CPU_CONV_SCOPE):  # lets tests find this path in a lowering
            return conv_cpu(x, w, strides, pads)

    return jax.lax.platform_dependent(lhs, rhs, cpu=cpu, default=xla)


def conv_nhwc(x_BxHxWxC: jax.Array, w_KxKxCxO: jax.Array, strides=(1, 1), padding="SAME"
              ) -> jax.Array:
    """An NHWC x HWIO convolution through `conv_general_dilated` (for modules that call the
    convolution themselves rather than through nnx.Conv)."""
    return conv_general_dilated(x_BxHxWxC, w_KxKxCxO, strides, padding, dimension_numbers=_DN)


# ---- cache-sized micro-batches for inference on XLA:CPU
#
# At batch 1024 the seed CNN's full-resolution conv outputs (134 MB for conv1) go to memory and
# back before pooling; the inference forward is then memory-bound. Running the conv stack over
# micro-batches of 16 images in a loop keeps them in cache. Seed CNN forward at batch 1024 on a
# 2-core x86 (jax 0.10.2), wall time: 5,600 img/s whole, 6,370 / 6,050 / 5,610 / 5,130 img/s
# in micro-batches of 16 / 32 / 64 / 128. GPUs keep the whole batch (chosen per lowering).

MICRO_BATCH = 16
CPU_MICRO_BATCH_SCOPE = "jaxcnn_cpu_micro_batch"


def micro_batch_size(batch: int) -> int | None:
    """The divisor of `batch` nearest `MICRO_BATCH` in [MICRO_BATCH / 2, 2 * MICRO_BATCH], if
    splitting pays."""
    if not isinstance(batch, int) or batch <= 2 * MICRO_BATCH:
        return None  # small or symbolic (jax.export) batches run whole
    sizes = [d for d in range(MICRO_BATCH // 2, 2 * MICRO_BATCH + 1) if batch % d == 0]
    return min(sizes, key=lambda d: abs(d - MICRO_BATCH)) if sizes else None


def micro_batched(f, x_BxHxWxC: jax.Array) -> jax.Array:
    """`f(x)`, computed over cache-sized micro-batches when lowered for the CPU (same values)."""
    b = x_BxHxWxC.shape[0]
    size = None if _XLA_ONLY.get() else micro_batch_size(b)
    if size is None:
        return f(x_BxHxWxC)

    def looped(x):
        with jax.named_scope(CPU_MICRO_BATCH_SCOPE):
            y = jax.lax.map(f, x.reshape(b // size, size, *x.shape[1:]))
        return y.reshape(b, *y.shape[2:])

    return jax.lax.platform_dependent(x_BxHxWxC, cpu=looped, default=f)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param leaves)."""
    params = nnx.state(model, nnx.Param)
    return sum(x.size for x in jax.tree.leaves(params))


def _is_nhwc(dimension_numbers, lhs, rhs) -> bool:
    want = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN)
    if dimension_numbers is None:
        return False  # lax's default is NCHW/OIHW
    return jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == want
