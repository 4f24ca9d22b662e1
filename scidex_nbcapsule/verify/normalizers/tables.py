"""Tables: HTML (pandas ``DataFrame`` and the like) and CSV, compared cell by cell."""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser
from typing import Any, Sequence

from .base import (DIFFERENT, EQUAL, WITHIN_TOLERANCE, Comparison, Normalizer, Settings, _as_text, _worst,
                   compare_scalars, unified_diff)
from .text import TextNormalizer


class _TableParser(HTMLParser):
    """Collects the text of every ``<td>``/``<th>`` per row per table; markup and whitespace do not matter."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._stack: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._stack.append([])
        elif tag == "tr" and self._stack:
            self._finish_row()
            self._row = []
        elif tag in ("td", "th") and self._stack:
            self._finish_cell()
            if self._row is None:
                self._row = []
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._finish_cell()
        elif tag == "tr":
            self._finish_row()
        elif tag == "table" and self._stack:
            self._finish_row()
            self.tables.append(self._stack.pop())

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def _finish_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
        self._cell = None

    def _finish_row(self) -> None:
        self._finish_cell()
        if self._row is not None and self._stack:
            self._stack[-1].append(self._row)
        self._row = None


def parse_html_tables(html_text: str) -> list[list[list[str]]]:
    """Every table in ``html_text`` as rows of cell texts (nested tables are listed on their own)."""
    parser = _TableParser()
    parser.feed(html_text)
    parser.close()
    return parser.tables


def compare_tables(expected: Sequence[Sequence[str]], actual: Sequence[Sequence[str]], settings: Settings,
                   *, label: str = "table") -> Comparison:
    """Cell by cell; numeric cells within tolerance; says which cells differ."""
    if len(expected) != len(actual):
        return Comparison(DIFFERENT, f"{label}: {len(expected)} rows recorded, {len(actual)} now",
                          unified_diff(_table_text(expected), _table_text(actual), label=label))
    status = EQUAL
    problems: list[str] = []
    for r, (row_a, row_b) in enumerate(zip(expected, actual)):
        if len(row_a) != len(row_b):
            problems.append(f"row {r + 1}: {len(row_a)} cells recorded, {len(row_b)} now")
            status = DIFFERENT
            continue
        for c, (a, b) in enumerate(zip(row_a, row_b)):
            result = compare_scalars(a.strip(), b.strip(), settings)
            if result == DIFFERENT:
                problems.append(f"row {r + 1} column {c + 1}: {a!r} ≠ {b!r}")
            status = _worst([status, result])
    if status == DIFFERENT:
        return Comparison(DIFFERENT, f"{label}: " + "; ".join(problems[:10]),
                          unified_diff(_table_text(expected), _table_text(actual), label=label))
    if status == WITHIN_TOLERANCE:
        return Comparison(WITHIN_TOLERANCE, f"{label}: numbers differ within tolerance")
    return Comparison(EQUAL)


def _table_text(rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(" | ".join(row) for row in rows)


class HTMLTableNormalizer(Normalizer):
    """``text/html`` holding tables (pandas ``DataFrame`` and the like): compared by cell values."""

    name = "html-table"
    priority = 30
    mime_types = ("text/html",)

    def accepts(self, mime: str, data: Any) -> bool:
        return mime == "text/html" and "<table" in _as_text(data).lower()

    def compare(self, expected: Any, actual: Any) -> Comparison:
        a, b = parse_html_tables(_as_text(expected)), parse_html_tables(_as_text(actual))
        if len(a) != len(b):
            return Comparison(DIFFERENT, f"{len(a)} tables recorded, {len(b)} now")
        text = TextNormalizer(self.settings)
        results = [compare_tables([[text.normalize(c) for c in row] for row in ta],
                                  [[text.normalize(c) for c in row] for row in tb], self.settings,
                                  label=f"table {i + 1}") for i, (ta, tb) in enumerate(zip(a, b))]
        worst = _worst(r.status for r in results)
        if worst == EQUAL:
            return Comparison(EQUAL)
        chosen = [r for r in results if r.status == worst]
        return Comparison(worst, "; ".join(r.detail for r in chosen), "\n".join(r.diff for r in chosen if r.diff))


class CSVNormalizer(Normalizer):
    """``.csv`` files by cell values, numbers within tolerance (line endings and quoting do not matter)."""

    name = "csv"
    priority = 40
    mime_types = ("text/csv",)
    suffixes = (".csv",)

    def compare(self, expected: Any, actual: Any) -> Comparison:
        a = list(csv.reader(io.StringIO(_as_text(expected))))
        b = list(csv.reader(io.StringIO(_as_text(actual))))
        return compare_tables(a, b, self.settings, label="csv")
