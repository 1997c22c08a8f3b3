"""Uploaded images (``/predict``, the operator page's manual check): the format allow-list and the size read from
the header, checked before anything is decoded. Shared by edge/api/app.py and edge/api/operator.py (its own module, so
neither imports the other).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
from fastapi import HTTPException

MAX_IMAGE_PIXELS = 50_000_000  # refuse decompression bombs before decoding (a 50 MP image is ~150 MB in RAM)
DECODE_WAIT_S = 10.0  # /predict waits this long for a decode slot (api.max_concurrent_decodes), then 503

UPLOAD_FORMATS = ("JPEG", "PNG", "BMP", "WebP")  # the allow-list; everything else is 415 before decoding


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + seg_len
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: 24-bit canvas width-1, height-1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14-bit width-1, height-1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def image_header(data: bytes) -> tuple[str, tuple[int, int] | None] | None:
    """(format, (width, height) or None if the header is cut short) for an allow-listed format, read from
    the header without decoding; None if the bytes are not one of UPLOAD_FORMATS."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) >= 24 and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return "PNG", (int(w), int(h))
        return "PNG", None
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG", _jpeg_dimensions(data)
    if data[:2] == b"BM":
        if len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return "BMP", (abs(int(w)), abs(int(h)))
        return "BMP", None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp_dimensions(data)
    return None


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an allow-listed image from its header; None if unknown."""
    head = image_header(data)
    return None if head is None else head[1]


def decode_upload(data: bytes, max_bytes: int, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Bytes of an uploaded file -> BGR uint8 image, or HTTPException 413/415/422 with a clear message.

    One rule for every format: the format must be allow-listed (JPEG, PNG, BMP, WebP: checked by its magic
    bytes) and its header must state a size of at most ``max_pixels`` before anything is decoded. A header
    that cannot be read is refused too, so no format reaches the decoder with an unchecked size.
    """
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload is {len(data)} bytes; the limit is {max_bytes} (api.max_upload_bytes)")
    if not data:
        raise HTTPException(422, "the uploaded file is empty")
    head = image_header(data)
    if head is None:
        raise HTTPException(415, f"not a decodable image: unsupported format (send {', '.join(UPLOAD_FORMATS)})")
    fmt, dims = head
    if dims is None or dims[0] <= 0 or dims[1] <= 0:
        raise HTTPException(415, f"not a decodable image: the {fmt} header is incomplete (no image size found)")
    if dims[0] * dims[1] > max_pixels:
        raise HTTPException(
            413, f"image is {dims[0]}x{dims[1]} pixels; the limit is {max_pixels} pixels (api.max_image_pixels)"
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # a decoder that gives up loudly is still a bad upload, not a server error
        raise HTTPException(415, f"not a decodable image: the {fmt} decoder failed ({' '.join(str(e).split())[-120:]})") from None
    if image is None or image.size == 0:
        raise HTTPException(415, f"not a decodable image: the {fmt} data is incomplete or corrupt (send a complete file)")
    if image.shape[0] * image.shape[1] > max_pixels:  # the decoder disagreed with the header
        raise HTTPException(413, f"image is {image.shape[1]}x{image.shape[0]} pixels; the limit is {max_pixels}")
    return image
