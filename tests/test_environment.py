"""The environment snapshot: installed distributions read once, and again after every install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CODE = """
import json, sys
from scidex_nbcapsule import environment
known, mapping = environment.installed_distributions()
print(json.dumps({"known": known, "mapping": mapping, "cache": str(environment._cache_file())}))
"""


def _installed(tmp_path: Path, extra_path: Path | None = None) -> dict:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def _install(site: Path, name: str, version: str, module: str) -> None:
    """What pip leaves behind for a distribution: a module and its .dist-info."""
    (site / f"{module}.py").write_text("VALUE = 1\n")
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nA test package.\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    (info / "RECORD").write_text(f"{module}.py,,\n{info.name}/METADATA,,\n")


def test_installed_distributions_are_cached_and_reread_after_an_install(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    first = _installed(tmp_path, site)
    cache = Path(first["cache"])
    assert cache.is_file() and str(tmp_path / "cache") in str(cache)
    assert "nbformat" in first["known"] and "nbformat" in first["mapping"]
    assert _installed(tmp_path, site) == first  # from the cache: the same answer
    _install(site, "capsule-probe-pkg", "1.2.3", "capsule_probe")
    after = _installed(tmp_path, site)
    assert after["known"]["capsule-probe-pkg"] == "1.2.3"
    assert after["mapping"]["capsule_probe"] == ["capsule-probe-pkg"]


def test_a_damaged_cache_is_read_again_from_the_metadata(tmp_path):
    first = _installed(tmp_path)
    cache = Path(first["cache"])
    for damage in ("{not json", json.dumps({"state": "x"}), json.dumps([1, 2])):
        cache.write_text(damage)
        assert _installed(tmp_path) == first
    data = json.loads(cache.read_text())
    data["distributions"]["planted"] = "9"
    data["state"] = [["/nowhere", 1]]  # another interpreter's state: not used
    cache.write_text(json.dumps(data))
    assert "planted" not in _installed(tmp_path)["known"]


KERNELS = """
import json
from jupyter_client.kernelspec import KernelSpecManager
from scidex_nbcapsule import environment
theirs = {k: {f: v["spec"].get(f) for f in ("argv", "display_name", "language")}
          for k, v in KernelSpecManager().get_all_specs().items()}
ours = {k: {f: v.get(f) for f in ("argv", "display_name", "language")} for k, v in environment._kernel_specs().items()}
print(json.dumps({"theirs": theirs, "ours": ours, "spec": environment.kernel_spec()}))
"""


def test_kernel_specs_are_the_ones_jupyter_client_finds(tmp_path):
    kernels = tmp_path / "share" / "kernels"
    for name, exe in (("Capsule-Probe", sys.executable), ("other", "/usr/bin/false")):
        (kernels / name).mkdir(parents=True)
        (kernels / name / "kernel.json").write_text(json.dumps({
            "argv": [exe, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": f"Probe {name}",
            "language": "python"}))
    (kernels / "broken").mkdir()
    (kernels / "broken" / "kernel.json").write_text("{not json")
    env = dict(os.environ, JUPYTER_PATH=str(tmp_path / "share"))
    out = json.loads(subprocess.run([sys.executable, "-c", KERNELS], capture_output=True, text=True, env=env,
                                    check=True).stdout)
    assert out["ours"] == out["theirs"]
    assert "capsule-probe" in out["ours"]
    assert out["spec"] == {"name": "capsule-probe", "display_name": "Probe Capsule-Probe", "language": "python"}
