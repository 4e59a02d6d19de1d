"""A validation split held out of the training split: stratified by class, fixed by the seed.

    train_idx, val_idx = validation_indices(labels, config.data.validation, config.seed)

The same indices whether the images are arrays in memory or records streamed from disk.
"""

import numpy as np

from jaxcnn.errors import UserError


def validation_count(validation: float, n_train: int) -> int:
    """`data.validation` as a number of images: a fraction in (0, 1) of `n_train`, or a count
    (a whole number >= 1); 0 = none. Refused when it leaves no training image."""
    v = float(validation)
    if v < 0 or (v >= 1 and v != int(v)):
        raise UserError(f"data.validation={validation:g} is neither a fraction in (0, 1) nor a "
                        "whole number of images: use e.g. 0.1 or 5000 (0 = no validation split)")
    count = int(round(v * n_train)) if v < 1 else int(v)
    if v and count == 0:
        raise UserError(f"data.validation={v:g} of {n_train} training images holds out none: "
                        "use a larger fraction or a count")
    if count >= n_train:
        raise UserError(f"data.validation={v:g} holds out {count} images but the training split "
                        f"has {n_train}: use fewer than {n_train} (or a fraction below 1)")
    return count


def validation_indices(labels: np.ndarray, validation: float, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into `labels`, both sorted: `validation_count` images held
    out, each class giving its share (largest remainders), chosen at random from `seed`."""
    labels = np.asarray(labels)
    count = validation_count(validation, len(labels))
    if count == 0:
        return np.arange(len(labels)), np.arange(0)
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    take = np.floor(exact).astype(np.int64)
    rest = count - int(take.sum())
    # the remaining images go to the classes with the largest fractional shares (ties: lower
    # class first), so the split is exact and reproducible
    order = np.lexsort((classes, -(exact - take)))
    take[order[:rest]] += 1
    rng = np.random.default_rng([seed % 2**64, 0x5EED])  # config seeds may be negative
    held = [rng.permutation(np.flatnonzero(labels == c))[:k]
            for c, k in zip(classes, take, strict=True)]
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val
