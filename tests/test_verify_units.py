"""Normalisers, settings, report redaction, Binder links and the reverify notebook: no kernels needed."""

from __future__ import annotations

import base64
import io
import json
import subprocess

import nbformat
import pytest
from PIL import Image, ImageDraw

from scidex_nbcapsule.errors import ConfigError
from scidex_nbcapsule.manifest import Manifest, new_capsule_id, utc_now
from scidex_nbcapsule.verify import load_settings
from scidex_nbcapsule.verify.binder import binder_urls, public_url, reverify_notebook
from scidex_nbcapsule.verify.compare import Difference
from scidex_nbcapsule.verify.normalizers import (DIFFERENT, EQUAL, WITHIN_TOLERANCE, CSVNormalizer,
                                                 HTMLTableNormalizer, ImageNormalizer, JSONNormalizer, Settings,
                                                 TextNormalizer, load_normalizers, normalizer_classes,
                                                 parse_html_tables)
from scidex_nbcapsule.verify.report import VerificationReport

from helpers import nbcapsule

PANDAS_LIKE = """<div><style scoped>.dataframe tbody tr th {vertical-align: top;}</style>
<table border="1" class="dataframe">
  <thead><tr style="text-align: right;"><th></th><th>station</th><th>mean</th></tr></thead>
  <tbody>
    <tr><th>0</th><td>Lund</td><td>12.36</td></tr>
    <tr><th>1</th><td>Kiruna</td><td>2.49</td></tr>
  </tbody>
</table></div>"""

SAME_VALUES_OTHER_MARKUP = """<table class="x"><tr><th></th><th> station </th><th>mean</th></tr>
<tr><th>0</th><td><b>Lund</b></td><td>
      12.36</td></tr><tr><th>1</th><td>Kiruna</td><td>2.4900000000001</td></tr></table>"""


def test_html_tables_compare_by_cell_values_not_markup():
    assert parse_html_tables(PANDAS_LIKE) == [[["", "station", "mean"], ["0", "Lund", "12.36"], ["1", "Kiruna", "2.49"]]]
    normalizer = HTMLTableNormalizer(Settings())
    assert normalizer.accepts("text/html", PANDAS_LIKE)
    assert normalizer.compare(PANDAS_LIKE, SAME_VALUES_OTHER_MARKUP).status == WITHIN_TOLERANCE
    assert normalizer.compare(PANDAS_LIKE, PANDAS_LIKE.replace("   ", " ")).status == EQUAL
    changed = normalizer.compare(PANDAS_LIKE, PANDAS_LIKE.replace("Kiruna", "Abisko"))
    assert changed.status == DIFFERENT
    assert "row 3 column 2" in changed.detail and "Abisko" in changed.diff


def _png(colour: tuple[int, int, int], *, dot: tuple[int, int] | None = None, size=(60, 40)) -> bytes:
    image = Image.new("RGB", size, colour)
    if dot:
        ImageDraw.Draw(image).rectangle([dot, (dot[0] + 1, dot[1] + 1)], fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_images_by_digest_then_by_pixel_difference():
    normalizer = ImageNormalizer(Settings(image_threshold=0.01))
    base = _png((200, 220, 240))
    assert normalizer.compare_files(base, base).status == EQUAL
    nearly = normalizer.compare_files(base, _png((200, 220, 240), dot=(10, 10)))
    assert nearly.status == WITHIN_TOLERANCE and nearly.images and nearly.images[0].startswith("data:image/png")
    other = normalizer.compare(base64.b64encode(base).decode(), base64.b64encode(_png((20, 20, 20))).decode())
    assert other.status == DIFFERENT and "mean pixel difference" in other.detail
    resized = normalizer.compare_files(base, _png((200, 220, 240), size=(61, 40)))
    assert resized.status == DIFFERENT


def test_text_masks_counts_addresses_clocks_and_temp_paths():
    text = TextNormalizer(Settings())
    a = "Out[3]: <Foo object at 0x7f3a2b1c0d90> at 2024-05-01T10:11:12.123Z in /tmp/abc123/x.csv"
    b = "Out[17]: <Foo object at 0x7f00deadbeef> at 2026-11-25 06:00:01 in /tmp/zz9/x.csv"
    assert text.compare(a, b).status == EQUAL
    assert text.compare("mean 0.5000000000001\n", "mean 0.5000000000003\n").status == WITHIN_TOLERANCE
    diff = text.compare("mean 0.51\n", "mean 0.73\n")
    assert diff.status == DIFFERENT and "-mean 0.51" in diff.diff and "+mean 0.73" in diff.diff
    assert text.compare("3 rows", "4 rows").status == DIFFERENT


def test_user_sanitisers_and_tolerances_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.nbcapsule.verify]\nrtol = 0.01\nsanitize = [{regex = "took \\\\d+ ms", replace = "took N ms"}]\n')
    settings = load_settings(None, None, project_dir=tmp_path)
    assert settings.rtol == 0.01 and settings.atol == Settings().atol
    text = TextNormalizer(settings)
    assert text.compare("took 13 ms", "took 250 ms").status == EQUAL
    assert text.compare("value 100.0", "value 100.5").status == WITHIN_TOLERANCE
    explicit = load_settings(None, None, {"verify": {"rtol": 0}}, project_dir=tmp_path)
    assert explicit.rtol == 0 and explicit.sanitize
    (tmp_path / "capsule.toml").write_text('sanitize = [{regex = "("}]\n')
    with pytest.raises(ConfigError, match="invalid"):
        load_settings(None, None, project_dir=tmp_path)


def test_json_and_csv_by_value():
    j = JSONNormalizer(Settings())
    assert j.compare({"a": [1, 2.0000000000001], "b": "x"}, {"b": "x", "a": [1, 2.0]}).status == WITHIN_TOLERANCE
    result = j.compare_files(b'{"a": 1}', b'{"a": 2}')
    assert result.status == DIFFERENT and "$.a" in result.detail
    c = CSVNormalizer(Settings())
    assert c.compare_files(b"x,y\r\n1,2.0\r\n", b'"x","y"\n1,2.0\n').status == EQUAL
    assert c.compare_files(b"x,y\n1,2\n", b"x,y\n1,3\n").status == DIFFERENT


def test_normalizer_plugins_come_from_entry_points_or_builtins():
    classes = normalizer_classes()
    for name in ("text", "json", "html-table", "image"):
        assert name in classes
    order = [n.name for n in load_normalizers()]
    assert order.index("image") < order.index("html-table") < order.index("text")


def test_report_never_shows_secrets():
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    report = VerificationReport(
        verdict="mismatch", crate="/c", started=utc_now(), finished=utc_now(), seconds=1.0,
        differences=[Difference("cell", "cell 2", DIFFERENT, "stdout", f"token {token}", f"-{token}\n+other")],
        notes=[f"saw {token}"])
    for text in (report.to_json(), report.to_html(), report.summary(), report._repr_html_()):
        assert token not in text
        assert "withheld" in text
    assert report.exit_code == 10 and not report.ok
    json.loads(report.to_json())


def test_binder_urls_for_github_and_any_git_host():
    urls = binder_urls("https://github.com/scidex/analysis.git", "main", "capsules/c1/reverify.ipynb")
    assert urls["gh"] == "https://mybinder.org/v2/gh/scidex/analysis/main?labpath=capsules/c1/reverify.ipynb"
    assert urls["git"] == ("https://mybinder.org/v2/git/https%3A%2F%2Fgithub.com%2Fscidex%2Fanalysis.git/main"
                           "?labpath=capsules/c1/reverify.ipynb")
    other = binder_urls("https://gitlab.com/group/project", "v1.0", "reverify.ipynb")
    assert set(other) == {"git"} and other["git"].startswith("https://mybinder.org/v2/git/https%3A%2F%2Fgitlab.com")
    for bad in ("git@github.com:o/r.git", "file:///srv/repo", "ssh://github.com/o/r",
                "https://user:token@github.com/o/r", "https://token@github.com/o/r"):
        with pytest.raises(ConfigError):
            binder_urls(bad, "main", "x.ipynb")
    assert public_url("git@github.com:o/r.git") == "https://github.com/o/r"
    assert public_url("https://u:p@github.com/o/r") is None


def test_binder_command_defaults_from_git_checkout(tmp_path):
    repo = tmp_path / "repo"
    crate = repo / "capsules" / "c1"
    crate.mkdir(parents=True)
    (crate / "reverify.ipynb").write_text("{}")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", "git@github.com:owner/proj.git"], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "crate"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = nbcapsule("binder", str(crate), "--json", check=True)
    urls = json.loads(result.stdout)
    assert urls["gh"] == f"https://mybinder.org/v2/gh/owner/proj/{head}?labpath=capsules/c1/reverify.ipynb"
    refused = nbcapsule("binder", str(crate), "--repo", "https://me:secret@github.com/owner/proj")
    assert refused.returncode == 2 and "credentials" in refused.stderr and "secret" not in refused.stderr


def test_reverify_notebook_is_valid_and_deterministic():
    manifest = Manifest(capsule_id=new_capsule_id(), title="T", license="MIT", created_at=utc_now(),
                        notebook="analysis/nb.ipynb", notebook_sha256="0" * 64)
    data = reverify_notebook(manifest)
    assert data == reverify_notebook(manifest)
    nb = nbformat.reads(data.decode(), as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "verify('.'" in code and "pip install" not in code and "nbcapsule verify . --json" in code


# -- SVG, progress bars, printed sets, hints (issue 14) -------------------------------------------------------
def _mpl_svg(ys=(1, 4, 9)) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([1, 2, 3], list(ys))
    ax.set_title("squares")
    out = io.BytesIO()
    fig.savefig(out, format="svg")
    return out.getvalue()


def test_svg_ids_references_and_dates_are_canonical():
    from scidex_nbcapsule.verify.normalizers import SVGNormalizer

    first, second = _mpl_svg(), _mpl_svg()  # every matplotlib id is salted afresh, and the date moves
    assert first != second and b"<dc:date>" in first and b'clip-path="url(#p' in first
    assert TextNormalizer(Settings()).compare_files(first, second).status == DIFFERENT
    svg = SVGNormalizer(Settings())
    assert svg.accepts("image/svg+xml", first) and svg.accepts_file("results/fig.svg")
    assert svg.compare_files(first, second).status == EQUAL
    assert svg.compare(first.decode(), second.decode().splitlines(keepends=True)).status == EQUAL  # nbformat lists
    moved = svg.compare_files(first, _mpl_svg((1, 4, 10)))
    assert moved.status == DIFFERENT and "beyond element ids and dates" in moved.detail and "@@" in moved.diff
    nudged = second.replace(b'y="', b'y="0', 1)  # 0x == x: same number, other spelling
    assert svg.compare_files(first, nudged).status in (EQUAL, WITHIN_TOLERANCE)
    canonical = svg.canonical(first)
    assert "dc:date" not in canonical and "Matplotlib v" not in canonical and 'id="id1"' in canonical


def test_svg_references_are_renamed_consistently_not_independently():
    from scidex_nbcapsule.verify.normalizers import SVGNormalizer

    def doc(first_clip: str, second_clip: str) -> str:
        rects = {"a": '<clipPath id="c{n}"><rect width="1" height="1"/></clipPath>',
                 "b": '<clipPath id="c{n}"><rect width="2" height="2"/></clipPath>'}
        defs = "".join(rects[k].format(n=k) for k in "ab")
        return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
                f'<g clip-path="url(#c{first_clip})"/><use xlink:href="#c{second_clip}"/><defs>{defs}</defs></svg>')

    svg = SVGNormalizer(Settings())
    renamed = doc("a", "b").replace("#ca", "#Z1").replace('"ca"', '"Z1"').replace("#cb", "#Q").replace('"cb"', '"Q"')
    assert svg.compare(doc("a", "b"), renamed).status == EQUAL
    assert svg.compare(doc("a", "b"), doc("b", "a")).status == DIFFERENT  # the clips swapped: another drawing


def test_svg_that_is_not_xml_is_compared_as_text():
    from scidex_nbcapsule.verify.normalizers import SVGNormalizer

    svg = SVGNormalizer(Settings())
    result = svg.compare("<svg><g id='p1'></svg>", "<svg><g id='p2'></svg>")
    assert result.status == DIFFERENT and "not well-formed" in result.detail
    assert svg.compare("<svg>at 2024-01-01T10:00:00</g>", "<svg>at 2025-02-02T11:11:11</g>").status == EQUAL


_LAUGHS = "".join(f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10))
BILLION_LAUGHS = (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY l0 "lol">{_LAUGHS}]>'
                  '<svg xmlns="http://www.w3.org/2000/svg"><text>&l9;</text></svg>')
EXTERNAL_ENTITY = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                   '<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>')


def test_hostile_svg_is_never_expanded():
    import time
    import tracemalloc

    from scidex_nbcapsule.verify.normalizers import SVGNormalizer, UnsafeXML, parse_svg
    from scidex_nbcapsule.verify.normalizers.svg import parse_svg_expat

    tracemalloc.start()
    started = time.monotonic()
    try:
        for parse in (parse_svg, parse_svg_expat):  # defusedxml (installed here), and the stdlib path without it
            for hostile in (BILLION_LAUGHS, EXTERNAL_ENTITY):
                with pytest.raises(UnsafeXML):
                    parse(hostile.encode())
        result = SVGNormalizer(Settings()).compare(BILLION_LAUGHS, BILLION_LAUGHS.replace("lol", "lul"))
        assert result.status == DIFFERENT and "never expanded" in result.detail
        assert SVGNormalizer(Settings()).compare_files(BILLION_LAUGHS.encode(), BILLION_LAUGHS.encode()).status == EQUAL
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2 and peak < 20 * 2**20  # 10⁹ "lol"s would be 3 GB
    started = time.monotonic()
    nested = '<svg xmlns="http://www.w3.org/2000/svg">' + "<g>" * 50_000 + "</g>" * 50_000 + "</svg>"
    assert SVGNormalizer(Settings()).compare(nested, nested.replace("<g>", "<g id='x'>", 1)).status == DIFFERENT
    assert time.monotonic() - started < 15
    assert parse_svg_expat(_mpl_svg()).tag == "{http://www.w3.org/2000/svg}svg"  # a real figure parses both ways


def _tqdm_text(n: int, *, pause: float, every: int, **kwargs) -> str:
    import time

    from tqdm import tqdm

    out = io.StringIO()
    for i in tqdm(range(n), file=out, mininterval=0, miniters=every, **kwargs):
        time.sleep(pause)
    return out.getvalue()


def test_tqdm_bars_keep_their_final_state_with_clocks_and_rate_masked():
    from scidex_nbcapsule.verify.normalizers import ProgressBarPass

    fast = _tqdm_text(12, pause=0, every=1)
    slow = _tqdm_text(12, pause=0.02, every=5)
    assert fast.count("\r") != slow.count("\r") and "it/s]" in fast
    text = TextNormalizer(Settings())
    assert text.compare(fast, slow).status == EQUAL
    assert TextNormalizer(Settings(), passes=[]).compare(fast, slow).status == DIFFERENT  # the pass is what helps
    assert ProgressBarPass(Settings()).compare(fast, slow).status == EQUAL
    fewer = text.compare(fast, _tqdm_text(11, pause=0, every=1))
    assert fewer.status == DIFFERENT and "11/11" in fewer.diff  # the count and percentage still count
    assert text.compare(_tqdm_text(3, pause=0, every=1, desc="fit", postfix={"loss": 0.5}),
                        _tqdm_text(3, pause=0.01, every=2, desc="fit", postfix={"loss": 0.75})).status == DIFFERENT
    unknown = text.compare("\r0it [00:00, ?it/s]\r120it [00:02, 59.8it/s]\n", "\r120it [00:01, 1.20s/it]\n")
    assert unknown.status == EQUAL
    assert text.compare("done\rprogress 3\n", "done\rprogress 4\n").status == DIFFERENT  # not a bar: untouched


def test_printed_sets_compare_in_any_order_and_dicts_within_tolerance():
    from scidex_nbcapsule.verify.normalizers import SetReprPass, canonical_reprs

    text = TextNormalizer(Settings())
    assert text.compare("tags {'b', 'zz', 'a'}\n", "tags {'zz', 'a', 'b'}\n").status == EQUAL
    assert text.compare("frozenset({'x', 'y'})", "frozenset({'y', 'x'})").status == EQUAL
    assert text.compare("{'k': {3, 1, 2}, 'n': [{'q', 'p'}]}", "{'k': {1, 2, 3}, 'n': [{'p', 'q'}]}").status == EQUAL
    assert text.compare("{'a', 'b'}", "{'a', 'c'}").status == DIFFERENT
    assert TextNormalizer(Settings(), passes=[]).compare("{'b', 'a'}", "{'a', 'b'}").status == DIFFERENT
    reordered = text.compare("{'b': 1, 'a': 2}\n", "{'a': 2, 'b': 1}\n")
    assert reordered.status == WITHIN_TOLERANCE and reordered.detail.startswith("dict order differs")
    assert text.compare("{'b': 1, 'a': 2}", "{'a': 1, 'b': 2}").status == DIFFERENT  # same keys, other values
    assert SetReprPass(Settings()).relax("{'b', 'a'}") == "{'b', 'a'}"  # the second chance reorders dicts only
    noisy = SetReprPass(Settings()).compare("{0.1000000000001, 'a'}", "{'a', 0.1000000000002}")
    assert noisy.status == WITHIN_TOLERANCE
    # nothing is evaluated: names, calls and unbalanced braces are left as they are
    for odd in ("{__import__('os').system('echo hi')}", "{x, y}", "} {{ {1, 2", "\\frac{1}{2}", "{" * 5000):
        assert canonical_reprs(odd) == odd
    assert canonical_reprs("{ oops {3, 1} }") == "{ oops {1, 3} }"
    assert canonical_reprs('{\n "b": {2, 1},\n "a": 1\n}', dicts=True) == '{\n "a": 1,\n "b": {1, 2}\n}'


def _rule_from(hint: str) -> str:
    assert "sanitize = [" in hint, hint
    return hint[hint.index("sanitize = ["):]


def test_hints_name_a_sanitize_rule_that_was_checked_to_work(tmp_path):
    from scidex_nbcapsule.verify.compare import compare_cell
    from scidex_nbcapsule.verify.normalizers.hints import suggest

    normalizers = load_normalizers()
    text = next(n for n in normalizers if n.name == "text")
    cases = {
        "a compact timestamp": ("saved run_20261201-134514.csv\n", "saved run_20261201-134519.csv\n"),
        "a Unix timestamp": ("started 1764596714.123456\n", "started 1765596790.5521\n"),  # days apart
        "a date and a UUID": ("id 3f2a8e4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b on 2024-05-01\n",
                              "id 9e2a8e4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b on 2024-05-02\n"),
        "an elapsed time": ("fit took 13.2 ms\n", "fit took 250 ms\n"),
    }
    for what, (recorded, now) in cases.items():
        assert text.compare(recorded, now).status == DIFFERENT
        hint = suggest(recorded, now, text, normalizers, mime="stdout")
        assert f"differ only in {what}" in hint and "[tool.nbcapsule.verify]" in hint, hint
        (tmp_path / "pyproject.toml").write_text(f"[tool.nbcapsule.verify]\n{_rule_from(hint)}\n")
        pasted = load_settings(None, None, project_dir=tmp_path)  # the hint, pasted as it is, works
        assert TextNormalizer(pasted).compare(recorded, now).status != DIFFERENT, what
    assert suggest("hello\n", "goodbye\n", text, normalizers) == ""
    assert suggest("same\n", "same\n", text, normalizers) == ""
    seed = suggest("draw 0.8444218515250481\n", "draw 0.7579544029403025\n", text, normalizers)
    assert "random seed" in seed and "random.seed(0)" in seed
    noise = suggest("mean 0.500001\n", "mean 0.500002\n", text, normalizers)
    assert "rtol = 2e-6" in noise
    assert TextNormalizer(Settings(rtol=2e-6)).compare("mean 0.500001\n", "mean 0.500002\n").status != DIFFERENT
    # through compare_cell, as verify fills them in
    cell = lambda out: nbformat.v4.new_code_cell("print(stamp)", outputs=[  # noqa: E731
        nbformat.v4.new_output("stream", name="stdout", text=out)])
    [difference] = compare_cell(1, cell("saved run_20261201-134514.csv\n"), cell("saved run_20261201-134530.csv\n"),
                                normalizers)
    assert difference.status == DIFFERENT and "compact timestamp" in difference.hint
    assert difference.to_dict()["hint"] == difference.hint


def test_hints_name_a_normaliser_or_pass_that_was_not_used():
    from scidex_nbcapsule.verify.normalizers import SVGNormalizer
    from scidex_nbcapsule.verify.normalizers.hints import suggest

    normalizers = load_normalizers()
    first, second = _mpl_svg(), _mpl_svg()
    hint = suggest(first, second, TextNormalizer(Settings()), normalizers, path="fig.svg")
    assert "only in element ids and dates" in hint and "`svg`" in hint
    svg = SVGNormalizer(Settings())
    assert "the drawing itself changed" in suggest(first, _mpl_svg((1, 4, 10))[:-7] + b"<g/></svg>\n", svg)
    assert "only coordinates differ" in suggest(first, _mpl_svg((1, 4.5, 9)), svg)  # same axes, the line moved
    bare = TextNormalizer(Settings(), passes=[])
    assert "`set-repr`" in suggest("{'b', 'a'}\n", "{'a', 'b'}\n", bare)
    assert "`progress`" in suggest(_tqdm_text(5, pause=0, every=1), _tqdm_text(5, pause=0.01, every=3), bare)
    image = ImageNormalizer(Settings(image_threshold=0.0001))
    assert "image_threshold = " in suggest(_png((200, 220, 240)), _png((200, 220, 240), dot=(10, 10)), image)
    assert "size" in suggest(_png((1, 2, 3)), _png((1, 2, 3), size=(61, 40)), image)


def test_hints_are_shown_escaped_and_redacted_in_every_report_form():
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    hint = f"add sanitize = [{{regex = '<b>{token}', replace = 'X'}}]"
    report = VerificationReport(
        verdict="mismatch", crate="/c", started=utc_now(), finished=utc_now(), seconds=1.0,
        differences=[Difference("cell", "cell 2", DIFFERENT, "stdout", "text differs", "-a\n+b", hint=hint)])
    data = json.loads(report.to_json())
    assert data["differences"][0]["hint"].startswith("add sanitize = [{regex = '<b>") and token not in report.to_json()
    assert "    hint: add sanitize" in report.summary() and token not in report.summary()
    page = report.to_html()
    assert "<b>hint:</b> add sanitize = [{regex = &#x27;&lt;b&gt;" in page and token not in page
