"""Raster images: identical bytes, else the mean pixel difference under a threshold."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from typing import Any

from .base import DIFFERENT, EQUAL, WITHIN_TOLERANCE, Comparison, Normalizer


def image_data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _decode_image(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    text = "".join(value) if isinstance(value, list) else str(value)
    try:
        return base64.b64decode(text.strip(), validate=False)
    except (binascii.Error, ValueError):
        return text.encode()


def image_difference(expected: bytes, actual: bytes) -> float | None:
    """Mean absolute difference of RGBA pixels in 0..1; ``None`` when sizes differ or either is unreadable."""
    from PIL import Image, ImageChops, ImageStat, UnidentifiedImageError

    try:
        a = Image.open(io.BytesIO(expected)).convert("RGBA")
        b = Image.open(io.BytesIO(actual)).convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    if a.size != b.size:
        return None
    stat = ImageStat.Stat(ImageChops.difference(a, b))
    return sum(stat.mean) / (len(stat.mean) * 255.0)


class ImageNormalizer(Normalizer):
    """Images: identical bytes first (digest), then mean pixel difference under ``image_threshold``."""

    name = "image"
    priority = 10
    mime_types = ("image/png", "image/jpeg", "image/gif", "image/webp")
    suffixes = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")

    def compare(self, expected: Any, actual: Any) -> Comparison:
        return self.compare_files(_decode_image(expected), _decode_image(actual))

    def compare_files(self, expected: bytes, actual: bytes) -> Comparison:
        if hashlib.sha256(expected).digest() == hashlib.sha256(actual).digest():
            return Comparison(EQUAL)
        images = (image_data_uri(expected, _sniff(expected)), image_data_uri(actual, _sniff(actual)))
        diff = image_difference(expected, actual)
        if diff is None:
            return Comparison(DIFFERENT, "the images differ in size or cannot be read", images=images)
        detail = f"mean pixel difference {diff:.4f} (threshold {self.settings.image_threshold})"
        if diff <= self.settings.image_threshold:
            return Comparison(WITHIN_TOLERANCE, detail, images=images)
        return Comparison(DIFFERENT, detail, images=images)


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"GIF8"):
        return "image/gif"
    return "application/octet-stream"
