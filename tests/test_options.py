"""ExportOptions: one set of options, spelled the same by the CLI, the magic and a headless kernel."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from scidex_nbcapsule import api
from scidex_nbcapsule.errors import CapsuleError
from scidex_nbcapsule.magics import build_parser
from scidex_nbcapsule.options import ExportOptions, parse_size

from helpers import make_notebook


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    ExportOptions.add_arguments(parser)
    return parser


paths = st.lists(st.text(alphabet="abc/._- é", min_size=1, max_size=8).filter(lambda s: not s.startswith("-")),
                 max_size=3)
words = st.none() | st.text(alphabet="abc XYZ-é:", min_size=1, max_size=12).filter(lambda s: not s.startswith("-"))


@given(inputs=paths, outputs=paths, exclude=paths, authors=paths, title=words, license=words,
       fmt=st.sampled_from(["folder", "zip", "eln"]), bagit=st.booleans(), external=st.booleans(),
       link=st.none() | st.integers(min_value=0, max_value=1 << 40))
def test_argv_round_trips_through_the_parser(inputs, outputs, exclude, authors, title, license, fmt, bagit,
                                             external, link):
    options = ExportOptions(inputs=inputs, outputs=outputs, exclude=exclude, authors=authors, title=title,
                            license=license, fmt=fmt, bagit=bagit, include_external=external, link_large=link)
    again = ExportOptions.from_namespace(_parser().parse_args(options.to_argv()))
    assert again == options
    # %capsule export reads the same arguments: what a headless kernel is handed means the same there
    magic = build_parser().parse_args(["export", *options.to_argv()])
    assert ExportOptions.from_namespace(magic) == options


def test_cli_and_magic_offer_the_same_options(capsys):
    from scidex_nbcapsule.cli import build_parser as cli_parser

    def flags(parser: argparse.ArgumentParser) -> set[str]:
        return {flag for action in parser._actions for flag in action.option_strings}

    cli = cli_parser()._subparsers._group_actions[0].choices["export"]
    magic = build_parser()._subparsers._group_actions[0].choices["export"]
    expected = flags(_parser()) - {"-h", "--help"}
    assert expected <= flags(cli) and expected <= flags(magic)
    assert {"--input", "--zip", "--eln", "--link-large", "--project-root", "--bagit"} <= expected


def test_sizes():
    assert parse_size("4096") == 4096
    assert parse_size("500M") == 500 << 20
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("1.5k") == 1536
    for bad in ("abc", "-1", "", "5Q"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


def test_one_path_where_a_list_is_expected_is_one_path():
    assert ExportOptions(inputs="data.csv").inputs == ["data.csv"]
    assert ExportOptions(inputs=Path("d")).inputs == [Path("d")]
    assert ExportOptions(inputs=("a", "b")).inputs == ["a", "b"]


def test_unknown_format_is_refused():
    with pytest.raises(CapsuleError, match="unknown crate format"):
        ExportOptions(fmt="tar")


def test_absolute_resolves_every_path_and_nothing_else(tmp_path):
    options = ExportOptions(inputs=["a/b.csv"], outputs=["out"], allow_secrets=["k.ini"], dest="caps",
                            project_root=".", exclude=["*.tmp"], title="t")
    done = options.absolute(tmp_path)
    assert done.inputs == [str(tmp_path / "a" / "b.csv")] and done.outputs == [str(tmp_path / "out")]
    assert done.allow_secrets == [str(tmp_path / "k.ini")] and done.dest == str(tmp_path / "caps")
    assert done.project_root == str(tmp_path)
    assert done.exclude == ["*.tmp"] and done.title == "t"
    assert options.inputs == ["a/b.csv"]  # a copy: the original is unchanged


def test_from_dict_checks_names_and_types():
    assert ExportOptions.from_dict({"inputs": ["x"], "fmt": "zip", "link_large": 10}) == \
        ExportOptions(inputs=["x"], fmt="zip", link_large=10)
    for bad, match in (({"input": ["x"]}, "unknown export option"), ({"inputs": "x"}, "wrong type"),
                       ({"bagit": "yes"}, "wrong type"), ({"link_large": True}, "wrong type"),
                       ({"link_large": -1}, "wrong type"), ({"title": 3}, "wrong type")):
        with pytest.raises(CapsuleError, match=match):
            ExportOptions.from_dict(bad)
    options = ExportOptions(inputs=[Path("/x")], dest=Path("/d"))
    assert ExportOptions.from_dict(options.to_dict()) == ExportOptions(inputs=["/x"], dest="/d")


def test_export_takes_options_or_fields_but_not_unknown_names(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    (project / "data.csv").write_text("x\n")
    options = ExportOptions(inputs=[project / "data.csv"], dest=tmp_path / "one", license="MIT")
    first = api.export(nb, options, progress=False)
    assert "data.csv" in {f.path for f in first.manifest.files}
    second = api.export(nb, options, dest=tmp_path / "two", title="Changed", progress=False)
    assert second.path.parent == tmp_path / "two" and second.manifest.title == "Changed"
    assert options.dest == tmp_path / "one"  # fields given one by one change a copy
    with pytest.raises(TypeError, match="ExportOptions"):
        api.export(nb, options, inptus=["x"])
    with pytest.raises(TypeError, match="ExportOptions"):
        api.export(nb, {"inputs": []})


def test_bagit_is_one_option_for_every_shell(project, tmp_path):
    nb = make_notebook(project / "a.ipynb", "print(1)")
    capsule = api.export(nb, ExportOptions(dest=tmp_path / "c", license="MIT", bagit=True), progress=False)
    assert any(n.startswith("BagIt bag written to ") for n in capsule.notices)
    bag = Path(next(n for n in capsule.notices if n.startswith("BagIt")).removeprefix("BagIt bag written to "))
    assert (bag / "bagit.txt").is_file()
