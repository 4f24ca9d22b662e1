"""Normalisers: how one kind of output is made comparable, and compared, across two runs.

Two runs of the same analysis never print identical bytes (execution counts,
object addresses, clocks, temporary folders, float noise), so each kind of
output has a normaliser that masks what may legitimately change and compares
the rest, with numeric tolerances. They are plugins (entry-point group
``scidex_nbcapsule.normalizers``) so a team can add one for its own formats;
the built-ins are used when the package's entry points are not installed.

One module per family: :mod:`.base` (settings, results, numbers, the base
class), :mod:`.text`, :mod:`.structured` (JSON), :mod:`.tables` (HTML and
CSV), :mod:`.images`, :mod:`.svg`, and the passes the text normaliser applies
inside any printed text: :mod:`.progress` (tqdm bars) and :mod:`.reprs`
(printed sets and dicts). :mod:`.hints` says, for a difference, what would
have made it go away. Everything is importable from this package.
"""

from __future__ import annotations

from typing import Any, Sequence

from ...errors import ConfigError
from .base import (DEFAULT_ATOL, DEFAULT_IMAGE_THRESHOLD, DEFAULT_RTOL, DIFFERENT, ENTRY_POINT_GROUP, EQUAL,
                   NUMBER_RE, WITHIN_TOLERANCE, Comparison, Normalizer, Sanitizer, Settings, _as_text, _worst,
                   compare_scalars, compare_text_numbers, numbers_close, unified_diff)
from .images import ImageNormalizer, _decode_image, _sniff, image_data_uri, image_difference
from .progress import ProgressBarPass
from .reprs import SetReprPass, canonical_reprs
from .structured import JSONNormalizer
from .svg import SVGNormalizer, UnsafeXML, canonical_svg, parse_svg
from .tables import CSVNormalizer, HTMLTableNormalizer, compare_tables, parse_html_tables
from .text import TextNormalizer, TextPass


BUILTIN_NORMALIZERS: dict[str, type[Normalizer]] = {
    "image": ImageNormalizer,
    "svg": SVGNormalizer,
    "json": JSONNormalizer,
    "html-table": HTMLTableNormalizer,
    "csv": CSVNormalizer,
    "progress": ProgressBarPass,
    "set-repr": SetReprPass,
    "text": TextNormalizer,
}


def normalizer_classes() -> dict[str, type[Normalizer]]:
    """Built-ins overlaid with whatever the ``scidex_nbcapsule.normalizers`` entry points provide."""
    from importlib.metadata import entry_points

    found = dict(BUILTIN_NORMALIZERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must say so, not crash verify
            raise ConfigError(f"normaliser plugin {ep.name!r} ({ep.value}) cannot be loaded: {exc}",
                              hint="fix or uninstall the package that provides it") from exc
        if not (isinstance(cls, type) and issubclass(cls, Normalizer)):
            raise ConfigError(f"normaliser plugin {ep.name!r} ({ep.value}) is not a Normalizer subclass")
        found[ep.name] = cls
    return found


def load_normalizers(settings: Settings | None = None) -> list[Normalizer]:
    """One instance of each normaliser, in the order they are tried (most specific first)."""
    settings = settings or Settings()
    instances = sorted((cls(settings) for cls in normalizer_classes().values()), key=lambda n: (n.priority, n.name))
    passes = [n for n in instances if isinstance(n, TextPass)]
    for normalizer in instances:
        if isinstance(normalizer, TextNormalizer):
            normalizer.passes = list(passes)
    return instances


def for_mime(normalizers: Sequence[Normalizer], mime: str, data: Any) -> Normalizer:
    for normalizer in normalizers:
        if normalizer.accepts(mime, data):
            return normalizer
    if not normalizers:
        return TextNormalizer(Settings())
    return TextNormalizer(normalizers[0].settings, passes=[n for n in normalizers if isinstance(n, TextPass)])


def for_file(normalizers: Sequence[Normalizer], path: str) -> Normalizer | None:
    for normalizer in normalizers:
        if normalizer.accepts_file(path):
            return normalizer
    return None


__all__ = ["ENTRY_POINT_GROUP", "EQUAL", "WITHIN_TOLERANCE", "DIFFERENT", "DEFAULT_RTOL", "DEFAULT_ATOL",
           "DEFAULT_IMAGE_THRESHOLD", "NUMBER_RE", "Sanitizer", "Settings", "Comparison", "Normalizer",
           "numbers_close", "compare_scalars", "compare_text_numbers", "unified_diff", "TextNormalizer",
           "TextPass", "ProgressBarPass", "SetReprPass", "canonical_reprs",
           "JSONNormalizer", "HTMLTableNormalizer", "CSVNormalizer", "ImageNormalizer", "SVGNormalizer",
           "parse_html_tables", "compare_tables", "parse_svg", "canonical_svg", "UnsafeXML", "image_data_uri",
           "image_difference", "BUILTIN_NORMALIZERS", "normalizer_classes", "load_normalizers", "for_mime",
           "for_file"]
