"""The input pipeline on the device: shuffle, gather, crop, flip and normalise inside jit.

The whole uint8 data set sits on the device (CIFAR-10 is 150 MB), so a training step gathers
its batch from device memory instead of copying it from the host; augmentation runs on the
device, keyed by `fold_in(key, epoch)`. `HostBatches` is the fallback for data that does not fit.
"""

from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Batch(NamedTuple):
    image: jax.Array  # uint8 BxHxWxC
    label: jax.Array  # int32 B
    index: jax.Array | None = None  # int32 B: each image's row in the data set (alternating flip)
    mask: jax.Array | None = None  # float32 B, 0 for padding (an epoch's last batch); None: all 1


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
    """The order of the `n` training examples in `epoch`: a fresh permutation per epoch."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Full batches only, or one more for the rest of the data set."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_order(key: jax.Array, epoch: int, n: int, steps: int, batch_size: int) -> jax.Array:
    """`epoch_permutation`, padded to `steps` full batches with its own first entries: the
    padding rows of a kept remainder batch (masked out by `take_batch`)."""
    perm = epoch_permutation(key, epoch, n)
    pad = steps * batch_size - n
    return jnp.concatenate([perm, perm[:pad]]) if pad > 0 else perm


def take_batch(images: jax.Array, labels: jax.Array, perm: jax.Array, i: jax.Array,
               batch_size: int, valid: int | None = None) -> Batch:
    """Batch `i` of an epoch whose order is `perm`, gathered on the device. With `valid` (the
    data set's size, static) rows past it are padding: the batch gets a mask."""
    idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
    mask = None
    if valid is not None:
        mask = (i * batch_size + jnp.arange(batch_size) < valid).astype(jnp.float32)
    return Batch(images[idx], labels[idx], idx, mask)


def random_crop(key: jax.Array, x_BxHxWxC: jax.Array, padding: int, fill: str = "zero"
                ) -> jax.Array:
    """Pad by `padding` and crop back to HxW at a random offset per image.

    `fill`: "zero" pads with black; "reflect" mirrors the border (airbench's translate, which
    never shows the network an artificial edge)."""
    b, h, w, c = x_BxHxWxC.shape
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    xp = jnp.pad(x_BxHxWxC, pad, mode="reflect") if fill == "reflect" else jnp.pad(x_BxHxWxC, pad)
    offsets_Bx2 = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(xp, offsets_Bx2)


def random_flip(key: jax.Array, x_BxHxWxC: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2."""
    flip_B = jax.random.bernoulli(key, 0.5, (x_BxHxWxC.shape[0],))
    return jnp.where(flip_B[:, None, None, None], x_BxHxWxC[:, :, ::-1, :], x_BxHxWxC)


def alternating_flip(key: jax.Array, batch: Batch, epoch: int | jax.Array) -> Batch:
    """airbench's flip: a fixed random half of the data set (drawn from `key` by each image's
    row, `batch.index`) is mirrored in even epochs, the other half in odd epochs.

    Every image is seen both ways in every two epochs, where independent random flips show the
    same side twice in a row half the time: more distinct views for the same number of epochs.
    """
    first_B = jax.vmap(lambda j: jax.random.bernoulli(jax.random.fold_in(key, j)))(batch.index)
    flip_B = first_B ^ (jnp.asarray(epoch) % 2 == 1)
    x = jnp.where(flip_B[:, None, None, None], batch.image[:, :, ::-1, :], batch.image)
    return batch._replace(image=x)


def augment(key: jax.Array, x_BxHxWxC: jax.Array, crop_padding: int, flip: bool | str,
            crop_fill: str = "zero") -> jax.Array:
    """Random crop (if `crop_padding` > 0) then random flip (if `flip` is True or "random"), on
    uint8 images. `flip="alternating"` is done where batches are gathered (`alternating_flip`),
    since it depends on the image's row and the epoch."""
    k_crop, k_flip = jax.random.split(key)
    if crop_padding:
        x_BxHxWxC = random_crop(k_crop, x_BxHxWxC, crop_padding, crop_fill)
    if flip is True or flip == "random":
        x_BxHxWxC = random_flip(k_flip, x_BxHxWxC)
    return x_BxHxWxC


def normalize(x_BxHxWxC: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
    """uint8 -> (x / 255 - mean) / std, per channel (or scalar) mean and std."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((x_BxHxWxC.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)


class HostBatches:
    """Streaming fallback: shuffled batches gathered on the host, copied to the device per step.

    Same order as the on-device path (the permutation is computed with the same key), so a run
    gives the same result either way.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int,
                 drop_remainder: bool = True):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.drop_remainder = drop_remainder
        self.steps = steps_per_epoch(len(labels), batch_size, drop_remainder)

    def epoch(self, key: jax.Array, epoch: int, sharding=None, start: int = 0
              ) -> Iterator[Batch]:
        """Batches `start`.. of `epoch`; with a `sharding`, each process sends only its rows."""
        n, b = len(self.labels), self.batch_size
        perm = np.asarray(epoch_order(key, epoch, n, self.steps, b))
        n_proc, proc = jax.process_count(), jax.process_index()
        for i in range(start, self.steps):
            rows = np.arange(i * b, (i + 1) * b)
            arrays = [self.images[perm[rows]], self.labels[perm[rows]], perm[rows].astype(np.int32)]
            if not self.drop_remainder:
                arrays.append((rows < n).astype(np.float32))
            if sharding is None:
                yield Batch(*jax.device_put(tuple(arrays)))
                continue
            mine = slice(proc * b // n_proc, (proc + 1) * b // n_proc)
            yield Batch(*(jax.make_array_from_process_local_data(sharding, a[mine],
                                                                 (b,) + a.shape[1:])
                          for a in arrays))
