"""Hints: for an output that differs, what would have made the difference go away, found by trying it.

Tried in order, the first that applies is the hint:

1. a built-in normaliser or text pass that was not the one used (disabled, or
   overridden by a plugin) and would accept the two values;
2. a ``sanitize`` rule for something that legitimately changes between runs
   (dates, clock times, Unix and compact timestamps, durations, UUIDs, short addresses,
   process ids, hex tokens, temporary paths): the values are compared again
   with the candidate rule added to the user's, alone, then several together;
3. when only numbers differ: the ``rtol`` that would accept them, or, for
   numbers that look drawn at random, seeding the generator;
4. what is known about the kind of output: SVGs that differ beyond ids and
   dates, images near the pixel threshold or of another size.

Nothing is suggested that was not checked to make the comparison pass, except
the seed (which cannot be tried without re-running) and the facts of case 4.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from typing import Any, Sequence

from .base import DIFFERENT, NUMBER_RE, Comparison, Normalizer, Sanitizer, Settings, _as_text

#: Larger outputs get only the cheap hints (each candidate rule means a full comparison).
MAX_HINT_CHARS = 1_000_000

#: (what it is, regex, replacement): rules a user could add to ``sanitize``.
CANDIDATE_RULES: tuple[tuple[str, str, str], ...] = (
    ("a date", r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b", "DATE"),
    ("a clock time", r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?\b", "HH:MM"),
    ("a Unix timestamp (time.time())", r"(?<![\d.])1\d{9}(?:\.\d+)?(?!\d)", "EPOCH"),
    ("a compact timestamp (YYYYMMDD-HHMMSS)", r"(?<!\d)(?:19|20)\d{6}[T_-]?\d{4,6}(?:\.\d+)?(?!\d)", "STAMP"),
    ("an elapsed time", r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?\s?(?:ms|µs|us|ns|s|sec|seconds|min|minutes)\b",
     "DURATION"),
    ("a UUID", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "UUID"),
    ("a memory address", r"\b0x[0-9a-fA-F]+\b", "0xADDR"),
    ("a process id", r"(?i)\bpid\W{0,3}\d+", "pid N"),
    ("a hexadecimal token (a digest or a random id)", r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{16,}\b", "HEX"),
    ("a temporary path", r"[^\s'\"]*(?:tmp|temp|Temp|TEMP)[^\s'\"/\\]*[/\\][^\s'\"<>:,)\]]*", "TMP"),
)

WHERE = "[tool.nbcapsule.verify] in the pyproject.toml (or a capsule.toml) of the folder you verify from"


def _toml_string(value: str) -> str:
    return f"'{value}'" if "'" not in value and "\n" not in value else json.dumps(value)


def sanitize_rule(regex: str, replace: str) -> str:
    """The TOML inline table for one rule, as ``Settings.from_mapping`` reads it."""
    return f"{{regex = {_toml_string(regex)}, replace = {_toml_string(replace)}}}"


def _with_settings(normalizer: Normalizer, settings: Settings) -> Normalizer:
    clone = copy.copy(normalizer)
    clone.settings = settings
    return clone


def _compare(normalizer: Normalizer, expected: Any, actual: Any) -> Comparison:
    if isinstance(expected, bytes) and isinstance(actual, bytes):
        return normalizer.compare_files(expected, actual)
    return normalizer.compare(expected, actual)


def _passes(normalizer: Normalizer, expected: Any, actual: Any) -> bool:
    try:
        return _compare(normalizer, expected, actual).status != DIFFERENT
    except Exception:  # noqa: BLE001 - a hint is best effort: a plugin failing on a retry must not break verify
        return False


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes)) else len(_as_text(value))


def suggest(expected: Any, actual: Any, used: Normalizer, normalizers: Sequence[Normalizer] = (), *,
            mime: str | None = None, path: str | None = None) -> str:
    """A hint for two values ``used`` found different, or ``""`` when nothing is known to help."""
    if _passes(used, expected, actual):  # not different after all: nothing to explain
        return ""
    try:
        return (_missing_normalizer(expected, actual, used, normalizers, mime, path)
                or _sanitize_hint(expected, actual, used)
                or _kind_hint(expected, actual, used))
    except Exception:  # noqa: BLE001 - best effort, never a reason for verify to fail
        return ""


# -- 1. a built-in that would have accepted them -----------------------------------------------------------
def _missing_normalizer(expected: Any, actual: Any, used: Normalizer, normalizers: Sequence[Normalizer],
                        mime: str | None, path: str | None) -> str:
    from .svg import SVGNormalizer
    from .text import TextNormalizer, builtin_passes

    is_svg = mime == "image/svg+xml" or (path or "").lower().endswith(".svg")
    if is_svg and not isinstance(used, SVGNormalizer):
        if _passes(SVGNormalizer(used.settings), expected, actual):
            return (f"the SVGs differ only in element ids and dates: the built-in `svg` normaliser would accept "
                    f"them, but `{used.name}` compared them (is `svg` disabled, or overridden by a plugin?)")
    if isinstance(used, TextNormalizer) and _size(expected) + _size(actual) <= MAX_HINT_CHARS:
        have = {step.name for step in used.passes}
        for step in builtin_passes(used.settings):
            if step.name in have:
                continue
            trial = copy.copy(used)
            trial.passes = [*used.passes, step]
            if _passes(trial, expected, actual):
                what = {"progress": "progress bars (tqdm's redraws, clocks and rates)",
                        "set-repr": "the order of printed set elements or dict items"}.get(step.name, step.name)
                return (f"the outputs differ only in {what}: the built-in `{step.name}` text pass would accept "
                        f"them, but it is not loaded here")
    return ""


# -- 2. a sanitize rule ---------------------------------------------------------------------------------------
def _sanitize_hint(expected: Any, actual: Any, used: Normalizer) -> str:
    if _size(expected) + _size(actual) > MAX_HINT_CHARS:
        return ""
    settings = used.settings

    def works(rules: Sequence[tuple[str, str, str]]) -> bool:
        extra = [Sanitizer(re.compile(regex), replace) for _label, regex, replace in rules]
        trial = dataclasses.replace(settings, sanitize=[*settings.sanitize, *extra])
        return _passes(_with_settings(used, trial), expected, actual)

    needed: list[tuple[str, str, str]] | None = None
    for rule in CANDIDATE_RULES:
        if works([rule]):
            needed = [rule]
            break
    if needed is None:
        if not works(CANDIDATE_RULES):
            return ""
        needed = list(CANDIDATE_RULES)
        for rule in list(needed):  # drop the rules that are not needed
            if len(needed) > 1 and works([r for r in needed if r is not rule]):
                needed.remove(rule)
    labels = [label for label, _regex, _replace in needed]
    what = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
    rules = ", ".join(sanitize_rule(regex, replace) for _label, regex, replace in needed)
    return (f"the outputs differ only in {what}; add {'a sanitize rule' if len(needed) == 1 else 'sanitize rules'} "
            f"to {WHERE}: sanitize = [{rules}]")


# -- 3. and 4. what the values themselves say ---------------------------------------------------------------
def _kind_hint(expected: Any, actual: Any, used: Normalizer) -> str:
    from .images import ImageNormalizer, _decode_image, image_difference
    from .svg import _TOKEN, SVGNormalizer
    from .text import TextNormalizer

    if isinstance(used, ImageNormalizer):
        diff = image_difference(_decode_image(expected), _decode_image(actual))
        if diff is None:
            return ("the images differ in size or cannot be read: another figure size or DPI "
                    "(matplotlib's figure.dpi / savefig.dpi, bbox_inches) would do that")
        if diff < 0.1:
            return (f"mean pixel difference {diff:.4f}: if this is rendering noise (fonts, antialiasing), "
                    f"image_threshold = {_round_up(diff)} in {WHERE} would accept it")
        return ""
    if isinstance(used, SVGNormalizer):
        try:
            a, b = used.canonical(expected), used.canonical(actual)
        except Exception:  # noqa: BLE001 - not parsed: compared as text, nothing more to say
            return ""
        numbers = _number_hint(a, b, _TOKEN, used.settings, group=2, what="coordinates")
        return ("the SVGs differ beyond element ids and dates: " +
                (numbers or "the drawing itself changed (elements, text or styles)"))
    if _size(expected) + _size(actual) > MAX_HINT_CHARS:
        return ""
    if isinstance(used, TextNormalizer):
        a, b = used.normalize(_as_text(expected)), used.normalize(_as_text(actual))
    else:
        a, b = _as_text(_decoded(expected)), _as_text(_decoded(actual))
    return _number_hint(a, b, NUMBER_RE, used.settings)


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value.decode("utf-8", errors="replace")
    return value


def _round_up(value: float) -> str:
    """A round number a bit above ``value``: 0.0123 → 0.02, 3e-9 → 1e-08."""
    if value <= 0:
        return "0"
    exponent = math.floor(math.log10(value))
    digit = math.floor(value / 10 ** exponent) + 1
    if digit >= 10:
        digit, exponent = 1, exponent + 1
    return f"{digit}e{exponent}" if exponent < -3 else f"{digit * 10 ** exponent:.{max(0, -exponent)}f}"


def _number_hint(a: str, b: str, pattern: re.Pattern[str], settings: Settings, *, group: int = 0,
                 what: str = "numbers") -> str:
    """When two texts are the same but for numbers: how far apart they are, and what would accept them."""
    def split(text: str) -> tuple[str, list[str]]:
        found: list[str] = []

        def keep(match: re.Match[str]) -> str:
            value = match.group(group)
            if not value:
                return match.group(0)
            found.append(value)
            return "\x00"

        return pattern.sub(keep, text), found

    (skeleton_a, numbers_a), (skeleton_b, numbers_b) = split(a), split(b)
    if skeleton_a != skeleton_b or not numbers_a:
        return ""
    pairs = []
    for x, y in zip(numbers_a, numbers_b):
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return ""
        if x != y and not math.isclose(fx, fy, rel_tol=settings.rtol, abs_tol=settings.atol):
            pairs.append((x, y, fx, fy))
    if not pairs:
        return ""
    rel = max(abs(fx - fy) / max(abs(fx), abs(fy)) for _x, _y, fx, fy in pairs if max(abs(fx), abs(fy)) > 0)
    x, y = pairs[0][0], pairs[0][1]
    first = f"{len(pairs)} of them, first {x} recorded, {y} now"
    if rel <= 1e-3:
        return (f"only {what} differ, by up to {rel:.1e} relative ({first}): if this is float noise, "
                f"rtol = {_round_up(rel)} in {WHERE} would accept it")
    if what == "numbers" and any(_looks_random(x) or _looks_random(y) for x, y, _fx, _fy in pairs):
        return (f"only numbers differ ({first}) and they look like random draws: this looks like a random "
                f"seed that is not set; seed the generator before drawing (random.seed(0), "
                f"numpy.random.default_rng(0), torch.manual_seed(0))")
    return f"only {what} differ ({first})"


def _looks_random(number: str) -> bool:
    """A float printed with many significant digits, as ``random.random()`` and friends print."""
    digits = re.sub(r"[eE].*$", "", number).lstrip("+-").replace(".", "").lstrip("0")
    return "." in number and len(digits) >= 6
