"""Test-time augmentation: average a network's logits over mirrored and shifted views.

airbench's levels (`train.tta_level`):
  0  the image itself
  1  mean of the image and its mirror image
  2  mean of level 1 (weight 1/2) and of level 1 on the image shifted by one pixel up-left and
     down-right (reflect padding; weight 1/4 each): six views
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

LEVELS = (0, 1, 2)


def mirror(x_BxHxWxC: jax.Array) -> jax.Array:
    return x_BxHxWxC[:, :, ::-1, :]


def shifted(x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The image moved by one pixel towards the top-left and the bottom-right corners."""
    _, h, w, _ = x_BxHxWxC.shape
    xp = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    return xp[:, 0:h, 0:w], xp[:, 2:h + 2, 2:w + 2]


def predict(apply: Callable[[jax.Array], jax.Array], x_BxHxWxC: jax.Array, level: int
            ) -> jax.Array:
    """Logits of `apply` (images -> logits_BxK) averaged over the views of `level`."""
    if level not in LEVELS:
        raise ValueError(f"tta level must be one of {LEVELS}, got {level!r}")

    def with_mirror(x):
        # One call on both views: a batch twice as large runs better than two half-full calls.
        logits_2BxK = apply(jnp.concatenate([x, mirror(x)]))
        return logits_2BxK.reshape(2, x.shape[0], -1).mean(0)

    if level == 0:
        return apply(x_BxHxWxC)
    if level == 1:
        return with_mirror(x_BxHxWxC)
    up_left, down_right = shifted(x_BxHxWxC)
    return (0.5 * with_mirror(x_BxHxWxC)
            + 0.25 * with_mirror(up_left) + 0.25 * with_mirror(down_right))
