"""What every normaliser shares: verdict constants, user settings, the comparison result, numbers, the base class."""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ...errors import ConfigError

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
    return compare_number_pairs(NUMBER_RE.findall(expected), NUMBER_RE.findall(actual), settings)


def compare_number_pairs(expected: Sequence[str], actual: Sequence[str], settings: Settings) -> str:
    """The worst status over numbers taken pairwise (the texts around them already match)."""
    status = EQUAL
    for a, b in zip(expected, actual):
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


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, indent=1)


def _worst(statuses: Iterable[str]) -> str:
    order = {EQUAL: 0, WITHIN_TOLERANCE: 1, DIFFERENT: 2}
    worst = EQUAL
    for status in list(statuses):
        if order[status] > order[worst]:
            worst = status
    return worst
