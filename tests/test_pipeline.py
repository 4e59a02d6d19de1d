"""The on-device input pipeline: order, crop, flip, normalisation, determinism."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.pipeline import (
    HostBatches,
    augment,
    epoch_order,
    epoch_permutation,
    normalize,
    random_crop,
    random_flip,
    take_batch,
)


def _images(n=16, h=8, w=8, c=3):
    return jnp.asarray(np.random.default_rng(0).integers(1, 256, (n, h, w, c)), jnp.uint8)


def test_epoch_permutation_is_a_fresh_permutation_per_epoch():
    key = jax.random.key(0)
    p0, p1 = (np.asarray(epoch_permutation(key, e, 100)) for e in (0, 1))
    assert sorted(p0) == list(range(100)) and sorted(p1) == list(range(100))
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(p0, epoch_permutation(key, 0, 100))


def test_take_batch_gathers_in_permutation_order():
    x = _images()
    y = jnp.arange(16)
    perm = jnp.asarray(np.random.default_rng(1).permutation(16))
    b = take_batch(x, y, perm, 1, 4)
    np.testing.assert_array_equal(b.label, perm[4:8])
    np.testing.assert_array_equal(b.image, x[perm[4:8]])


def test_flip_mirrors_exactly_the_chosen_images():
    x = _images()
    out = np.asarray(random_flip(jax.random.key(3), x))
    flipped = [np.array_equal(o, np.asarray(i)[:, ::-1]) for o, i in zip(out, x, strict=True)]
    kept = [np.array_equal(o, np.asarray(i)) for o, i in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each image one or the other
    assert 0 < sum(flipped) < len(x)


def test_crop_is_a_window_of_the_zero_padded_image():
    x = _images(n=32)
    out = np.asarray(random_crop(jax.random.key(5), x, 4))
    padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = set()
    for o, p in zip(out, padded, strict=True):
        hits = [(i, j) for i in range(9) for j in range(9)
                if np.array_equal(o, p[i:i + 8, j:j + 8])]
        assert hits, "a crop is not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets vary per image


def test_augment_is_deterministic_by_key():
    x = _images()
    a = augment(jax.random.key(7), x, 4, True)
    np.testing.assert_array_equal(a, augment(jax.random.key(7), x, 4, True))
    assert not np.array_equal(a, augment(jax.random.key(8), x, 4, True))
    np.testing.assert_array_equal(augment(jax.random.key(7), x, 0, False), x)


def test_normalize():
    x = jnp.asarray([[[[0, 255, 51]]]], jnp.uint8)
    out = normalize(x, (0.5, 0.5, 0.2), (0.5, 0.5, 0.1))
    np.testing.assert_allclose(out[0, 0, 0], [-1.0, 1.0, 0.0], atol=1e-6)
    assert normalize(x, 0.5, 0.5, jnp.bfloat16).dtype == jnp.bfloat16


def test_host_batches_follow_the_device_order():
    x = np.asarray(_images(n=20))
    y = np.arange(20, dtype=np.int32)
    key = jax.random.key(0)
    host = list(HostBatches(x, y, 6).epoch(key, 2))
    assert len(host) == 3  # the remainder of 2 is dropped
    perm = epoch_permutation(key, 2, 20)
    for i, b in enumerate(host):
        dev = take_batch(jnp.asarray(x), jnp.asarray(y), perm, i, 6)
        np.testing.assert_array_equal(b.label, dev.label)
        np.testing.assert_array_equal(b.image, dev.image)


def test_a_kept_remainder_is_a_padded_masked_last_batch_on_both_paths():
    x = np.asarray(_images(n=20))
    y = np.arange(20, dtype=np.int32)
    key = jax.random.key(0)
    host = list(HostBatches(x, y, 6, drop_remainder=False).epoch(key, 1))
    assert len(host) == 4  # 6 + 6 + 6 + 2 real rows
    perm = epoch_order(key, 1, 20, 4, 6)
    np.testing.assert_array_equal(perm[:20], epoch_permutation(key, 1, 20))
    np.testing.assert_array_equal(perm[20:], perm[:4])  # padding: valid rows, masked out
    seen = []
    for i, b in enumerate(host):
        dev = take_batch(jnp.asarray(x), jnp.asarray(y), perm, i, 6, valid=20)
        for field in ("label", "image", "index", "mask"):
            np.testing.assert_array_equal(getattr(b, field), getattr(dev, field))
        seen += list(np.asarray(b.label)[np.asarray(b.mask) == 1])
    np.testing.assert_array_equal(host[-1].mask, [1, 1, 0, 0, 0, 0])
    assert sorted(seen) == list(range(20))  # every image exactly once in the epoch
    assert take_batch(jnp.asarray(x), jnp.asarray(y), perm, 0, 6).mask is None
