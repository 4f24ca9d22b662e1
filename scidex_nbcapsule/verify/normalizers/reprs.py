"""Printed sets and dicts: a set's elements in a canonical order; a dict's order is kept, but reported.

A ``set`` of strings prints in an order that depends on the interpreter's hash
seed (``PYTHONHASHSEED``, random per process), so ``{'b', 'a'}`` and
``{'a', 'b'}`` are the same result. Every ``{…}`` span of printed text that
``ast.literal_eval`` reads as a set (also inside ``frozenset({…})``, inside a
dict or list) has its elements put in a canonical order, in place, keeping
the text's own spacing and line breaks; nothing is ever evaluated.

Dicts keep insertion order (Python 3.7+), and the order is part of what the
code did, so they are not reordered when comparing. Only when two texts still
differ and reordering each dict's items by key makes them match (the same keys
map to the same values) is the output *within tolerance*, with the reason
"dict order differs": visible in the report, not a mismatch. That order
usually comes from iterating over a set.
"""

from __future__ import annotations

import ast

from .text import TextPass

#: Texts longer than this are left alone (the scan is linear, but literal parsing of every span is not free).
MAX_TEXT = 2_000_000
#: Longer brace spans are not parsed as one literal (inner spans still are).
MAX_SPAN = 200_000
MAX_DEPTH = 40


def _spans(text: str) -> list[tuple[int, int]]:
    """Outermost balanced ``{…}`` spans, in one pass: unmatched braces on either side are ignored."""
    opens: list[int] = []
    spans: list[tuple[int, int]] = []
    for index, ch in enumerate(text):
        if ch == "{":
            opens.append(index)
        elif ch == "}" and opens:
            start = opens.pop()
            while spans and spans[-1][0] > start:  # spans closed inside this one are not outermost
                spans.pop()
            spans.append((start, index + 1))
    return spans


def _literal(span: str) -> ast.Set | ast.Dict | None:
    if len(span) > MAX_SPAN:
        return None
    try:
        node = ast.parse(span, mode="eval").body
        if not isinstance(node, (ast.Set, ast.Dict)):
            return None
        ast.literal_eval(node)  # only literals: names, calls and the like make it a non-literal
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return None
    return node


def canonical_reprs(text: str, *, sets: bool = True, dicts: bool = False) -> str:
    """``text`` with every printed set's elements sorted (``sets``) and every dict's items sorted by key (``dicts``)."""
    if "{" not in text or len(text) > MAX_TEXT or not (sets or dicts):
        return text
    try:
        return _canonical(text, (sets, dicts), 0)
    except RecursionError:
        return text


def _canonical(text: str, order: tuple[bool, bool], depth: int) -> str:
    if "{" not in text or depth > MAX_DEPTH:
        return text
    out: list[str] = []
    last = 0
    for start, end in _spans(text):
        out.append(text[last:start])
        span = text[start:end]
        node = _literal(span)
        if node is None:
            out.append("{" + _canonical(span[1:-1], order, depth + 1) + "}")
        else:
            out.append(_reorder(span, node, order, depth))
        last = end
    out.append(text[last:])
    return "".join(out)


def _reorder(span: str, node: ast.Set | ast.Dict, order: tuple[bool, bool], depth: int) -> str:
    """The span with its items (canonical themselves) put back in canonical order into the original slots."""
    data = span.encode("utf-8")  # ast offsets are UTF-8 byte columns
    line_starts = [0]
    for index, byte in enumerate(data):
        if byte == 0x0A:
            line_starts.append(index + 1)

    def offset(line: int, col: int) -> int:
        return line_starts[line - 1] + col

    slots: list[tuple[int, int]] = []
    items: list[tuple[str, str]] = []  # (sort key, canonical text)
    if isinstance(node, ast.Set):
        for element in node.elts:
            start, end = offset(element.lineno, element.col_offset), offset(element.end_lineno, element.end_col_offset)
            text = _canonical(data[start:end].decode("utf-8"), order, depth + 1)
            slots.append((start, end))
            items.append((text, text))
        if order[0]:
            items.sort()
    else:
        for key, value in zip(node.keys, node.values):
            if key is None:  # ``**mapping`` cannot be a literal; literal_eval refused it already
                return span
            start, end = offset(key.lineno, key.col_offset), offset(value.end_lineno, value.end_col_offset)
            ks, ke = start, offset(key.end_lineno, key.end_col_offset)
            key_text = _canonical(data[ks:ke].decode("utf-8"), order, depth + 1)
            vs = offset(value.lineno, value.col_offset)
            rest = _canonical(data[ke:vs].decode("utf-8") + data[vs:end].decode("utf-8"), order, depth + 1)
            slots.append((start, end))
            items.append((key_text, key_text + rest))
        if order[1]:
            items.sort(key=lambda item: item[0])
    out = bytearray()
    last = 0
    for (start, end), (_key, text) in zip(slots, items):
        out += data[last:start] + text.encode("utf-8")
        last = end
    out += data[last:]
    return out.decode("utf-8")


class SetReprPass(TextPass):
    """Printed ``set``/``frozenset`` reprs compare in any element order; dicts in another order are within tolerance."""

    name = "set-repr"
    priority = 85
    stage = "masked"
    relax_reason = "dict order differs: the same keys map to the same values, inserted in another order"

    def prepare(self, text: str) -> str:
        return canonical_reprs(text)

    def relax(self, text: str) -> str | None:
        # sets are already in order (prepare): only dicts are reordered, so the reason given is the right one
        return canonical_reprs(text, sets=False, dicts=True) if "{" in text else None
