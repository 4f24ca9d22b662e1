"""``application/json`` outputs and JSON files, compared by value."""

from __future__ import annotations

import json
from typing import Any

from .base import (DIFFERENT, EQUAL, WITHIN_TOLERANCE, Comparison, Normalizer, _worst, compare_text_numbers,
                   numbers_close, unified_diff)
from .text import TextNormalizer


class JSONNormalizer(Normalizer):
    """``application/json`` outputs and ``.json`` files: compared by value, numbers within tolerance."""

    name = "json"
    priority = 20
    mime_types = ("application/json",)
    suffixes = (".json", ".geojson", ".jsonld")

    def accepts(self, mime: str, data: Any) -> bool:
        return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))

    def compare(self, expected: Any, actual: Any) -> Comparison:
        try:
            a = json.loads(expected) if isinstance(expected, (str, bytes)) else expected
            b = json.loads(actual) if isinstance(actual, (str, bytes)) else actual
        except ValueError:
            return TextNormalizer(self.settings).compare(expected, actual)
        problems: list[str] = []
        status = self._walk(a, b, "$", problems)
        if status == EQUAL:
            return Comparison(EQUAL)
        if status == WITHIN_TOLERANCE:
            return Comparison(WITHIN_TOLERANCE, "numbers differ within tolerance")
        text_a = json.dumps(a, indent=1, sort_keys=True, default=str)
        text_b = json.dumps(b, indent=1, sort_keys=True, default=str)
        return Comparison(DIFFERENT, "; ".join(problems[:10]), unified_diff(text_a, text_b, label="json"))

    def _walk(self, a: Any, b: Any, where: str, problems: list[str]) -> str:
        if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
            if a is b or (a == b and type(a) is type(b)):
                return EQUAL
            problems.append(f"{where}: {a!r} ≠ {b!r}")
            return DIFFERENT
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if a == b:
                return EQUAL
            if numbers_close(float(a), float(b), self.settings):
                return WITHIN_TOLERANCE
            problems.append(f"{where}: {a!r} ≠ {b!r}")
            return DIFFERENT
        if isinstance(a, str) and isinstance(b, str):
            if a == b:
                return EQUAL
            text = TextNormalizer(self.settings)
            status = compare_text_numbers(text.normalize(a), text.normalize(b), self.settings)
            if status == DIFFERENT:
                problems.append(f"{where}: {a[:80]!r} ≠ {b[:80]!r}")
            return status
        if isinstance(a, dict) and isinstance(b, dict):
            if set(a) != set(b):
                missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
                problems.append(f"{where}: keys missing {missing} extra {extra}")
                return DIFFERENT
            return _worst(self._walk(a[k], b[k], f"{where}.{k}", problems) for k in sorted(a))
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                problems.append(f"{where}: {len(a)} items ≠ {len(b)} items")
                return DIFFERENT
            return _worst(self._walk(x, y, f"{where}[{i}]", problems) for i, (x, y) in enumerate(zip(a, b)))
        problems.append(f"{where}: {type(a).__name__} ≠ {type(b).__name__}")
        return DIFFERENT
