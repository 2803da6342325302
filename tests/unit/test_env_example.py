"""`.env.example` lists every variable the settings read, so it stays true to the code."""

from __future__ import annotations

import re

from tests.support import ROOT

_READ = re.compile(
    r"""(?:env_(?:str|optional|bool|int|float|list|networks|decimal|json)|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']"""
)
_TEST_ONLY = {"TEST_DATABASE_NAME"}


def variables_read_by(paths: list) -> set[str]:
    names: set[str] = set()
    for path in paths:
        names |= set(_READ.findall(path.read_text()))
    return names


def test_every_setting_read_from_the_environment_is_documented():
    sources = [*ROOT.joinpath("config").rglob("*.py"), *ROOT.joinpath("questions").rglob("*.py")]
    read = variables_read_by(sources) - _TEST_ONLY
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert read, "the pattern found no settings at all"
    assert read - documented == set()
