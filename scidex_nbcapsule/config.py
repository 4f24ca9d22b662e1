"""Settings a team writes once: license, authors, citable identifier, verification tolerances.

Looked up, first match wins per key: explicit arguments, ``capsule.toml`` next to
the notebook, ``[tool.nbcapsule]`` in the project's ``pyproject.toml``, the
user's ``config.toml`` (platformdirs), then ``NBCAPSULE_*`` environment variables.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError
from .manifest import Person

DEFAULT_LICENSE = "CC-BY-4.0"


def user_cache(*parts: str) -> Path:
    """A path in this package's user cache folder (``~/.cache/scidex-nbcapsule`` on Linux)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("scidex-nbcapsule"), *parts)
SPDX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-+]*( (AND|OR|WITH) [A-Za-z0-9][A-Za-z0-9.\-+]*)*$")
ORCID_RE = re.compile(r"^(https://orcid\.org/)?\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")


@dataclass
class Config:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def _read_toml(path: Path, table: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path} cannot be read as TOML: {exc}", hint="fix the file or remove it") from exc
    for key in table:
        data = data.get(key, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [{'.'.join(table)}] must be a table")
    return data


def user_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("scidex-nbcapsule")) / "config.toml"


def load_config(notebook_dir: Path | None = None, project_root: Path | None = None) -> Config:
    layers: list[tuple[str, dict[str, Any]]] = []
    if notebook_dir is not None:
        layers.append((str(notebook_dir / "capsule.toml"), _read_toml(notebook_dir / "capsule.toml")))
    if project_root is not None:
        py = project_root / "pyproject.toml"
        layers.append((f"{py} [tool.nbcapsule]", _read_toml(py, ("tool", "nbcapsule"))))
    layers.append((str(user_config_path()), _read_toml(user_config_path())))
    env = {}
    for key in ("license", "author", "orcid", "identifier", "title"):
        value = os.environ.get(f"NBCAPSULE_{key.upper()}")
        if value:
            env[key] = value
    publisher = {k: os.environ[f"NBCAPSULE_PUBLISHER_{k.upper()}"] for k in ("name", "url")
                 if os.environ.get(f"NBCAPSULE_PUBLISHER_{k.upper()}")}
    if publisher:
        env["publisher"] = publisher
    layers.append(("environment", env))
    config = Config()
    for source, layer in layers:
        for key, value in layer.items():
            if key not in config.values:
                config.values[key] = value
                config.sources[key] = source
    return config


def resolve_license(explicit: str | None, config: Config) -> tuple[str, str | None]:
    """The license to use and, when it is the default, a notice saying so."""
    value = explicit or config.get("license")
    notice = None
    if not value:
        value = DEFAULT_LICENSE
        notice = (f"no license given: the capsule is published under {DEFAULT_LICENSE}; choose one with "
                  "--license SPDX-ID or set license in [tool.nbcapsule] / capsule.toml")
    if not isinstance(value, str) or not (value.startswith("https://") or SPDX_RE.match(value)):
        raise ConfigError(f"license {value!r} is not an SPDX identifier",
                          hint="use an id from https://spdx.org/licenses/, e.g. MIT, CC-BY-4.0, Apache-2.0")
    return value, notice


def resolve_authors(explicit: list[str] | None, config: Config, *, cwd: Path | None = None) -> list[Person]:
    """Authors from arguments or configuration; falls back to git's user.name so no capsule is anonymous."""
    people: list[Person] = []
    if explicit:
        people = [Person(name=name) for name in explicit]
    elif isinstance(config.get("authors"), list):
        for entry in config.get("authors"):
            if isinstance(entry, str):
                people.append(Person(name=entry))
            elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
                people.append(Person(name=entry["name"], orcid=entry.get("orcid"), email=entry.get("email"),
                                     affiliation=entry.get("affiliation")))
            else:
                raise ConfigError(f"authors entry {entry!r} needs at least a name",
                                  hint='write authors = [{name = "Ada Lovelace", orcid = "0000-0002-1825-0097"}]')
    elif config.get("author"):
        people = [Person(name=str(config.get("author")), orcid=config.get("orcid"))]
    else:
        name = _git_user(cwd)
        if name:
            people = [Person(name=name)]
    for person in people:
        if person.orcid and not ORCID_RE.match(person.orcid):
            raise ConfigError(f"ORCID {person.orcid!r} of {person.name} is malformed",
                              hint="write it as 0000-0002-1825-0097 or https://orcid.org/0000-0002-1825-0097")
    return people


def _git_user(cwd: Path | None) -> str | None:
    try:
        out = subprocess.run(["git", "config", "user.name"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


#: Who publishes a crate's metadata (RO-Crate ``publisher``, ELN ``sdPublisher``) unless the team says.
DEFAULT_PUBLISHER = {"name": "scidex-nbcapsule", "url": "https://pypi.org/project/scidex-nbcapsule/"}


def resolve_publisher(config: Config) -> dict[str, str]:
    """The Organization that publishes the crate: ``publisher = {name = "…", url = "https://…"}`` in
    ``[tool.nbcapsule]``/``capsule.toml``/``config.toml``, or ``NBCAPSULE_PUBLISHER_NAME``/``_URL``; else the
    tool itself (:data:`DEFAULT_PUBLISHER`)."""
    value = config.get("publisher")
    if value is None:
        return dict(DEFAULT_PUBLISHER)
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"].strip():
        raise ConfigError(f"publisher {value!r} needs a name",
                          hint='write publisher = {name = "My Lab", url = "https://lab.example.org"}')
    url = value.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
        raise ConfigError(f"publisher url {url!r} is not an http(s) URL",
                          hint='write publisher = {name = "My Lab", url = "https://lab.example.org"}')
    return {"name": value["name"].strip(), **({"url": url} if url else {})}
