"""SVG figures (``image/svg+xml`` outputs, ``.svg`` files): the drawing compared, not its random ids and dates.

Matplotlib salts the ids of clip paths and markers with a random number per
process (``id="p1a2b3c4d5"``, ``xlink:href="#m0e1f2a3b4c"``) and stamps a
``<dc:date>``; plotly and bokeh number their ids per session. So every id is
renamed ``id1``, ``id2``, ... in order of first appearance (definition or
reference), every reference to it (``url(#…)``, ``href="#…"``,
``xlink:href``, ``#…`` in ``<style>``) renamed with it, ``<metadata>`` (creation
date, tool and version) and any ``dc:date`` dropped, and the canonical drawing
compared: the same text is equal, the same text up to numbers within the
settings' tolerance is within tolerance, anything else differs. Renaming every
id rather than only random-looking ones is deliberate: ids are internal
references, so two drawings that differ only in what their ids are called
draw the same picture.

The XML is parsed with entity declarations refused (defusedxml when it is
installed, else expat with the same handlers): an entity-expansion bomb or an
external entity is never expanded, and such a file, like one that is not
well-formed XML, is compared as text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from xml.parsers import expat

from .base import (DIFFERENT, EQUAL, WITHIN_TOLERANCE, Comparison, Normalizer, Settings, _as_text,
                   compare_number_pairs, unified_diff)
from .text import TextNormalizer

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
DC_NS = "http://purl.org/dc/elements/1.1/"
_PREFIXES = {SVG_NS: "", XLINK_NS: "xlink:", DC_NS: "dc:", "http://www.w3.org/XML/1998/namespace": "xml:",
             "http://creativecommons.org/ns#": "cc:", "http://www.w3.org/1999/02/22-rdf-syntax-ns#": "rdf:"}
#: Elements dropped before comparing: creation dates, tool names and versions.
_DROPPED = {f"{{{SVG_NS}}}metadata", "metadata", f"{{{DC_NS}}}date"}
_URL_REF = re.compile(r"""url\(\s*(['"]?)#([^)'"\s]+)\1\s*\)""")
_STYLE_REF = re.compile(r"#([A-Za-z_][\w.-]*)")
#: Numbers in canonical SVG text; hex colours are matched first so that ``#1f77b4`` stays one literal token.
_TOKEN = re.compile(r"(#[0-9A-Fa-f]{3,8}\b)|([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")
#: Canonical diffs longer than this are cut (a plot's SVG runs to thousands of lines).
MAX_DIFF_LINES = 200
MAX_INDENT = 32


class UnsafeXML(ValueError):
    """The XML declares entities (an expansion bomb or an external entity): it is never expanded."""


def _refuse(*_args: Any) -> None:
    raise UnsafeXML("the XML declares entities, which are never expanded")


def _clark(name: str) -> str:
    uri, sep, local = name.rpartition("\x1f")
    return f"{{{uri}}}{local}" if sep else name


def parse_svg_expat(data: str | bytes) -> ET.Element:
    """Parse with the standard library's expat, entity declarations and external references refused."""
    parser = expat.ParserCreate(namespace_separator="\x1f")
    builder = ET.TreeBuilder()
    parser.buffer_text = True
    parser.StartElementHandler = lambda tag, attrs: builder.start(
        _clark(tag), {_clark(k): v for k, v in attrs.items()})
    parser.EndElementHandler = lambda tag: builder.end(_clark(tag))
    parser.CharacterDataHandler = builder.data
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ET.ParseError(str(exc)) from exc
    return builder.close()


def parse_svg(data: str | bytes) -> ET.Element:
    """The SVG's element tree; :class:`UnsafeXML` for declared entities, ``ET.ParseError`` if not well-formed."""
    try:
        import defusedxml
        import defusedxml.ElementTree as defused
    except ImportError:  # not a dependency of ours; expat with the same refusals does the same job
        return parse_svg_expat(data)
    try:
        return defused.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise UnsafeXML(f"the XML declares entities, which are never expanded ({exc})") from exc


def _name(name: str) -> str:
    if name.startswith("{"):
        uri, _, local = name[1:].partition("}")
        prefix = _PREFIXES.get(uri)
        return f"{prefix}{local}" if prefix is not None else name
    return name


def _is_href(name: str) -> bool:
    return name in ("href", f"{{{XLINK_NS}}}href")


def _indent(depth: int) -> str:
    """Two spaces a level, up to a limit (a hostile file nested 10⁵ deep must not make 10¹⁰ bytes of spaces)."""
    return "  " * depth if depth <= MAX_INDENT else "  " * MAX_INDENT + f"[{depth}] "


def canonical_svg(root: ET.Element) -> str:
    """One line per element, attributes sorted, ids renamed in order of first appearance, metadata dropped."""
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in _DROPPED or (isinstance(child.tag, str) and child.tag.endswith("}metadata")):
                parent.remove(child)
    defined = {el.get("id") for el in root.iter() if el.get("id")}
    mapping: dict[str, str] = {}

    def register(name: str) -> None:
        if name in defined and name not in mapping:
            mapping[name] = f"id{len(mapping) + 1}"

    for el in root.iter():
        for key, value in el.attrib.items():
            if key == "id":
                register(value)
            elif _is_href(key) and value.startswith("#"):
                register(value[1:])
            else:
                for match in _URL_REF.finditer(value):
                    register(match.group(2))
        if _name(str(el.tag)) == "style" and el.text:
            for match in _STYLE_REF.finditer(el.text):
                register(match.group(1))

    def rename(value: str, key: str) -> str:
        if key == "id":
            return mapping.get(value, value)
        if _is_href(key) and value.startswith("#"):
            return "#" + mapping.get(value[1:], value[1:])
        return _URL_REF.sub(lambda m: f"url(#{mapping.get(m.group(2), m.group(2))})", value)

    lines: list[str] = []
    stack: list[tuple[ET.Element, int]] = [(root, 0)]
    while stack:  # iterative: a hostile, deeply nested file must not exhaust the recursion limit
        el, depth = stack.pop()
        indent = _indent(depth)
        attrs = " ".join(f'{_name(k)}="{" ".join(rename(v, k).split())}"' for k, v in sorted(el.attrib.items()))
        lines.append(f"{indent}<{_name(str(el.tag))}{' ' + attrs if attrs else ''}>")
        text = " ".join((el.text or "").split())
        if text:
            if _name(str(el.tag)) == "style":
                text = _STYLE_REF.sub(lambda m: "#" + mapping.get(m.group(1), m.group(1)), text)
            lines.append(f"{indent}  {text}")
        tail = " ".join((el.tail or "").split())
        if tail and depth:
            lines.append(f"{_indent(depth - 1)}  {tail}")
        stack.extend((child, depth + 1) for child in reversed(list(el)))
    return "\n".join(lines)


def compare_svg_numbers(expected: str, actual: str, settings: Settings) -> str:
    """Equal text, or the same text up to numbers that are close (hex colours are never numbers)."""
    if expected == actual:
        return EQUAL

    def split(text: str) -> tuple[str, list[str]]:
        numbers: list[str] = []

        def keep(match: re.Match[str]) -> str:
            if match.group(1):
                return match.group(1)
            numbers.append(match.group(2))
            return "\x00"

        return _TOKEN.sub(keep, text), numbers

    (skeleton_a, numbers_a), (skeleton_b, numbers_b) = split(expected), split(actual)
    if skeleton_a != skeleton_b:
        return DIFFERENT
    return compare_number_pairs(numbers_a, numbers_b, settings)


def cut_diff(diff: str, limit: int = MAX_DIFF_LINES) -> str:
    lines = diff.splitlines()
    if len(lines) <= limit:
        return diff
    return "\n".join(lines[:limit] + [f"… {len(lines) - limit} more lines of diff"])


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else _as_text(value).encode("utf-8")


class SVGNormalizer(Normalizer):
    """SVG: ids renamed canonically with their references, metadata dropped, coordinates within tolerance."""

    name = "svg"
    priority = 15
    mime_types = ("image/svg+xml",)
    suffixes = (".svg",)

    def canonical(self, value: Any) -> str:
        """The canonical text (user ``sanitize`` rules applied to it); raises for unsafe or malformed XML."""
        text = canonical_svg(parse_svg(_as_bytes(value)))
        for sanitizer in self.settings.sanitize:
            text = sanitizer.apply(text)
        return text

    def compare_files(self, expected: bytes, actual: bytes) -> Comparison:
        return self.compare(expected, actual)  # bytes go to the parser as they are: it reads the declared encoding

    def compare(self, expected: Any, actual: Any) -> Comparison:
        if _as_bytes(expected) == _as_bytes(actual):
            return Comparison(EQUAL)
        try:
            a, b = self.canonical(expected), self.canonical(actual)
        except (UnsafeXML, ET.ParseError, ValueError, RecursionError, MemoryError) as exc:
            result = TextNormalizer(self.settings).compare(expected, actual)
            if result.status == EQUAL:
                return result
            reason = str(exc) if isinstance(exc, UnsafeXML) else "it is not well-formed XML"
            return Comparison(result.status, f"SVG compared as text: {reason}; {result.detail}",
                              cut_diff(result.diff))
        status = compare_svg_numbers(a, b, self.settings)
        if status == EQUAL:
            return Comparison(EQUAL)
        if status == WITHIN_TOLERANCE:
            return Comparison(WITHIN_TOLERANCE, "the SVGs differ in ids and dates, and in numbers within tolerance")
        return Comparison(DIFFERENT, "the SVGs differ beyond element ids and dates: the drawing changed",
                          cut_diff(unified_diff(a, b, label="svg")))
