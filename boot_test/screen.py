"""Read a QEMU screendump as text: what a person at the monitor would read.

A text console draws every character in a cell of one background colour, with
the glyph's pixels in another. Colours differ from screen to screen (dialog's
blue background, its grey boxes, white-on-black logins), and OCR wants dark
text on a light page. So each cell's most frequent colour is taken as its
background and every other pixel becomes ink: black on white everywhere,
whatever the colours were. The page is then enlarged (tesseract reads glyphs
of 8x16 pixels poorly) and handed to tesseract (Debian's tesseract-ocr).

OCR text is close to, not exactly, what is on the screen, so `contains`
compares words with some tolerance; exact text comes from /dev/vcsN over SSH
where the guest allows it.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

CELL_WIDTH, CELL_HEIGHT = 8, 16  # the kernel's default console font (VGA 8x16)
SCALE = 3
INK, PAPER = 0, 255
# Word lists compared with difflib; OCR confuses a few letters per line at most.
MATCH_RATIO = 0.85


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    pixels: bytes  # RGB (3 bytes per pixel) or grey (1 byte per pixel), row by row


def _ppm_tokens(data: bytes, count: int) -> tuple[list[int], int]:
    """The first `count` header numbers after the magic, and where the pixels start."""
    values: list[int] = []
    position = 2
    while len(values) < count:
        while data[position:position + 1].isspace():
            position += 1
        if data[position:position + 1] == b"#":
            position = data.index(b"\n", position) + 1
            continue
        end = position
        while not data[end:end + 1].isspace():
            end += 1
        values.append(int(data[position:end]))
        position = end
    return values, position + 1  # one whitespace byte ends the header


def read_ppm(path: Path) -> Image:
    """A binary PPM (P6) with 8-bit channels, as QEMU's screendump writes it."""
    data = path.read_bytes()
    if data[:2] != b"P6":
        raise ValueError(f"{path} is not a binary PPM (P6) file")
    (width, height, maximum), start = _ppm_tokens(data, 3)
    if maximum != 255:
        raise ValueError(f"{path}: only 8-bit PPM is supported, not maxval {maximum}")
    pixels = data[start:start + width * height * 3]
    if len(pixels) != width * height * 3:
        raise ValueError(f"{path} is truncated")
    return Image(width, height, pixels)


def binarize(image: Image, cell_width: int = CELL_WIDTH,
             cell_height: int = CELL_HEIGHT) -> Image:
    """Grey image: ink (0) where a pixel differs from its cell's background, else 255."""
    width, height, rgb = image.width, image.height, image.pixels
    out = bytearray([PAPER]) * (width * height)
    for top in range(0, height, cell_height):
        rows = range(top, min(top + cell_height, height))
        for left in range(0, width, cell_width):
            right = min(left + cell_width, width)
            cell = [rgb[(y * width + x) * 3:(y * width + x) * 3 + 3]
                    for y in rows for x in range(left, right)]
            background = Counter(cell).most_common(1)[0][0]
            index = 0
            for y in rows:
                for x in range(left, right):
                    if cell[index] != background:
                        out[y * width + x] = INK
                    index += 1
    return Image(width, height, bytes(out))


def enlarge(image: Image, factor: int = SCALE) -> Image:
    """A grey image `factor` times larger, each pixel a square (no smoothing)."""
    rows = []
    for y in range(image.height):
        row = image.pixels[y * image.width:(y + 1) * image.width]
        wide = bytes(value for value in row for _ in range(factor))
        rows.append(wide * factor)
    return Image(image.width * factor, image.height * factor, b"".join(rows))


def write_pgm(image: Image, path: Path) -> Path:
    path.write_bytes(f"P5\n{image.width} {image.height}\n255\n".encode() + image.pixels)
    return path


def ocr(screendump: Path, tesseract: str = "tesseract") -> str:
    """The text on the screen in `screendump` (a PPM), by tesseract."""
    if shutil.which(tesseract) is None:
        raise RuntimeError("tesseract is not installed: apt-get install tesseract-ocr")
    page = write_pgm(enlarge(binarize(read_ppm(screendump))),
                     screendump.with_suffix(".ocr.pgm"))
    # --psm 6: one uniform block of text, which is what a text console is.
    result = subprocess.run([tesseract, str(page), "stdout", "--psm", "6"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"tesseract failed: {result.stderr.strip()}")
    return result.stdout


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def contains(text: str, phrase: str, ratio: float = MATCH_RATIO) -> bool:
    """True when the words of `phrase` appear in order in `text`, allowing the few
    wrong letters OCR makes (difflib similarity of the joined words >= ratio)."""
    wanted = words(phrase)
    if not wanted:
        return True
    seen = words(text)
    target = " ".join(wanted)
    for start in range(len(seen)):
        for length in (len(wanted) - 1, len(wanted), len(wanted) + 1):
            window = " ".join(seen[start:start + max(length, 1)])
            if difflib.SequenceMatcher(None, window, target).ratio() >= ratio:
                return True
    return False
