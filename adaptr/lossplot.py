"""A small PNG of a loss curve, for the Hub card, written with zlib alone (no plotting library).

The Hub shows a PNG beside the card as any image; an SVG from a repo is not rendered inline.
The picture is the curve and its axes only; the card's text says the numbers.
"""

from __future__ import annotations

import struct
import zlib

WIDTH, HEIGHT, MARGIN = 480, 200, 12
_PAPER, _AXIS, _GRID, _LINE = (255, 255, 255), (96, 96, 96), (228, 228, 228), (220, 80, 30)


def loss_png(points: list[list[float]], width: int = WIDTH, height: int = HEIGHT) -> bytes | None:
    """The curve through ``points`` (``[step, loss]``) as PNG bytes; None for fewer than two."""
    points = [(float(s), float(v)) for s, v in points if v == v]  # NaN never plots
    if len(points) < 2:
        return None
    pixels = [[_PAPER] * width for _ in range(height)]
    left, top, right, bottom = MARGIN, MARGIN, width - MARGIN, height - MARGIN
    for quarter in range(1, 4):  # light grid lines at a quarter, half and three quarters
        y = top + (bottom - top) * quarter // 4
        _segment(pixels, (left, y), (right, y), _GRID)
    _segment(pixels, (left, top), (left, bottom), _AXIS)
    _segment(pixels, (left, bottom), (right, bottom), _AXIS)
    steps, losses = [s for s, _ in points], [v for _, v in points]
    s0, s1 = min(steps), max(steps)
    v0, v1 = min(losses), max(losses)

    def place(step: float, loss: float) -> tuple[int, int]:
        x = left + 2 + (step - s0) / ((s1 - s0) or 1) * (right - left - 4)
        y = bottom - 2 - (loss - v0) / ((v1 - v0) or 1) * (bottom - top - 4)
        return round(x), round(y)

    placed = [place(s, v) for s, v in points]
    for a, b in zip(placed, placed[1:]):
        for dx, dy in ((0, 0), (0, 1), (1, 0)):  # two pixels wide
            _segment(pixels, (a[0] + dx, a[1] + dy), (b[0] + dx, b[1] + dy), _LINE)
    return _encode(pixels, width, height)


def _segment(pixels, a: tuple[int, int], b: tuple[int, int], colour) -> None:
    """Bresenham's line from a to b, clipped to the picture."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    error = dx + dy
    while True:
        if 0 <= y0 < len(pixels) and 0 <= x0 < len(pixels[0]):
            pixels[y0][x0] = colour
        if (x0, y0) == (x1, y1):
            return
        twice = 2 * error
        if twice >= dy:
            error, x0 = error + dy, x0 + sx
        if twice <= dx:
            error, y0 = error + dx, y0 + sy


def _encode(pixels, width: int, height: int) -> bytes:
    """An 8-bit RGB PNG (filter type 0 on every row)."""
    raw = b"".join(b"\x00" + bytes(channel for pixel in row for channel in pixel) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))
