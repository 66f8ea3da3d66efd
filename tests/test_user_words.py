"""What users read speaks their words: no design shorthand, and every docs page reachable.

The design document numbers its rules (R1-R27, S1-S6) and calls the original system's pages
"the seeds"; code comments may point engineers there, but the docs, the README and the
command line's help say what is meant in plain words.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from appregistry.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
# "the seeds", "seeds'", and rule numbers such as R25 or S2 (not RT1, S256 or RFC 6750).
INTERNAL = re.compile(r"(?i:\bseeds?\b)|\bR\d+\b|\bS\d\b")


def _internal_words(text: str) -> list[str]:
    return INTERNAL.findall(text)


def _helps(parser: argparse.ArgumentParser) -> list[str]:
    """The help of ``parser`` and of every subcommand below it."""
    found = [parser.format_help()]
    for action in parser._actions:  # argparse has no public way to walk its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _helps(child)
    return found


class TestPlainWords:
    """Docs, README and CLI help carry no rule numbers and no "seeds"."""

    @pytest.mark.parametrize("page", [*DOCS, ROOT / "README.md"], ids=lambda p: p.name)
    def test_pages(self, page: Path) -> None:
        assert [] == _internal_words(page.read_text(encoding="utf-8"))

    def test_cli_help(self) -> None:
        helps = _helps(build_parser())
        assert len(helps) > 10  # every subcommand was reached
        assert [] == [word for text in helps for word in _internal_words(text)]


class TestReadme:
    """The README links every page of docs/, so none is reachable only from the built site."""

    def test_links_every_page(self) -> None:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
        assert [] == [f"docs/{p.name}" for p in DOCS if f"docs/{p.name}" not in linked]
