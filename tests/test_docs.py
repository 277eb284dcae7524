"""The README and docs/ stay true: their links resolve, and every shell block that runs offline (on the zoo) runs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The page without its fenced blocks (links and headings inside code are not links and headings)."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", prose(page.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(prose(page.read_text()))]


def shell_blocks(page: Path) -> list[str]:
    """The page's ``sh`` blocks that run offline: those on the zoo, with no `make` (CI runs those itself)."""
    blocks = [body for lang, body in FENCE.findall(page.read_text()) if lang == "sh"]
    return [b for b in blocks if re.search(r"--pool zoo|examples/zoo", b) and not re.search(r"^make ", b, re.M)]


def commands(block: str) -> list[list[str]]:
    """The block's commands (comments dropped, backslash continuations joined), split as a shell would."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.split("#")[0].strip()]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    for link in links(page):
        if re.match(r"[a-z]+://", link) or link.startswith("mailto:"):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} does not exist"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: {link}: an anchor in a file that is not markdown"
            assert anchor in anchors(target), f"{page.name}: {link}: no such heading in {target.name}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in links(ROOT / "README.md")}
    for page in PAGES[1:]:
        assert page.resolve() in linked, f"README.md does not link {page.relative_to(ROOT)}"


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_pages_have_zoo_blocks_to_run():
    ran = {page.name for page in PAGES if shell_blocks(page)}
    assert {"README.md", "cli.md", "recipes.md", "methods.md"} <= ran


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if shell_blocks(p)], ids=lambda p: p.name)
def test_shell_blocks_run(page, tmp_path):
    """Each block's commands run in order in a fresh directory (beside a copy of examples/), as a reader would."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bin_dir = Path(sys.executable).parent
    for block in shell_blocks(page):
        for argv in commands(block):
            assert argv[0] in {"merge-rs", "torchrun"}, f"{page.name}: unexpected command {argv[0]}"
            argv[0] = str(bin_dir / argv[0])
            result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL)
            assert result.returncode == 0, f"{page.name}: {shlex.join(argv)} failed:\n{result.stderr[-2000:]}"


def test_shell_completion_completes_commands_methods_and_options():
    """The completion docs/cli.md gives: click's `_MERGE_RS_COMPLETE`, for the installed `merge-rs` script."""
    script = Path(sys.executable).parent / "merge-rs"

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        env = {**os.environ, "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1),
               "_MERGE_RS_COMPLETE": "bash_complete"}
        out = subprocess.run([script], env=env, capture_output=True, text=True, check=True).stdout
        return [item.split(",", 1)[1] for item in out.splitlines()]

    assert "merge" in complete("merge-rs mer")
    assert complete("merge-rs merge ti") == ["ties"]
    assert {"--threshold", "--threads"} <= set(complete("merge-rs merge ties --thr"))
    assert "_merge_rs_completion" in subprocess.run([script], env={**os.environ, "_MERGE_RS_COMPLETE": "bash_source"},
                                                    capture_output=True, text=True, check=True).stdout


def test_the_readme_mergekit_table_names_tests_that_exist():
    """Each row of the README's mergekit table names the test that covers it: that test must exist."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## mergekit configs", 1)[1].split("\n## ", 1)[0]
    default = re.search(r"tested by \(`([^`]+)`", section)
    assert default, "the table names its default test file"
    named = re.findall(r"`((?:tests/[\w.]+::)?test_\w+)`", section)
    assert len(named) >= 8, named
    for entry in named:
        file, _, name = entry.rpartition("::")
        source = (ROOT / (file or default.group(1))).read_text()
        assert f"def {name}(" in source, f"{entry} is not a test"
