"""`Dataset`: an image classification data set held in host memory as uint8 NHWC arrays."""

import dataclasses

import numpy as np

from jaxcnn.errors import UserError


# eq=False: the generated __eq__ would compare arrays elementwise and fail on `bool(...)`.
# repr=False: the generated repr would print every pixel.
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train and test splits, labels `0..num_classes-1` indexing `class_names`."""

    train_images: np.ndarray  # uint8 NxHxWxC
    train_labels: np.ndarray  # int32 N
    test_images: np.ndarray  # uint8 MxHxWxC
    test_labels: np.ndarray  # int32 M
    class_names: tuple[str, ...]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image, train and test alike."""
        return tuple(int(d) for d in self.train_images.shape[1:])

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.image_shape))
        return (f"Dataset(name={self.name!r}, train={len(self.train_labels)}, "
                f"test={len(self.test_labels)}, image={shape}, classes={self.num_classes})")

    def validate(self) -> "Dataset":
        """Check dtypes, shapes and label range; raise `UserError` naming the first problem."""
        where = f"data set {self.name!r}"
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise UserError(f"{where} has no class names or a non-string one: give each class "
                            "a name")
        if len(set(self.class_names)) != len(self.class_names):
            raise UserError(f"{where} has duplicate class names {self.class_names}: make them "
                            "unique")
        for split, images, labels in (("train", self.train_images, self.train_labels),
                                      ("test", self.test_images, self.test_labels)):
            if images.dtype != np.uint8 or images.ndim != 4:
                raise UserError(f"{where}: {split} images are {images.dtype} with shape "
                                f"{images.shape}, expected uint8 NxHxWxC")
            if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
                raise UserError(f"{where}: {split} labels are {labels.dtype} with shape "
                                f"{labels.shape}, expected int32 ({len(images)},)")
            if len(labels) == 0:
                raise UserError(f"{where} has no {split} images: add some")
            if images.shape[1:] != self.train_images.shape[1:]:
                raise UserError(f"{where}: test images are {images.shape[1:]} but train images "
                                f"are {self.train_images.shape[1:]}: make them the same size")
            low, high, k = int(labels.min()), int(labels.max()), self.num_classes
            if low < 0 or high >= k:
                raise UserError(f"{where}: {split} labels span {low}..{high} but there are {k} "
                                f"classes: labels must be 0..{k - 1}")
        return self
