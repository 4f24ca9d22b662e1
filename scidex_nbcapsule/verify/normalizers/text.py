"""Plain text and streams: execution counts, addresses, clocks and temporary paths masked; numbers within tolerance."""

from __future__ import annotations

import re
import tempfile
from typing import Any, Sequence

from .base import (DIFFERENT, EQUAL, WITHIN_TOLERANCE, Comparison, Normalizer, Settings, _as_text,
                   compare_text_numbers, unified_diff)


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


class TextPass(Normalizer):
    """A step of the text normaliser rather than a normaliser of its own kind of output.

    Progress bars and printed sets turn up inside ordinary printed text, beside
    anything else, so instead of claiming an output (``accepts`` is false) a
    pass is applied by every :class:`TextNormalizer` to the text it compares:
    ``prepare`` on the raw text (``stage = "raw"``: before the built-in masks,
    with ``\\r`` still in it) or on the masked text (``stage = "masked"``), and
    ``relax`` as a second chance when the prepared texts still differ: if the
    relaxed texts match, the output is within tolerance for ``relax_reason``.
    Passes are entry points like any normaliser; ``load_normalizers`` hands the
    loaded ones to the text normaliser.
    """

    stage = "masked"
    relax_reason = ""

    def accepts(self, mime: str, data: Any) -> bool:
        return False

    def prepare(self, text: str) -> str:
        return text

    def relax(self, text: str) -> str | None:
        """A looser form of the prepared text, or ``None`` when this pass has no second chance to give."""
        return None

    def compare(self, expected: Any, actual: Any) -> Comparison:
        """Text comparison with only this pass (how it is tested and how hints try it)."""
        return TextNormalizer(self.settings, passes=[self]).compare(expected, actual)


def builtin_passes(settings: Settings) -> list[TextPass]:
    from .progress import ProgressBarPass
    from .reprs import SetReprPass

    return [ProgressBarPass(settings), SetReprPass(settings)]


class TextNormalizer(Normalizer):
    """Plain text and streams: masks counts, addresses, clocks and temporary paths; numbers within tolerance.

    ``passes`` are the :class:`TextPass` steps applied too; by default the built-in ones (progress bars,
    printed sets and dicts), as loaded by :func:`load_normalizers` otherwise.
    """

    name = "text"
    priority = 90
    mime_types = ("text/plain", "text/markdown", "text/latex", "text/html", "application/javascript", "stream")
    suffixes = (".txt", ".md", ".log", ".tsv", ".html", ".htm", ".tex", ".py", ".xml", ".svg")

    def __init__(self, settings: Settings | None = None, passes: Sequence[TextPass] | None = None) -> None:
        super().__init__(settings)
        self.passes: list[TextPass] = list(passes) if passes is not None else builtin_passes(self.settings)

    def accepts(self, mime: str, data: Any) -> bool:
        return mime in self.mime_types or mime.startswith("text/")

    def normalize(self, text: str) -> str:
        for sanitizer in self.settings.sanitize:
            text = sanitizer.apply(text)
        text = _ANSI_RE.sub("", text)
        for step in self.passes:
            if step.stage == "raw":
                text = step.prepare(text)
        for path, placeholder in sorted(self.settings.masked_paths.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, placeholder)
        for pattern, replace in _EXEC_COUNT_RES:
            text = pattern.sub(replace, text)
        text = _ADDRESS_RE.sub("0xADDR", text)
        for pattern in _TIMESTAMP_RES:
            text = pattern.sub("<TIME>", text)
        for pattern in _TEMP_PATH_RES:
            text = pattern.sub("<TMP>", text)
        text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
        for step in self.passes:
            if step.stage != "raw":
                text = step.prepare(text)
        return text

    def compare(self, expected: Any, actual: Any) -> Comparison:
        a, b = self.normalize(_as_text(expected)), self.normalize(_as_text(actual))
        status = compare_text_numbers(a, b, self.settings)
        if status == EQUAL:
            return Comparison(EQUAL)
        if status == DIFFERENT:
            relaxed = self._relaxed(a, b)
            if relaxed is not None:
                return relaxed
        detail = "numbers differ within tolerance" if status == WITHIN_TOLERANCE else "text differs"
        return Comparison(status, detail, unified_diff(a, b))

    def _relaxed(self, a: str, b: str) -> Comparison | None:
        """Each pass's second chance: within tolerance, with that pass's reason."""
        offers = [(step, step.relax(a), step.relax(b)) for step in self.passes]
        offers = [(step, ra, rb) for step, ra, rb in offers
                  if ra is not None and rb is not None and (ra, rb) != (a, b)]
        for step, ra, rb in offers:
            if compare_text_numbers(ra, rb, self.settings) != DIFFERENT:
                return Comparison(WITHIN_TOLERANCE, step.relax_reason, unified_diff(a, b))
        return None
