"""Screenshots bounded in size: a PNG within the limits is kept as it is; one above the byte
limit or the window is re-encoded smaller; something that is not a PNG is refused."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from cofounder_agent_runner.tools.images import MAX_HEIGHT, MAX_WIDTH, PNG_SIGNATURE, bound_png


def _png(width: int, height: int, *, noisy: bool) -> bytes:
    image = Image.new("RGB", (width, height), "white")
    if noisy:  # a photo-like page: incompressible as a true-colour PNG
        rng = random.Random(7)
        image.putdata(
            [(rng.randrange(256), rng.randrange(256), rng.randrange(256))
             for _ in range(width * height)]
        )  # fmt: skip
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_a_small_png_is_kept_as_it_is() -> None:
    data = _png(MAX_WIDTH, MAX_HEIGHT, noisy=False)
    bounded = bound_png(data, max_bytes=1_000_000)
    assert bounded.data == data
    assert (bounded.width, bounded.height) == (MAX_WIDTH, MAX_HEIGHT)
    assert not bounded.reencoded


def test_a_large_png_is_reencoded_below_the_limit() -> None:
    data = _png(MAX_WIDTH, MAX_HEIGHT, noisy=True)
    assert len(data) > 1_000_000
    bounded = bound_png(data, max_bytes=300_000)
    assert bounded.reencoded
    assert len(bounded.data) <= 300_000
    with Image.open(io.BytesIO(bounded.data)) as image:
        assert image.format == "PNG"
        assert image.size == (bounded.width, bounded.height)
        assert image.width <= MAX_WIDTH
        assert image.height <= MAX_HEIGHT


def test_a_png_beyond_the_window_is_scaled_into_it() -> None:
    bounded = bound_png(_png(2 * MAX_WIDTH, 3 * MAX_HEIGHT, noisy=False), max_bytes=10_000_000)
    assert bounded.reencoded
    assert bounded.width <= MAX_WIDTH
    assert bounded.height == MAX_HEIGHT


@pytest.mark.parametrize("data", [b"", b"<html>", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_what_is_not_a_png_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="PNG"):
        bound_png(data, max_bytes=1_000_000)


def _declared(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds one compressed row: a
    few hundred bytes that would decode to ``width * height`` bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\0" * (width + 1))
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(5_000, 5_000), (20_000, 20_000)])
def test_a_png_declaring_too_many_pixels_is_refused_before_it_is_decoded(
    width: int, height: int
) -> None:
    """A file the sandbox put where the browser's screenshot goes: refused from its header,
    with no memory spent on it (Pillow's own bomb check, past ~179 M pixels, raised an error
    no tool caught, and the build failed)."""
    data = _declared(width, height)
    assert len(data) < 50_000
    with pytest.raises(ValueError, match=r"too large to decode|not a readable PNG"):
        bound_png(data, max_bytes=1_000_000)
