"""The documentation: README.md is a short front door whose links reach every page of docs/,
every schedule key is in docs/loop.md, every table drawn from results is the record's (and an
edited figure is caught), and every package says what it is and what it may import."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

from conftest import ROOT

from pytrim.experiments.record import BLOCK, load, render, stale_blocks
from pytrim.loop.schedule import CHECKS, TOP_KEYS

LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_readme_is_a_front_door_that_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = {target for target, _ in LINK.findall(readme)}
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, f"pages README.md does not link: {sorted(pages - linked)}"
    assert "make test" in readme  # the test command .ci/run calls


def test_links_between_pages_and_their_anchors_resolve() -> None:
    def anchors(path: Path) -> set[str]:
        heads = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}

    broken = []
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target, anchor in LINK.findall(page.read_text()):
            if target.startswith("http"):
                continue
            path = (page.parent / target).resolve()
            if not path.exists() or (anchor and path.suffix == ".md" and anchor[1:] not in anchors(path)):
                broken.append(f"{page.relative_to(ROOT)}: {target}{anchor}")
    assert not broken, broken


def test_every_schedule_key_is_documented() -> None:
    text = (ROOT / "docs/loop.md").read_text()
    missing = [key for key in [*TOP_KEYS, *CHECKS] if f"| `{key}` |" not in text]
    assert not missing, f"schedule keys without a row in docs/loop.md: {missing}"


def test_every_table_is_the_records_and_an_edited_figure_is_caught(tmp_path: Path) -> None:
    assert load(ROOT), "results/ holds no record"
    assert stale_blocks(ROOT) == [], "tables differ from results/: run `make record`"
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copytree(ROOT / "results", copy / "results")
    shutil.copy(ROOT / "README.md", copy / "README.md")
    page = copy / "docs/results.md"
    text = page.read_text()
    filled = [m for m in BLOCK.finditer(text) if re.search(r"\d+\.\d+", m.group(3))]
    assert filled, "no recorded table with figures on docs/results.md"
    block = filled[0]
    figure = re.search(r"\d+\.\d+", block.group(3))
    edited = block.start(3) + figure.start()
    digit = text[edited]
    page.write_text(text[:edited] + ("1" if digit != "1" else "2") + text[edited + 1 :])
    assert stale_blocks(copy) == [f"docs/results.md: {block.group(2)}"]
    assert render(copy) == [page] and stale_blocks(copy) == []
    assert page.read_text() == text


def test_every_package_says_what_it_is_and_its_layer() -> None:
    for init in sorted((ROOT / "pytrim").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert not re.match(r"^(TODO|TBD)\b", doc) and len(doc) > 80, f"{init}: a placeholder docstring"
        assert "Layer:" in doc, f"{init}: the docstring does not say which layer the package is"
