"""The README and the docs/ pages: short README, no dead relative link, a Layout that cannot go stale,
no repository path named in docs or code that no longer exists.

- README.md stays a first screen: at most ``README_MAX_BYTES``; measurements live in docs/.
- Every relative link (``[text](path)``, ``![alt](path)``, optionally ``path#anchor``) in README.md
  and docs/*.md names a file or folder that exists, and an anchor names a heading of the target
  page (GitHub's heading ids). Links inside code (fenced blocks, inline code) are not links.
- README's Layout section lists every subpackage and top-level module of g2rpo_verl with a
  one-line role, names only paths and modules that exist, and lists the package's parts in an
  order in which each part imports only parts listed above it (the import graph of
  tests/test_layers.py: every import, function-level ones included).
"""

import re
import unicodedata
from pathlib import Path

import pytest
from test_layers import collapse, import_graph

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_MAX_BYTES = 12_000
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
#: Unicode categories GitHub keeps in a heading id: letters, marks, numbers, connector punctuation (``_``).
_ID_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc"}
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def _without_code(text: str) -> str:
    """``text`` with fenced code blocks and inline code spans removed (indented blocks hold no ``](``)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def relative_links(text: str) -> list[str]:
    """Every link target of a markdown text that is not a URL (``http:``, ``mailto:``, ...)."""
    return [t for t in _LINK.findall(_without_code(text)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def heading_ids(text: str) -> set[str]:
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces -> ``-``, repeats ``-1``, ..."""
    ids: set[str] = set()
    for title in _HEADING.findall(_FENCE.sub("", text)):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading: its text
        keep = (c for c in title.lower() if c in " -" or unicodedata.category(c) in _ID_CATEGORIES)
        slug, n = "".join(keep).replace(" ", "-"), 0
        while (candidate := slug if n == 0 else f"{slug}-{n}") in ids:
            n += 1
        ids.add(candidate)
    return ids


def broken_links(page: Path) -> list[str]:
    """``target: why`` for each relative link of ``page`` that leads nowhere."""
    bad = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in heading_ids(dest.read_text()):
            bad.append(f"{target}: no heading with id {anchor!r} in {dest.name}")
    return bad


def test_the_link_checker_sees_dead_links_and_missing_anchors_but_not_code(tmp_path):
    heading = "## Config keys (`g2rpo.length`)\n\n"
    (tmp_path / "other.md").write_text("# Other page\n\n" + heading + heading)
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#config-keys-g2rpolength) [ok](other.md#config-keys-g2rpolength-1)\n"
        "[web](https://example.com/x.md) ![img](missing.png) [gone](nowhere.md)\n"
        "[bad anchor](other.md#no-such-heading) `[in code](code.md)`\n\n```text\n[fenced](fenced.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.png: no such file",
        "nowhere.md: no such file",
        "other.md#no-such-heading: no heading with id 'no-such-heading' in other.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_an_existing_file_and_heading(page):
    assert broken_links(page) == []


def test_the_readme_is_a_first_screen_not_a_lab_notebook():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES}): move the detail to docs/"
    index = README.read_text().split("## Where to read more", 1)[1].split("\n## ", 1)[0]
    listed = {Path(t) for t in relative_links(index)}
    missing = [p.name for p in PAGES[1:] if p.relative_to(REPO) not in listed]
    assert not missing, f"docs pages not in README's 'Where to read more' index: {missing}"


def layout_entries(readme: str) -> list[tuple[str, str]]:
    """``(path, role)`` per entry of README's Layout block; an indented line continues the role above it."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```text\n(.*?)^```", section, re.S | re.M)
    assert block, "README's Layout section holds its listing in a ```text block"
    entries: list[list[str]] = []
    for line in block.group(1).splitlines():
        if line[:1].isspace():
            assert entries, f"a continuation line before any entry: {line!r}"
            entries[-1][1] += " " + line.strip()
        elif line.strip():
            path, _, role = line.partition(" ")
            entries.append([path, role.strip()])
    return [(p, r) for p, r in entries]


def _package_parts() -> dict[str, str]:
    """README path -> dotted name, for every subpackage and top-level module of g2rpo_verl."""
    root = REPO / "g2rpo_verl"
    packages = [d for d in root.iterdir() if (d / "__init__.py").exists()]
    parts = {f"g2rpo_verl/{d.name}/": f"g2rpo_verl.{d.name}" for d in packages}
    parts.update({f"g2rpo_verl/{m.name}": f"g2rpo_verl.{m.stem}" for m in root.glob("*.py") if m.name != "__init__.py"})
    parts["g2rpo_verl/__init__.py"] = "g2rpo_verl"
    return parts


def test_the_layout_names_only_paths_and_modules_that_exist():
    entries = layout_entries(README.read_text())
    assert len(entries) > 10
    for path, role in entries:
        assert (REPO / path).exists(), f"Layout lists {path}, which does not exist"
        assert role, f"Layout gives {path} no role"
        if path.endswith("/"):
            for module in re.findall(r"\b([a-z_][a-z0-9_]*\.py)\b", role):
                assert (REPO / path / module).exists(), f"Layout names {module} under {path}: no such file"


def test_the_layout_lists_every_part_of_the_package():
    listed = {path for path, _ in layout_entries(README.read_text())}
    missing = sorted(set(_package_parts()) - listed)
    assert not missing, f"parts of g2rpo_verl missing from README's Layout section: {missing}"


def test_the_layout_lists_the_parts_in_layer_order():
    """Each part imports only the parts listed above it, so the listing reads bottom layer first."""
    parts = _package_parts()
    order = [parts[path] for path, _ in layout_entries(README.read_text()) if path in parts]
    graph = collapse(import_graph(), depth=1)
    upward = [
        f"{src} (listed {i + 1}.) imports {dst} (listed {order.index(dst) + 1}.)"
        for i, src in enumerate(order)
        for dst in sorted(graph.get(src, ()))
        if dst in order and order.index(dst) > i
    ]
    assert not upward, "README's Layout is not in layer order:\n" + "\n".join(upward)


#: a path into the repository written in prose or a docstring: ``tests/…py``, ``scripts/…``, ``configs/…``
_REPO_PATH = re.compile(r"(?<![\w/.])((?:tests|scripts|configs)/[\w./-]*\w\.(?:py|sh|yaml|md))\b")
_NAMING_FILES = [
    *PAGES,
    *sorted((REPO / "g2rpo_verl").rglob("*.py")),
    *sorted((REPO / "scripts").glob("*")),
    *sorted(p for p in (REPO / "tests").rglob("*.py") if p != Path(__file__).resolve()),  # not its own example
]


def stale_paths(text: str) -> list[str]:
    """The repository paths ``text`` names that do not exist (relative to the repository root)."""
    return sorted({p for p in _REPO_PATH.findall(text) if not (REPO / p).exists()})


def test_the_path_checker_sees_a_moved_file():
    assert stale_paths("see tests/test_docs.py and `tests/test_moved_away.py`, configs/demo_cpu.yaml") == [
        "tests/test_moved_away.py"
    ]


@pytest.mark.parametrize("source", _NAMING_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_named_in_docs_and_code_exists(source):
    assert stale_paths(source.read_text(errors="replace")) == []
