"""`Dataset`: an image classification data set held in host memory as uint8 NHWC arrays."""

import dataclasses

import numpy as np

from jaxcnn.data.split import validation_indices
from jaxcnn.errors import UserError


# eq=False: the generated __eq__ would compare arrays elementwise and fail on `bool(...)`.
# repr=False: the generated repr would print every pixel.
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train, test and optionally validation splits, labels `0..num_classes-1` indexing
    `class_names`."""

    train_images: np.ndarray  # uint8 NxHxWxC
    train_labels: np.ndarray  # int32 N
    test_images: np.ndarray  # uint8 MxHxWxC
    test_labels: np.ndarray  # int32 M
    class_names: tuple[str, ...]
    name: str
    val_images: np.ndarray | None = None  # uint8 VxHxWxC: the source's own, or `with_validation`
    val_labels: np.ndarray | None = None  # int32 V

    @property
    def has_validation(self) -> bool:
        return self.val_labels is not None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image, train and test alike."""
        return tuple(int(d) for d in self.train_images.shape[1:])

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.image_shape))
        val = f"val={len(self.val_labels)}, " if self.has_validation else ""
        return (f"Dataset(name={self.name!r}, train={len(self.train_labels)}, {val}"
                f"test={len(self.test_labels)}, image={shape}, classes={self.num_classes})")

    def splits(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """[(name, images, labels)] of the splits it has: train, val (if any), test."""
        val = [("val", self.val_images, self.val_labels)] if self.has_validation else []
        return [("train", self.train_images, self.train_labels), *val,
                ("test", self.test_images, self.test_labels)]

    def validate(self) -> "Dataset":
        """Check dtypes, shapes and label range; raise `UserError` naming the first problem."""
        where = f"data set {self.name!r}"
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise UserError(f"{where} has no class names or a non-string one: give each class "
                            "a name")
        if len(set(self.class_names)) != len(self.class_names):
            raise UserError(f"{where} has duplicate class names {self.class_names}: make them "
                            "unique")
        if (self.val_images is None) != (self.val_labels is None):
            raise UserError(f"{where} has validation images without labels or labels without "
                            "images: give both or neither")
        for split, images, labels in self.splits():
            if images.dtype != np.uint8 or images.ndim != 4:
                raise UserError(f"{where}: {split} images are {images.dtype} with shape "
                                f"{images.shape}, expected uint8 NxHxWxC")
            if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
                raise UserError(f"{where}: {split} labels are {labels.dtype} with shape "
                                f"{labels.shape}, expected int32 ({len(images)},)")
            if len(labels) == 0:
                raise UserError(f"{where} has no {split} images: add some")
            if images.shape[1:] != self.train_images.shape[1:]:
                raise UserError(f"{where}: {split} images are {images.shape[1:]} but train images "
                                f"are {self.train_images.shape[1:]}: make them the same size")
            low, high, k = int(labels.min()), int(labels.max()), self.num_classes
            if low < 0 or high >= k:
                raise UserError(f"{where}: {split} labels span {low}..{high} but there are {k} "
                                f"classes: labels must be 0..{k - 1}")
        return self

    def subset(self, classes: str | list = "", train_per_class: int = 0) -> "Dataset":
        """Only `classes` (names or indices, relabelled 0..k-1 in that order; "" = all), and at
        most the first `train_per_class` training images of each (0 = all); test set: all of them.
        """
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        keep = list(range(self.num_classes))
        if classes:
            keep = []
            for c in classes:
                if str(c) in self.class_names:
                    keep.append(self.class_names.index(str(c)))
                elif str(c).isdigit() and int(c) < self.num_classes:
                    keep.append(int(c))
                else:
                    raise UserError(f"data.classes: {c!r} is not a class of {self.name} "
                                    f"({', '.join(self.class_names)}) nor an index below "
                                    f"{self.num_classes}")
            if len(set(keep)) != len(keep):
                raise UserError(f"data.classes {classes} names a class twice")
        relabel = np.full(self.num_classes, -1, np.int32)
        relabel[keep] = np.arange(len(keep), dtype=np.int32)

        def pick(labels: np.ndarray, limit: int) -> np.ndarray:
            idx = np.flatnonzero(relabel[labels] >= 0)
            if limit:
                rank = np.zeros(len(idx), np.int64)  # position of each image within its class
                for c in keep:
                    in_c = labels[idx] == c
                    rank[in_c] = np.arange(in_c.sum())
                idx = idx[rank < limit]
            return idx

        tr, te = pick(self.train_labels, train_per_class), pick(self.test_labels, 0)
        name = self.name + (f"[{','.join(self.class_names[c] for c in keep)}]" if classes else "")
        name += f"[{train_per_class}/class]" if train_per_class else ""
        val = {}
        if self.has_validation:
            va = pick(self.val_labels, 0)
            val = {"val_images": self.val_images[va], "val_labels": relabel[self.val_labels[va]]}
        return Dataset(self.train_images[tr], relabel[self.train_labels[tr]],
                       self.test_images[te], relabel[self.test_labels[te]],
                       tuple(self.class_names[c] for c in keep), name, **val).validate()

    def with_image_size(self, size: int) -> "Dataset":
        """Every split resized to `size` x `size` with Pillow's bilinear filter (as folders and
        image files are); itself when already that size or 0."""
        if not size or self.image_shape[:2] == (size, size):
            return self
        from PIL import Image

        def resize(x):
            if x is None:
                return None
            out = [np.asarray(Image.fromarray(i.squeeze(-1) if i.shape[-1] == 1 else i)
                              .resize((size, size), Image.Resampling.BILINEAR)) for i in x]
            return np.stack(out).reshape(len(x), size, size, x.shape[-1])

        return dataclasses.replace(
            self, train_images=resize(self.train_images), test_images=resize(self.test_images),
            val_images=resize(self.val_images)).validate()

    def with_channels(self, channels: int) -> "Dataset":
        """Every split as `channels` (1: grey, by Pillow's RGB -> L weights, as predict and
        serving convert files; 3: RGB, grey repeated); itself when it has them already or 0."""
        have = self.image_shape[-1]
        if not channels or channels == have:
            return self
        if (have, channels) not in ((3, 1), (1, 3)):
            raise UserError(f"data.channels={channels}: {self.name} has {have}-channel images, "
                            "which convert only between 1 (grey) and 3 (RGB): use 1 or 3")

        def convert(x):
            if x is None:
                return None
            if channels == 3:
                return np.repeat(x, 3, axis=-1)
            # Pillow's integer luma: (19595 R + 38470 G + 7471 B + 2^15) >> 16
            w = np.array([19595, 38470, 7471], np.uint32)
            return ((x.astype(np.uint32) @ w + 0x8000) >> 16).astype(np.uint8)[..., None]

        return dataclasses.replace(
            self, train_images=convert(self.train_images), test_images=convert(self.test_images),
            val_images=convert(self.val_images)).validate()

    def with_validation(self, validation: float, seed: int) -> "Dataset":
        """`validation` (a fraction or a count, `split.validation_indices`) of the training
        images held out as the validation split, stratified by class, fixed by `seed`; itself
        when 0. Refused when the source already has a validation split."""
        if not validation:
            return self
        if self.has_validation:
            raise UserError(f"data set {self.name!r} has its own validation split "
                            f"({len(self.val_labels)} images): drop data.validation to use it")
        train, val = validation_indices(self.train_labels, validation, seed)
        return dataclasses.replace(self, train_images=self.train_images[train],
                                   train_labels=self.train_labels[train],
                                   val_images=self.train_images[val],
                                   val_labels=self.train_labels[val]).validate()
