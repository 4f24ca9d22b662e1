"""Keeping credentials out of capsules: environment variables, cell outputs and files next to the notebook.

One set of rules, applied wherever kernel state leaves the kernel. What was
withheld is reported (names and kinds, never values) so users can tell.
"""

from __future__ import annotations

import copy
import re
from typing import Any

#: Variable names that carry secrets, matched as case-insensitive substrings.
SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "PRIVATE", "COOKIE")
#: Words that contain a part above but carry no secret (GIT_AUTHOR_NAME, KEYBOARD_LAYOUT...).
HARMLESS_WORDS = ("AUTHOR", "KEYBOARD", "KEYMAP", "MONKEY", "TURKEY", "DONKEY")

#: Values that look like credentials whatever their name.
SECRET_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("AWS secret access key", re.compile(r"(?i)aws.{0,20}?['\"=:\s][A-Za-z0-9/+]{40}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})\b")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("URL with a password", re.compile(r"\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:[^/\s@]+@[^\s]+", re.I)),
    ("private key block", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)")),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
    ("bearer token", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/]{20,}=*")),
)
#: A literal each pattern's match must contain (lower case): cheap tests that skip most regex scans.
_PREFILTERS = {
    "AWS access key id": ("akia", "asia"), "AWS secret access key": ("aws",), "GitHub token": ("gh", "github_pat_"),
    "GitLab token": ("glpat-",), "Slack token": ("xox",), "URL with a password": ("://",),
    "private key block": ("-----begin",), "JSON web token": ("eyj",), "bearer token": ("bearer",),
}

REDACTED = "[withheld by scidex-nbcapsule]"


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    for word in HARMLESS_WORDS:
        upper = upper.replace(word, "_")
    return any(part in upper for part in SECRET_NAME_PARTS)


def _candidates(text: str) -> list[tuple[str, re.Pattern[str]]]:
    lowered = text.lower()
    return [(kind, pattern) for kind, pattern in SECRET_VALUE_PATTERNS
            if any(literal in lowered for literal in _PREFILTERS[kind])]


def find_secrets(text: str) -> list[str]:
    """Kinds of credential found in ``text`` (empty when it looks clean)."""
    return [kind for kind, pattern in _candidates(text) if pattern.search(text)]


def redact(text: str, known: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """``text`` with every credential-looking value (and every ``known`` secret value) replaced, and the kinds."""
    kinds = []
    for kind, pattern in _candidates(text):
        text, count = pattern.subn(REDACTED, text)
        if count:
            kinds.append(kind)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
            kinds.append(KNOWN_KIND)
    return text, kinds


#: Secret values shorter than this are not searched for in outputs (too likely to be ordinary words).
MIN_KNOWN_LENGTH = 8
KNOWN_KIND = "value of a secret environment variable"


def secret_values(environ: dict[str, str]) -> tuple[str, ...]:
    """Values of the variables :func:`filter_environ` withholds, longest first: a secret printed bare (an AWS
    secret key on its own matches no pattern) is still recognised in cell outputs and files."""
    _, withheld = filter_environ(environ)
    values = {environ[w["what"]].strip() for w in withheld}
    return tuple(sorted((v for v in values if len(v) >= MIN_KNOWN_LENGTH), key=len, reverse=True))


def filter_environ(environ: dict[str, str]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Variables safe to publish, and a note for each one withheld (its name, never its value)."""
    kept: dict[str, str] = {}
    withheld: list[dict[str, str]] = []
    for name in sorted(environ):
        value = environ[name]
        if is_secret_name(name):
            withheld.append({"kind": "environment variable", "what": name, "reason": "its name marks it as a secret"})
            continue
        kinds = find_secrets(value)
        if kinds:
            withheld.append({"kind": "environment variable", "what": name,
                             "reason": "its value looks like a " + ", ".join(kinds)})
            continue
        kept[name] = value
    return kept, withheld



#: File names that hold credentials by convention.
SECRET_FILE_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "id_rsa", "id_ed25519", "id_ecdsa", ".netrc", ".pgpass",
                        "credentials", "credentials.*", "*.p12", "*.pfx", ".npmrc", ".pypirc")
#: Text files larger than this are not scanned (data files, not configuration).
SCAN_LIMIT = 1 << 20


def name_secrets(name: str) -> list[str]:
    """Why a file called ``name`` must not be copied into a crate, judging by its name alone."""
    from fnmatch import fnmatch

    if any(fnmatch(name, pat) for pat in SECRET_FILE_PATTERNS):
        return ["its name marks it as a credentials file"]
    return []


def content_secrets(data: bytes, known: tuple[str, ...] = ()) -> list[str]:
    """Why a file holding ``data`` must not be copied into a crate (empty when it may).

    Credentials live in small text files; binary files and files over :data:`SCAN_LIMIT` are not scanned.
    """
    if len(data) > SCAN_LIMIT or b"\0" in data[:8192]:
        return []
    text = data.decode("utf-8", errors="ignore")
    reasons = ["it contains a " + kind for kind in find_secrets(text)]
    if any(value in text for value in known):
        reasons.append("it contains the " + KNOWN_KIND)
    return reasons


def withheld_file(path: str, reasons: list[str]) -> dict[str, str]:
    """The ``withheld`` entry of a file left out of a crate, saying how to include it on purpose."""
    return {"kind": "file", "what": path, "reason": "; ".join(reasons), "how_to_include": f"--allow-secret {path}"}


def scrub_notebook(nb: Any, known: tuple[str, ...] = ()) -> tuple[Any, list[dict[str, str]]]:
    """A copy of ``nb`` with credential-looking text (and ``known`` secret values) in sources and outputs replaced."""
    nb = copy.deepcopy(nb)
    withheld: list[dict[str, str]] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, str):
            new, kinds = redact(value, known)
            for kind in kinds:
                withheld.append({"kind": "notebook text", "what": where, "reason": f"it looked like a {kind}"})
            return new
        if isinstance(value, list):
            return [clean(v, where) for v in value]
        if isinstance(value, dict):
            return {k: clean(v, where) for k, v in value.items()}
        return value

    for index, cell in enumerate(nb.cells):
        label = f"cell {index + 1}"
        cell.source = clean(cell.source, f"{label} source")
        for output in cell.get("outputs", []):
            for key in ("text", "traceback", "evalue"):
                if key in output:
                    output[key] = clean(output[key], f"{label} output")
            if "data" in output:
                for mime in list(output["data"]):
                    if not mime.startswith("image/"):
                        output["data"][mime] = clean(output["data"][mime], f"{label} output ({mime})")
    return nb, withheld
