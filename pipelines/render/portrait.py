"""Reading a user's portrait safely: one clear error per way an image file can be wrong."""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 64


class PortraitError(ValueError):
    """The portrait cannot be used; the message says why, in one line."""


def load_portrait(path: str | os.PathLike[str], *, max_pixels: int) -> np.ndarray:
    """Return the image as RGB uint8 (H, W, 3), or raise PortraitError."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise PortraitError(f"portrait {name!r} does not exist or is not a file")
    try:
        with warnings.catch_warnings():  # PIL warns about big images; we decide below, clearly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(name)
        with im:
            w, h = im.size  # from the header: checked before any pixel is decoded
            if w * h > max_pixels:
                raise PortraitError(f"portrait {name!r} is {w}x{h} = {w * h} pixels, over the limit of "
                                    f"{max_pixels} (a decompression bomb or simply too large)")
            if min(w, h) < MIN_SIDE:
                raise PortraitError(f"portrait {name!r} is {w}x{h}; at least {MIN_SIDE}x{MIN_SIDE} is needed")
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except PortraitError:
        raise
    except UnidentifiedImageError:
        raise PortraitError(f"{name!r} is not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PortraitError(f"portrait {name!r} cannot be decoded ({exc})") from None
    return np.ascontiguousarray(rgb)
