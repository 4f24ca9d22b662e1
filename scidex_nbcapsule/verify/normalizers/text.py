"""Plain text and streams: execution counts, addresses, clocks and temporary paths masked; numbers within tolerance."""

from __future__ import annotations

import re
import tempfile
from typing import Any

from .base import EQUAL, WITHIN_TOLERANCE, Comparison, Normalizer, _as_text, compare_text_numbers, unified_diff


_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EXEC_COUNT_RES = (
    (re.compile(r"\b(In|Out)\s*\[\s*\d+\s*\]"), r"\1[N]"),
    (re.compile(r"Cell In\[\d+\]"), "Cell In[N]"),
    (re.compile(r'"execution_count":\s*\d+'), '"execution_count": N'),
    (re.compile(r"<ipython-input-\d+-[0-9a-f]+>"), "<ipython-input-N>"),
)
_ADDRESS_RE = re.compile(r"\b0x[0-9a-fA-F]{4,16}\b")
_TIMESTAMP_RES = (
    re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?\b"),
    re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} "
               r"\d{2}:\d{2}:\d{2} \d{4}\b"),
    re.compile(r"\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b"),
)


def _temp_path_res() -> tuple[re.Pattern[str], ...]:
    roots = {tempfile.gettempdir(), "/tmp", "/var/tmp", "/private/var/folders", "/var/folders"}
    alternatives = "|".join(re.escape(r.rstrip("/")) for r in sorted(roots, key=len, reverse=True))
    return (re.compile(rf"(?:{alternatives})/[^\s'\"<>:,)\]]*"),)


_TEMP_PATH_RES = _temp_path_res()


class TextNormalizer(Normalizer):
    """Plain text and streams: masks counts, addresses, clocks and temporary paths; numbers within tolerance."""

    name = "text"
    priority = 90
    mime_types = ("text/plain", "text/markdown", "text/latex", "text/html", "application/javascript", "stream")
    suffixes = (".txt", ".md", ".log", ".tsv", ".html", ".htm", ".tex", ".py", ".xml", ".svg")

    def accepts(self, mime: str, data: Any) -> bool:
        return mime in self.mime_types or mime.startswith("text/")

    def normalize(self, text: str) -> str:
        for sanitizer in self.settings.sanitize:
            text = sanitizer.apply(text)
        text = _ANSI_RE.sub("", text)
        for path, placeholder in sorted(self.settings.masked_paths.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, placeholder)
        for pattern, replace in _EXEC_COUNT_RES:
            text = pattern.sub(replace, text)
        text = _ADDRESS_RE.sub("0xADDR", text)
        for pattern in _TIMESTAMP_RES:
            text = pattern.sub("<TIME>", text)
        for pattern in _TEMP_PATH_RES:
            text = pattern.sub("<TMP>", text)
        return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))

    def compare(self, expected: Any, actual: Any) -> Comparison:
        a, b = self.normalize(_as_text(expected)), self.normalize(_as_text(actual))
        status = compare_text_numbers(a, b, self.settings)
        if status == EQUAL:
            return Comparison(EQUAL)
        detail = "numbers differ within tolerance" if status == WITHIN_TOLERANCE else "text differs"
        return Comparison(status, detail, unified_diff(a, b))
