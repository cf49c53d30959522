"""The README and docs/: every relative link resolves, to a file and, with ``#anchor``, to a heading.

Links are checked as GitHub renders them: a path relative to the page, an anchor made from a
heading by lower-casing it, dropping punctuation other than ``-`` and ``_``, and turning spaces
into ``-``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "data" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found = set()
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading '#{anchor}' in {file.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nothing) [gone](missing.md)\n```\n[skip](x.md)\n```\n")
    assert links(page) == ["#title", "#nothing", "missing.md"]
    assert anchors(page) == {"title"}


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move detail into docs/"


def figure_commands(text: str) -> list[list[str]]:
    """The command column of the table under "## The figures" in docs/measurements.md: the commands
    that re-measure each figure."""
    section = text.split("\n## The figures\n", 1)[1].split("\n## ", 1)[0]
    cells = [line.split(" | ") for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("| figure")]
    return [re.findall(r"`([^`]+)`", row[2]) for row in cells if len(row) > 4]


def test_every_measured_figure_names_a_command_that_still_exists():
    """A figure is only checkable while its command runs: the files it names exist, and each option
    it passes is still defined in the script it is passed to."""
    text = (REPO / "docs" / "measurements.md").read_text(encoding="utf-8")
    commands = figure_commands(text)
    assert len(commands) >= 10 and all(commands), "every row of docs/measurements.md names its command"
    assert "FILL_" not in text, "docs/measurements.md still has a placeholder"
    problems = []
    for command in (c for cell in commands for c in cell):
        paths = re.findall(r"(?:benchmarks|scripts|configs|tests)/[\w./{},-]+", command)
        for path in paths:
            stem, _, rest = path.partition("{")
            names = [stem + choice + rest.split("}", 1)[1] for choice in rest.split("}", 1)[0].split(",")] if rest else [path]
            problems += [f"{command}: no file {name}" for name in names if not (REPO / name).exists()]
        program = re.match(r"^(?:\S*python3?\s+|bash\s+)?((?:benchmarks|scripts)/\S+\.(?:py|sh))\s", command + " ")
        for option in re.findall(r"(?<=\s)--[a-z][\w-]*", command) if program else []:
            if option not in (REPO / program.group(1)).read_text(encoding="utf-8"):
                problems.append(f"{command}: {program.group(1)} defines no {option}")
    assert not problems, "; ".join(problems)
