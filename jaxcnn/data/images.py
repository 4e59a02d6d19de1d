"""One image from bytes, a path or a Pillow image to uint8 HxWxC, the same way everywhere.

Training (`folder.py`), `inference.prepare_images` and `serving.prepare` all go through
`serving.decode_image`: its docstring gives the conversion (size limit checked before decoding,
EXIF orientation, 16-bit grey / 257, float 0..1 * 255, RGB or grey, bilinear resize). The
function lives in `serving.py` because that file must run copied alone next to an export;
this module gives it jaxcnn's defaults and turns its errors into `UserError`.
"""

import os

import numpy as np
from PIL import Image

from jaxcnn import serving
from jaxcnn.errors import UserError

MAX_IMAGE_PIXELS = serving.MAX_IMAGE_PIXELS  # default of data.max_image_pixels
LIMIT_FIELD = "data.max_image_pixels"

Source = str | os.PathLike | bytes | Image.Image


def decode(source: Source, size_WxH: tuple[int, int] | None = None, *, name: str | None = None,
           channels: int = 3, max_image_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 HxWxC (C = `channels`, 3 or 1), resized to `size_WxH` if given; `UserError` naming
    `name` (default: the path) if the image is unreadable, truncated or over the pixel limit."""
    try:
        return serving.decode_image(source, size_WxH, name=name, channels=channels,
                                    max_pixels=max_image_pixels, limit_name=LIMIT_FIELD)
    except serving.ServingError as e:
        raise UserError(str(e)) from e


def upright_size(source: str | os.PathLike | bytes, *, name: str,
                 max_image_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(W, H) as `decode` would return it, read from the header without decoding the pixels."""
    try:
        with serving.open_image(source, name=name, max_pixels=max_image_pixels,
                                limit_name=LIMIT_FIELD) as im:
            return serving.upright_size(im)
    except serving.ServingError as e:
        raise UserError(str(e)) from e
