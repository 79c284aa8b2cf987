"""The documentation a user's clone holds: a README read in minutes, links that resolve, no citation
of material outside the repository, and the README's test command being the one CI runs."""
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: the README is the newcomer's five-minute page; the details live in docs/
README_MAX_LINES = 250

#: what a user reads or runs: every text file below these folders, and the top-level files below
PRODUCT_DIRS = ("docs", "configs", "scripts", "results", "bench", "frn", "utils", "data", "network",
                "methods", "notebooks")
PRODUCT_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".yml", ".txt", ".ipynb", ".c", ".toml"}
SKIPPED_PARTS = {"__pycache__", "runs"}  # byte code; results/runs/ holds local logs, not committed

#: citations of material kept outside the repository (the project's specifications and shared
#: folders), which a clone does not have: the product states the fact itself instead
OUTSIDE = re.compile(
    r"specs/|\.\./shared|shared/(?:datasets|fixtures|seeds|bench|specs)"
    r"|(?:\bspec|\.md)\s*`?\s*§|\bspec\s+`?\w+\.md|\bcli\.md\b|seed README",
    re.IGNORECASE)

#: [text](target) of Markdown; images too
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def product_files() -> List[Path]:
    """Every product text file: the top-level files and those below PRODUCT_DIRS."""
    files = [p for p in ROOT.iterdir() if p.is_file() and p.suffix in PRODUCT_SUFFIXES]
    for folder in PRODUCT_DIRS:
        files += [p for p in sorted((ROOT / folder).rglob("*"))
                  if p.is_file() and p.suffix in PRODUCT_SUFFIXES and not SKIPPED_PARTS & set(p.parts)]
    return files


def markdown_files() -> List[Path]:
    """The Markdown a user reads: README.md, docs/ and the results' README."""
    return [README, *sorted((ROOT / "docs").rglob("*.md")), ROOT / "results" / "README.md"]


def relative_links(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, target) of every link in `path` to a file of the repository (no URL, no
    in-page anchor); fenced code blocks are skipped, as Markdown does not render links there."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
                continue
            yield number, target.split("#", 1)[0]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move details to docs/")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    missing = [f"{path.relative_to(ROOT)}:{n}: {target}" for n, target in relative_links(path)
               if not (path.parent / target).exists()]
    assert not missing, "links to files the repository does not have:\n" + "\n".join(missing)


def test_link_checker_sees_links(tmp_path):
    """The checker finds a missing target, and skips URLs, anchors and code blocks."""
    page = tmp_path / "page.md"
    page.write_text("[a](gone.md) [b](https://x.org/y.md) [c](#top) [d](page.md#x)\n"
                    "```\n[e](also_gone.md)\n```\n", encoding="utf-8")
    assert list(relative_links(page)) == [(1, "gone.md"), (1, "page.md")]


def test_product_cites_nothing_outside_the_repository():
    hits = []
    for path in product_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, ("product text cites material a clone does not have; state the fact instead:\n"
                      + "\n".join(hits))


@pytest.mark.parametrize("text", ["see ../shared/fixtures", "specs/frn.md", "(spec §3.3)", "frn.md §6",
                                  "spec `deepemd.md`", "shared/datasets/cub50", "the seed README's"])
def test_outside_pattern_catches(text):
    assert OUTSIDE.search(text)


@pytest.mark.parametrize("text", ["input_spec=spec", "importlib.util.find_spec", "the seed grid",
                                  "docs/proof.md", "shared memory", "respects the order"])
def test_outside_pattern_spares(text):
    assert not OUTSIDE.search(text)


def readme_test_commands() -> List[str]:
    """The command lines of the fenced block under the README's "## Test" heading."""
    section = README.read_text(encoding="utf-8").split("\n## Test\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    """.ci/run installs what the README's test section installs and runs its test command as written."""
    commands = readme_test_commands()
    assert commands, "README.md: no command under ## Test"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    for command in commands:
        install = re.fullmatch(r"pip install -r (\S+)", command)
        if install:
            wanted = re.compile(r"(python -m )?pip install (--\S+ )*-r " + re.escape(install.group(1)) + "$")
            assert any(wanted.match(line) for line in ci), f".ci/run does not install {install.group(1)}"
        else:
            as_written = re.compile(re.escape(command) + r"(\s*(\|\||&&|;).*)?")  # a status check may follow
            assert any(as_written.fullmatch(line) for line in ci), (
                f".ci/run does not run the README's command {command!r} as written")
