"""Image files for ``e2e-depth predict``: read, judge and decode one input, write outputs.

OpenCV never sees a path: files are read and written as bytes here and decoded or encoded
with ``cv2.imdecode`` / ``cv2.imencode`` (``cv2.imread`` and ``cv2.imwrite`` crash the
interpreter on a name that is not valid UTF-8). The size in the header is judged before
decoding, so a 20000 x 20000 file is refused in microseconds instead of exhausting memory.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# What libjpeg prints when a JPEG's data ends before its picture does, or is damaged: it then
# fills the rest with grey and returns the picture as if it were whole (a cut file with its
# end marker FF D9 put back decodes without any error), so these lines refuse the file.
JPEG_DAMAGE = ("Premature end of JPEG file", "Corrupt JPEG data")
# OpenCV's own log prefix, "[ WARN:0@0.018] global grfmt_png.cpp:793 readFromStreamOrBuffer "
_OPENCV_LOG_PREFIX = re.compile(r"^\[\s*\w+:[^\]]*\]\s+(?:global\s+)?\S+:\d+\s+\S+\s+")


@dataclass(frozen=True)
class ImageFile:
    """One decoded input file."""

    rgb: Any  # (H, W, 3) uint8 RGB
    decoder_said: tuple[str, ...]  # what the decoder printed that did not refuse the file


def load_image(path: Path, max_pixels: int) -> ImageFile:
    """One file decoded, or ImageFileError saying why not.

    The file is judged by decoding it in full, not by its last bytes: a JPEG is refused when
    libjpeg says its data is incomplete or damaged (JPEG_DAMAGE), or, for decoders that fill a
    cut file silently (OpenCV 4.6's), when no end-of-image marker follows its last scan.
    """
    import cv2

    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageFileError(f"cannot be read ({err.strerror or err})") from err
    if not data:
        raise ImageFileError("empty file (0 bytes)")
    size = image_file_size(data)
    if size is not None:
        _check_size(*size, max_pixels)
    try:
        bgr, said = _decode(data)
    except cv2.error as err:  # OpenCV asserts instead of returning None on some inputs
        said = str(err).strip().rpartition("error: ")[2]
        raise ImageFileError(f"not a readable image (OpenCV: {said})") from err
    damage = [line for line in said if line.startswith(JPEG_DAMAGE)]
    if not damage and _jpeg_ends_before_its_last_scan(data):
        damage = ["no end-of-image marker after the last scan"]  # some decoders fill silently
    if damage:
        raise ImageFileError(f"truncated or corrupt JPEG (libjpeg: {damage[0]}): refused, its "
                             "missing part would be decoded as grey")
    if bgr is None:
        kind = "truncated or corrupt JPEG" if data[:2] == b"\xff\xd8" else "not a readable image"
        raise ImageFileError(f"{kind} (" + ("; ".join(said) or "the decoder gave up") + ")")
    if size is None:
        _check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return ImageFile(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), tuple(said))


def _jpeg_ends_before_its_last_scan(data: bytes) -> bool:
    """A JPEG whose last scan (SOS, FF DA) is followed by no end-of-image marker (FF D9).

    Entropy-coded data stuffs every FF byte, so FF D9 after the last SOS can only be the real
    end; one inside an EXIF thumbnail comes before it, and data a camera appends after the
    end does not hide it.
    """
    if data[:2] != b"\xff\xd8":
        return False
    last_scan = data.rfind(b"\xff\xda")
    return last_scan == -1 or data.rfind(b"\xff\xd9") < last_scan


def _decode(data: bytes) -> tuple[Any, list[str]]:
    """(BGR picture or None, the lines the decoder printed while decoding ``data``).

    libjpeg, libpng and OpenCV print their complaints on file descriptor 2 themselves, naming
    no file; it points at a temporary file for the call, so that the file can be judged by
    what they said and named. Not thread-safe: predict decodes on one thread.
    """
    import cv2
    import numpy as np

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        said = sink.read().decode("utf-8", "replace").splitlines()
    return bgr, [_OPENCV_LOG_PREFIX.sub("", line).strip() for line in said if line.strip()]


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageFileError(f"{width}x{height} is {width * height} pixels, over --max-pixels "
                             f"{max_pixels}: refused before decoding")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageFileError(f"{width}x{height} is too small: each side must be at least "
                             f"{MIN_SIDE} px")
