"""Normalisers: how one kind of output is made comparable, and compared, across two runs.

Two runs of the same analysis never print identical bytes (execution counts,
object addresses, clocks, temporary folders, float noise), so each kind of
output has a normaliser that masks what may legitimately change and compares
the rest, with numeric tolerances. They are plugins (entry-point group
``scidex_nbcapsule.normalizers``) so a team can add one for its own formats;
the built-ins are used when the package's entry points are not installed.
"""

from __future__ import annotations

import base64
import binascii
import csv
import difflib
import hashlib
import io
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Iterable, Sequence

from ..errors import ConfigError

ENTRY_POINT_GROUP = "scidex_nbcapsule.normalizers"

EQUAL = "equal"
WITHIN_TOLERANCE = "within-tolerance"
DIFFERENT = "different"

DEFAULT_RTOL = 1e-7
DEFAULT_ATOL = 1e-12
#: Mean absolute pixel difference (0..1) below which two images count as the same picture.
DEFAULT_IMAGE_THRESHOLD = 0.01


@dataclass
class Sanitizer:
    """An nbval-style ``regex``/``replace`` pair applied to text before comparing."""

    regex: re.Pattern[str]
    replace: str

    def apply(self, text: str) -> str:
        return self.regex.sub(self.replace, text)


@dataclass
class Settings:
    """Tolerances and sanitisers, from ``[tool.nbcapsule.verify]`` or ``capsule.toml``."""

    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    image_threshold: float = DEFAULT_IMAGE_THRESHOLD
    sanitize: list[Sanitizer] = field(default_factory=list)
    #: Literal paths (e.g. the temporary crate copy) replaced by a placeholder in text.
    masked_paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, *, source: str = "configuration") -> "Settings":
        """Validate user settings; a bad one is a :class:`ConfigError` naming where it came from."""
        data = dict(data or {})
        settings = cls()
        for key in ("rtol", "atol", "image_threshold"):
            if key in data and data[key] is not None:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    raise ConfigError(f"{source}: verify {key} must be a number ≥ 0, not {value!r}")
                setattr(settings, key, float(value))
        rules = data.get("sanitize") or []
        if isinstance(rules, dict):
            rules = [rules]
        if not isinstance(rules, list):
            raise ConfigError(f"{source}: sanitize must be a list of {{regex=..., replace=...}} tables")
        for rule in rules:
            if not isinstance(rule, dict) or not isinstance(rule.get("regex"), str):
                raise ConfigError(f"{source}: sanitize entry {rule!r} needs a regex",
                                  hint='write sanitize = [{regex = "run at .*", replace = "run at TIME"}]')
            replace = rule.get("replace", "")
            if not isinstance(replace, str):
                raise ConfigError(f"{source}: sanitize replace for {rule['regex']!r} must be a string")
            try:
                pattern = re.compile(rule["regex"])
            except re.error as exc:
                raise ConfigError(f"{source}: sanitize regex {rule['regex']!r} is invalid: {exc}") from exc
            settings.sanitize.append(Sanitizer(pattern, replace))
        return settings

    def to_dict(self) -> dict[str, Any]:
        return {"rtol": self.rtol, "atol": self.atol, "image_threshold": self.image_threshold,
                "sanitize": [{"regex": s.regex.pattern, "replace": s.replace} for s in self.sanitize]}


@dataclass
class Comparison:
    """The outcome of comparing one output or file: equal, within tolerance, or different (and how)."""

    status: str
    detail: str = ""
    diff: str = ""
    #: Data URIs of the expected and actual pictures, for the side-by-side view.
    images: tuple[str, str] | None = None

    @property
    def differs(self) -> bool:
        return self.status == DIFFERENT


# -- numbers --------------------------------------------------------------------------------
NUMBER_RE = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])|\b(?:nan|-?inf)\b")


def numbers_close(a: float, b: float, settings: Settings) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=settings.rtol, abs_tol=settings.atol)


def compare_scalars(expected: str, actual: str, settings: Settings) -> str:
    """Two cell or token strings: equal, within tolerance when both are close numbers, else different."""
    if expected == actual:
        return EQUAL
    try:
        a, b = float(expected), float(actual)
    except ValueError:
        return DIFFERENT
    return WITHIN_TOLERANCE if numbers_close(a, b, settings) else DIFFERENT


def compare_text_numbers(expected: str, actual: str, settings: Settings) -> str:
    """Texts equal apart from numbers that are close: the usual shape of float noise in printed output."""
    if expected == actual:
        return EQUAL
    if NUMBER_RE.sub("#", expected) != NUMBER_RE.sub("#", actual):
        return DIFFERENT
    status = EQUAL
    for a, b in zip(NUMBER_RE.findall(expected), NUMBER_RE.findall(actual)):
        result = compare_scalars(a, b, settings)
        if result == DIFFERENT:
            return DIFFERENT
        if result == WITHIN_TOLERANCE:
            status = WITHIN_TOLERANCE
    return status


def unified_diff(expected: str, actual: str, *, label: str = "output") -> str:
    lines = difflib.unified_diff(expected.splitlines(), actual.splitlines(), fromfile=f"{label} (recorded)",
                                 tofile=f"{label} (re-executed)", lineterm="", n=2)
    return "\n".join(lines)


# -- plugin interface ------------------------------------------------------------------------
class Normalizer:
    """Base class of normaliser plugins.

    ``mime_types`` and ``suffixes`` say what it handles; ``compare`` gets the
    two values as they appear in a notebook output (text or decoded JSON) and
    ``compare_files`` the raw bytes of two files. Lower ``priority`` is tried first.
    """

    name = "base"
    priority = 100
    mime_types: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    def accepts(self, mime: str, data: Any) -> bool:
        return mime in self.mime_types

    def accepts_file(self, path: str) -> bool:
        return path.lower().endswith(self.suffixes) if self.suffixes else False

    def compare(self, expected: Any, actual: Any) -> Comparison:
        raise NotImplementedError

    def compare_files(self, expected: bytes, actual: bytes) -> Comparison:
        try:
            return self.compare(expected.decode("utf-8"), actual.decode("utf-8"))
        except UnicodeDecodeError:
            return Comparison(DIFFERENT, "the bytes differ and are not UTF-8 text")


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


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, indent=1)


# -- JSON ----------------------------------------------------------------------------------------
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


def _worst(statuses: Iterable[str]) -> str:
    order = {EQUAL: 0, WITHIN_TOLERANCE: 1, DIFFERENT: 2}
    worst = EQUAL
    for status in list(statuses):
        if order[status] > order[worst]:
            worst = status
    return worst


# -- tables (HTML and CSV) --------------------------------------------------------------------
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


# -- images ------------------------------------------------------------------------------------
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


BUILTIN_NORMALIZERS: dict[str, type[Normalizer]] = {
    "image": ImageNormalizer,
    "json": JSONNormalizer,
    "html-table": HTMLTableNormalizer,
    "csv": CSVNormalizer,
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
    instances = [cls(settings) for cls in normalizer_classes().values()]
    return sorted(instances, key=lambda n: (n.priority, n.name))


def for_mime(normalizers: Sequence[Normalizer], mime: str, data: Any) -> Normalizer:
    for normalizer in normalizers:
        if normalizer.accepts(mime, data):
            return normalizer
    return TextNormalizer(normalizers[0].settings if normalizers else Settings())


def for_file(normalizers: Sequence[Normalizer], path: str) -> Normalizer | None:
    for normalizer in normalizers:
        if normalizer.accepts_file(path):
            return normalizer
    return None
