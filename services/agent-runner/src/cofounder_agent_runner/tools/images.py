"""Screenshots bounded in size before they reach the model, the store and the feed.

A screenshot goes into the conversation (every later model call carries it until compaction),
into the checkpoint's row and into the screenshot store, so its size is bounded twice: the
browser's window is at most :data:`MAX_WIDTH` x :data:`MAX_HEIGHT` (the Messages API scales
images above ~1.15 megapixels down anyway, so larger ones cost tokens and show nothing more),
and a PNG over ``max_bytes`` is re-encoded smaller: first as a 256-colour palette PNG (a web
page's flat colours survive it; typically a third of the size), then halved in each dimension
until it fits. Pillow does the decoding and encoding: PNG's filters and zlib by hand would be a
codec of our own to get wrong, and Pillow is the maintained, ubiquitous one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_HEIGHT", "MAX_WIDTH", "PNG_SIGNATURE", "BoundedPng", "bound_png"]

MAX_WIDTH: Final = 1280
MAX_HEIGHT: Final = 800
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: Below this, halving further would leave nothing legible: the image is returned as it is.
_MIN_SIDE: Final = 160
#: The most pixels a screenshot may declare before it is decoded: a browser window's are well
#: below; a file the sandbox put in its place may declare billions (a few KB of zlib).
MAX_DECODE_PIXELS: Final = 4096 * 4096


@dataclass(frozen=True, slots=True)
class BoundedPng:
    """A PNG within the limits, its size in pixels, and whether it had to be re-encoded."""

    data: bytes
    width: int
    height: int
    reencoded: bool = False


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def bound_png(data: bytes, *, max_bytes: int) -> BoundedPng:
    """``data`` (a PNG) as it is when it fits in ``max_bytes`` and the window limits, else
    re-encoded smaller (see the module docstring). Raises ``ValueError`` when ``data`` is not a
    PNG (the browser wrote something else, or a partial file)."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("the screenshot is not a PNG")
    try:
        with Image.open(io.BytesIO(data)) as opened:  # reads the header only
            width, height = opened.size
            if width * height > MAX_DECODE_PIXELS:
                raise ValueError(
                    f"the screenshot is {width}x{height} pixels: too large to decode "
                    f"(at most {MAX_DECODE_PIXELS:,} pixels)"
                )
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the screenshot is not a readable PNG: {exc}") from None
    fits_window = image.width <= MAX_WIDTH and image.height <= MAX_HEIGHT
    if len(data) <= max_bytes and fits_window:
        return BoundedPng(data, image.width, image.height)
    if not fits_window:
        image.thumbnail((MAX_WIDTH, MAX_HEIGHT))
    image = image.convert("RGB").quantize(colors=256)
    encoded = _encode(image)
    while len(encoded) > max_bytes and min(image.width, image.height) // 2 >= _MIN_SIDE:
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.NEAREST)
        encoded = _encode(image)
    return BoundedPng(encoded, image.width, image.height, reencoded=True)
