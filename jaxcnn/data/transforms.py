"""Host-side image transforms for streamed data: encoded bytes -> augmented uint8 HxWxC.

    t = train_transform(config, (224, 224, 3))   # t(image_bytes, rng) -> uint8 224x224x3
    e = eval_transform(config, (224, 224, 3))    # e(image_bytes)      -> uint8 224x224x3

They run in data-loader worker processes (Grain's), so they are plain picklable objects that use
numpy and Pillow only: nothing here touches JAX, and a worker never initialises a device.
Pixels come from the project's one decoder (`images.decode`: size limit, EXIF orientation,
16-bit and float scaling, RGB or grey), so a streamed image matches an in-memory one.

Train, in this order (each by its config field; off by default):
- `data.random_resized_crop` (lo, hi): torchvision's RandomResizedCrop: a crop of lo..hi of
  the area with an aspect ratio (w/h) log-uniform in `data.random_resized_crop_ratio`, 10 tries,
  then the central crop clamped to that ratio; the crop is resized to HxW. Off: the whole image
  is resized to HxW (as folder: does for in-memory data).
- `data.crop_padding` P: pad by P (`data.crop_fill` zero or reflect) and crop HxW at an offset
  uniform in 0..2P per axis, as `pipeline.random_crop` does on the device.
- `data.flip` True/random: mirror left-right with probability 1/2.
Eval: `data.center_crop` f > 0 resizes the image, aspect kept, to cover H/f x W/f (for a square
HxW: its shorter side to round(H / f), 256 for 224 at 0.875, the ImageNet recipes' center crop)
then takes the central HxW; 0 resizes the whole image to HxW.
Resizing is Pillow's bilinear filter, antialiased when shrinking, as torchvision's on images.
"""

import dataclasses
import math

import numpy as np
from PIL import Image

from jaxcnn.data import images
from jaxcnn.errors import UserError

RRC_TRIES = 10  # torchvision's RandomResizedCrop tries this many random crops, then falls back


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale: tuple[float, float], ratio: tuple[float, float]
                            ) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop as torchvision's `RandomResizedCrop.get_params` draws it."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(RRC_TRIES):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # No try fitted: the central crop, as large as the aspect ratio range allows.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, out_h: int, out_w: int, fraction: float
                    ) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """((W, H) to resize to, (left, top, right, bottom) of the central out_h x out_w in it).

    The resize keeps the aspect ratio and covers round(out / fraction) on both axes; the
    longer side is truncated and the offsets rounded as torchvision's Resize and CenterCrop do.
    """
    cover_h, cover_w = round(out_h / fraction), round(out_w / fraction)
    if width * cover_h >= height * cover_w:  # relatively wider than the target: height binds
        new_h, new_w = cover_h, int(cover_h * width / height)
    else:
        new_h, new_w = int(cover_w * height / width), cover_w
    top, left = int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))
    return (new_w, new_h), (left, top, left + out_w, top + out_h)


def pad_crop(x_HxWxC: np.ndarray, offset_yx: tuple[int, int], padding: int, fill: str
             ) -> np.ndarray:
    """Pad by `padding` (zero or reflect) and crop back to HxW from `offset_yx`."""
    h, w, _ = x_HxWxC.shape
    pad = ((padding, padding), (padding, padding), (0, 0))
    xp = np.pad(x_HxWxC, pad, mode="reflect") if fill == "reflect" else np.pad(x_HxWxC, pad)
    y, x = offset_yx
    return xp[y:y + h, x:x + w]


def _pil(x_HxWxC: np.ndarray) -> Image.Image:
    return Image.fromarray(x_HxWxC[..., 0] if x_HxWxC.shape[2] == 1 else x_HxWxC)


def _array(im: Image.Image, channels: int) -> np.ndarray:
    x = np.asarray(im)
    return x[..., None] if channels == 1 else x


@dataclasses.dataclass(frozen=True)
class _Decode:
    size_HxWxC: tuple[int, int, int]
    max_image_pixels: int

    def decode(self, image_bytes: bytes, resize: bool) -> np.ndarray:
        h, w, c = self.size_HxWxC
        return images.decode(image_bytes, (w, h) if resize else None, channels=c,
                             max_image_pixels=self.max_image_pixels)


@dataclasses.dataclass(frozen=True)
class TrainTransform(_Decode):
    """`(image_bytes, rng) -> uint8 HxWxC`: crop, pad-crop, flip drawn from `rng` in that order."""
    scale: tuple[float, float] | None  # random-resized crop's area range; None = off
    ratio: tuple[float, float]
    crop_padding: int
    crop_fill: str
    flip: bool

    def __call__(self, image_bytes: bytes, rng: np.random.Generator) -> np.ndarray:
        h, w, c = self.size_HxWxC
        if self.scale is None:
            x_HxWxC = self.decode(image_bytes, resize=True)
        else:
            full = self.decode(image_bytes, resize=False)
            top, left, ch, cw = random_resized_crop_box(rng, *full.shape[:2], self.scale,
                                                        self.ratio)
            crop = _pil(full).crop((left, top, left + cw, top + ch))
            x_HxWxC = _array(crop.resize((w, h), Image.Resampling.BILINEAR), c)
        if self.crop_padding:
            offset = rng.integers(0, 2 * self.crop_padding + 1, size=2)
            x_HxWxC = pad_crop(x_HxWxC, tuple(offset), self.crop_padding, self.crop_fill)
        if self.flip and rng.random() < 0.5:
            x_HxWxC = x_HxWxC[:, ::-1]
        return np.ascontiguousarray(x_HxWxC)


@dataclasses.dataclass(frozen=True)
class EvalTransform(_Decode):
    """`image_bytes -> uint8 HxWxC`: center crop (`fraction` > 0) or a resize of the whole."""
    fraction: float

    def __call__(self, image_bytes: bytes) -> np.ndarray:
        h, w, c = self.size_HxWxC
        if not self.fraction:
            return self.decode(image_bytes, resize=True)
        full = self.decode(image_bytes, resize=False)
        size_WxH, box = center_crop_box(*full.shape[:2], h, w, self.fraction)
        im = _pil(full)
        if im.size != size_WxH:
            im = im.resize(size_WxH, Image.Resampling.BILINEAR)
        return _array(im.crop(box), c)


def _shape(config, image_shape_HxWxC) -> tuple[int, int, int]:
    h, w, c = (int(d) for d in image_shape_HxWxC)
    want = config.data.channels
    if want and want != c:
        raise UserError(f"data.channels={want} but the images are {h}x{w}x{c}: build the "
                        f"transform for {h}x{w}x{want} images")
    if c not in (1, 3) or h < 1 or w < 1:
        raise UserError(f"image shape {h}x{w}x{c}: transforms make 1 (grey) or 3 (RGB) "
                        "channels of at least 1x1 pixels")
    return h, w, c


def train_transform(config, image_shape_HxWxC) -> TrainTransform:
    """The training augmentation that `config.data` asks for, to images of `image_shape_HxWxC`."""
    d = config.data
    if d.flip == "alternating":
        raise UserError("data.flip=alternating depends on each image's row and the epoch, which "
                        "streamed data does not give a transform: use data.flip=true, or keep "
                        "the data on the device (data.on_device=yes)")
    rrc = tuple(d.random_resized_crop)
    return TrainTransform(_shape(config, image_shape_HxWxC), d.max_image_pixels,
                          scale=(float(rrc[0]), float(rrc[1])) if rrc else None,
                          ratio=tuple(float(r) for r in d.random_resized_crop_ratio),
                          crop_padding=d.crop_padding, crop_fill=d.crop_fill,
                          flip=d.flip is True or d.flip == "random")


def eval_transform(config, image_shape_HxWxC) -> EvalTransform:
    """The evaluation transform (center crop or resize) to images of `image_shape_HxWxC`."""
    return EvalTransform(_shape(config, image_shape_HxWxC), config.data.max_image_pixels,
                         fraction=float(config.data.center_crop))
