"""The README tells a new user the truth: notebooks that exist, tables where the registry puts them,
every command, the label conventions and the Python version the package accepts."""

from __future__ import annotations

import re

import pytest

from cmrkit.cli import SUBCOMMANDS
from cmrkit.registry import NOTEBOOKS, REGISTRY


@pytest.fixture(scope="module")
def readme(repo_root) -> str:
    return (repo_root / "README.md").read_text()


def _notebook_rows(readme: str) -> dict[str, list[str]]:
    rows = {}
    for line in readme.splitlines():
        m = re.match(r"\|\s*`(\d\d_[a-z0-9_]+)`\s*\|(.*)", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).strip().strip("|").split("|")]
    return rows


def _expand(kind: str, text: str) -> set[str]:
    """``Tables 4.1–4.4`` -> {table_4_1 .. table_4_4}; ``Fig 5.2`` -> {fig_5_2}."""
    ids = set()
    prefix = "table" if kind.lower().startswith("table") else "fig"
    for a, b, c in re.findall(r"(\d+)\.(\d+)(?:\s*[–-]\s*(?:\d+\.)?(\d+))?", text):
        last = int(c) if c else int(b)
        ids |= {f"{prefix}_{a}_{i}" for i in range(int(b), last + 1)}
    return ids


def test_notebook_table_matches_the_notebooks_and_the_registry(readme, repo_root):
    assert _expand("Tables", "4.1–4.4") == {"table_4_1", "table_4_2", "table_4_3", "table_4_4"}
    assert _expand("Fig", "5.2") == {"fig_5_2"}
    rows = _notebook_rows(readme)
    assert set(rows) == set(NOTEBOOKS), "the README's notebook table lists other notebooks than the registry"
    owner = {a.id: a.notebook for a in REGISTRY}
    for stem, cells in rows.items():
        written = (repo_root / "notebooks" / f"{stem}.ipynb").is_file()
        status = cells[-1]
        assert (status == "not yet") == (not written), f"{stem}: status {status!r} but written={written}"
        text = " ".join(cells)
        mentioned = set()
        for kind, span in re.findall(r"(Tables?|Figs?\.?)\s+([\d.,\s–-]+\d)", text):
            mentioned |= _expand(kind, span)
        for art in sorted(mentioned):
            assert owner.get(art) == stem, f"README puts {art} in {stem}; cmrkit/registry.py says {owner.get(art)}"


def test_every_command_and_option_a_user_needs_is_shown(readme):
    for name in SUBCOMMANDS:
        assert f"cmrkit {name} " in readme, f"`cmrkit {name}` is missing from the README's command list"
    assert "--labels ukbb|acdc|mnms" in readme  # the choices of `cmrkit phenotypes --labels`
    assert "--export-ferdian" in readme


def test_python_version_matches_requires_python(readme, repo_root):
    req = re.search(r'requires-python\s*=\s*">=\s*(\d+\.\d+)"', (repo_root / "pyproject.toml").read_text())
    low = req.group(1)
    assert f"Python {low} or newer" in readme
