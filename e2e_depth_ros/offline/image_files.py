"""Image files for ``e2e-depth predict``: read, judge and decode one input, write outputs.

OpenCV never sees a path: files are read and written as bytes here and decoded or encoded
with ``cv2.imdecode`` / ``cv2.imencode`` (``cv2.imread`` and ``cv2.imwrite`` crash the
interpreter on a name that is not valid UTF-8). The size in the header is judged before
decoding, so a 20000 x 20000 file is refused in microseconds instead of exhausting memory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

MIN_SIDE = 8  # estimator.MIN_SIDE (one latent pixel); literal so --help stays light


class ImageFileError(Exception):
    """One input file that cannot be used; predict names it and goes on with the rest."""


def shown(path: Path | str) -> str:
    """A path as one readable line: bytes of a name that are not UTF-8 (a file from another
    system) become \\xNN escapes, never surrogates, which a strict stdout cannot print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def write_png(path: Path, image) -> None:
    """Encode ``image`` ((H, W) uint16 or (H, W, 3) uint8 BGR) as PNG; write it to ``path``."""
    import cv2

    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{shown(path)}: OpenCV could not encode a {image.dtype} array of "
                         f"shape {image.shape} as PNG")
    path.write_bytes(encoded.tobytes())


def image_file_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or TIFF header, without decoding; None when
    the header cannot be read (the decoder then judges the file)."""
    from e2e_depth_ros.core.input_checks import compressed_size  # PNG and JPEG, as the node reads

    size = compressed_size(data)
    if size is not None:
        return size
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
        found = {}
        for i in range(count):
            entry = data[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                fmt = "H" if kind == 3 else "I"
                found[tag] = struct.unpack(order + fmt, entry[8:8 + struct.calcsize(fmt)])[0]
        return (found[256], found[257]) if len(found) == 2 else None
    except (struct.error, KeyError):
        return None


def _truncation(data: bytes) -> str | None:
    """Why an encoded file is cut short, or None. libjpeg decodes a truncated JPEG as a
    half-grey picture (and prints a line naming no file), so that is refused up front."""
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker): refused, not decoded"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        return "truncated PNG (no IEND chunk): refused, not decoded"
    return None


def load_image(path: Path, max_pixels: int):
    """(H, W, 3) uint8 RGB of one file, or ImageFileError saying why not."""
    import cv2
    import numpy as np

    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageFileError(f"cannot be read ({err.strerror or err})") from err
    if not data:
        raise ImageFileError("empty file (0 bytes)")
    size = image_file_size(data)
    if size is not None:
        _check_size(*size, max_pixels)
    problem = _truncation(data)
    if problem:
        raise ImageFileError(problem)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:  # OpenCV asserts instead of returning None on some inputs
        said = str(err).strip().rpartition("error: ")[2]
        raise ImageFileError(f"not a readable image (OpenCV: {said})") from err
    if bgr is None:
        raise ImageFileError("not a readable image")
    if size is None:
        _check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8 RGB


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageFileError(f"{width}x{height} is {width * height} pixels, over --max-pixels "
                             f"{max_pixels}: refused before decoding")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageFileError(f"{width}x{height} is too small: each side must be at least "
                             f"{MIN_SIDE} px")
