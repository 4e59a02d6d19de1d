"""Small data sets made in memory, for tests and smoke runs: sklearn's digits and random noise."""

import numpy as np

from jaxcnn.data.dataset import Dataset

DIGITS_TEST = 360  # of 1,797 images, leaving 1,437 for training
SYNTHETIC_SHAPE = (32, 32, 3)
SYNTHETIC_CLASSES = 10


def load_digits() -> Dataset:
    """sklearn's 1,797 8x8 handwritten digits as 32x32x3 uint8, split 1,437 train / 360 test.

    Pixels 0..16 are scaled to 0..255 and each is repeated 4x4 (nearest-neighbour upscaling,
    so every original pixel stays exact) and across 3 channels. The split is stratified by
    class with seed 0 (sklearn's `train_test_split`), so it is the same on every machine.
    """
    import sklearn.datasets  # lazy: slow to import, and only this data set needs it
    import sklearn.model_selection

    digits = sklearn.datasets.load_digits()
    x_Nx8x8 = np.round(digits.images * (255 / 16)).astype(np.uint8)
    x_Nx32x32x3 = np.repeat(np.repeat(x_Nx8x8, 4, axis=1), 4, axis=2)[..., None].repeat(3, -1)
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = sklearn.model_selection.train_test_split(
        x_Nx32x32x3, labels, test_size=DIGITS_TEST, stratify=labels, random_state=0)
    return Dataset(train_images=np.ascontiguousarray(train_x), train_labels=train_y,
                   test_images=np.ascontiguousarray(test_x), test_labels=test_y,
                   class_names=tuple(str(d) for d in range(10)), name="digits")


def load_synthetic(n_train: int = 50_000, n_test: int = 10_000) -> Dataset:
    """Uniform random 32x32x3 uint8 images with uniform random labels of 10 classes (seed 0).

    Nothing in it is learnable: it is for throughput and plumbing, not accuracy.
    """
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        # Draw 8 pixels per uint64: ~8x faster than drawing uint8 one by one.
        words = rng.integers(0, 2**64, size=-(-n * int(np.prod(SYNTHETIC_SHAPE)) // 8),
                             dtype=np.uint64, endpoint=False)
        return words.view(np.uint8)[:n * int(np.prod(SYNTHETIC_SHAPE))].reshape(
            n, *SYNTHETIC_SHAPE)

    def labels(n: int) -> np.ndarray:
        return rng.integers(0, SYNTHETIC_CLASSES, size=n, dtype=np.int32)

    return Dataset(train_images=images(n_train), train_labels=labels(n_train),
                   test_images=images(n_test), test_labels=labels(n_test),
                   class_names=tuple(f"class_{i}" for i in range(SYNTHETIC_CLASSES)),
                   name="synthetic")
