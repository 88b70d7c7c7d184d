"""Reading, resizing, labelling and tiling RGB images for the report and the contact sheet (Pillow).

Every image here is a ``PIL.Image.Image`` in mode ``RGB``; transparent PNGs (the capture's views)
are composited on white, as the backend learns them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

BACKGROUND = (255, 255, 255)
PLACEHOLDER = (225, 225, 225)
TEXT = (20, 20, 20)


def read_rgb(path: str | Path, size: int | None = None) -> "Image.Image":
    """``path`` as RGB on white; ``size``: fit the longest side to it (aspect kept)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", rgba.size, BACKGROUND)
            out.paste(rgba, mask=rgba.getchannel("A"))
        else:
            out = im.convert("RGB")
    return fit(out, size) if size else out


def fit(image: "Image.Image", size: int) -> "Image.Image":
    """``image`` scaled so that its longest side is ``size`` pixels."""
    from PIL import Image

    w, h = image.size
    scale = size / max(w, h)
    if scale == 1.0:
        return image
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def square(image: "Image.Image", size: int) -> "Image.Image":
    """``image`` fitted into a ``size`` x ``size`` white tile, centred."""
    from PIL import Image

    tile = Image.new("RGB", (size, size), BACKGROUND)
    small = fit(image, size)
    tile.paste(small, ((size - small.width) // 2, (size - small.height) // 2))
    return tile


def placeholder(size: int, text: str) -> "Image.Image":
    """A grey ``size`` x ``size`` tile saying ``text`` (a view that does not exist)."""
    from PIL import Image

    tile = Image.new("RGB", (size, size), PLACEHOLDER)
    draw_text(tile, text, (6, 6), size - 12)
    return tile


def font(size: int = 14):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # FreeType builds: a scalable font
    except (TypeError, OSError):
        return ImageFont.load_default()


def wrap(text: str, width_px: int, size: int = 14) -> list[str]:
    """``text`` broken into lines of at most ``width_px`` pixels in :func:`font` (words kept whole
    unless a single word is longer than a line)."""
    face = font(size)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}".strip()
            if line and face.getlength(candidate) > width_px:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def draw_text(image: "Image.Image", text: str, origin: tuple[int, int], width_px: int, size: int = 14) -> None:
    """Write ``text`` on ``image`` from ``origin``, wrapped at ``width_px``; lines that do not fit
    below are dropped."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    face = font(size)
    x, y = origin
    step = int(size * 1.3)
    for line in wrap(text, width_px, size):
        if y + step > image.height:
            break
        draw.text((x, y), line, fill=TEXT, font=face)
        y += step


def label_tile(text: str, width: int, height: int, size: int = 14) -> "Image.Image":
    """A white ``width`` x ``height`` tile holding ``text``."""
    from PIL import Image

    tile = Image.new("RGB", (width, height), BACKGROUND)
    draw_text(tile, text, (8, 8), width - 16, size)
    return tile


def hstack(images: list["Image.Image"]) -> "Image.Image":
    """Images side by side, top-aligned, on white."""
    from PIL import Image

    out = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), BACKGROUND)
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width
    return out


def vstack(images: list["Image.Image"]) -> "Image.Image":
    """Images one below the other, left-aligned, on white."""
    from PIL import Image

    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), BACKGROUND)
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height
    return out


def png_bytes(image: "Image.Image") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
