"""The repository explains itself: the protocol decisions the code cites exist in docs/protocol.md, nothing
cites a file outside the repository, every relative link of the README and docs/ resolves, every config key is
documented, and the README stays short enough to read to the end."""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
# "protocol decision 4", "protocol decisions 4–8", "protocol decisions 7, 8 and 10"
CITATION = re.compile(r"protocol\s+decisions?\s+(\d+(?:\s*(?:[–-]|,|and|or)\s*\d+)*)", re.I)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
OUTSIDE = "GUI" + "DE"   # the project's former private notes, never part of the repository (spelt so this file passes)


def repository_files() -> list[Path]:
    """The files git would commit: tracked ones and new ones it does not ignore."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")
    return [REPO / f for f in out.split("\0") if f and (REPO / f).is_file()]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # a binary file


def decisions() -> list[int]:
    """The numbers of docs/protocol.md's top-level list, in order."""
    return [int(n) for n in re.findall(r"^(\d+)\. ", (REPO / "docs" / "protocol.md").read_text(), re.M)]


def cited(text: str) -> set[int]:
    out = set()
    for m in CITATION.finditer(text):
        spec = m.group(1)
        for a, b in re.findall(r"(\d+)\s*[–-]\s*(\d+)", spec):
            out |= set(range(int(a), int(b) + 1))
        out |= {int(n) for n in re.findall(r"\d+", spec)}
    return out


def test_citation_pattern_reads_each_form():
    assert cited("see protocol decision 4 (docs/protocol.md)") == {4}
    assert cited("Section 5; protocol decisions 4–8 in docs/protocol.md") == {4, 5, 6, 7, 8}
    assert cited("(protocol decisions 7, 8 and 10)") == {7, 8, 10}
    assert cited("Protocol decision 12, docs/protocol.md; protocol decision " + "99") == {12, 99}
    assert cited("a decision 4 that is not a protocol citation") == set()


def test_protocol_decisions_are_numbered_one_list():
    numbers = decisions()
    assert numbers[:13] == list(range(1, 14)), "decisions 1–13 are fixed: numbered 1, 2, … in one list"
    assert numbers == list(range(1, len(numbers) + 1)), "a new decision is appended with the next number"


def test_no_file_cites_outside_notes_or_a_missing_decision():
    known, bad = set(decisions()), []
    for path in repository_files():
        text = text_of(path)
        if text is None:
            continue
        rel = path.relative_to(REPO)
        if OUTSIDE in text:
            bad.append(f"{rel}: cites {OUTSIDE}, which is not in the repository")
        missing = cited(text) - known
        if missing:
            bad.append(f"{rel}: cites protocol decision(s) {sorted(missing)}, not in docs/protocol.md")
    assert not bad, "\n".join(bad)


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: {dest.name} has no heading #{anchor}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


CODE_PATH = re.compile(r"`((?:asym|analysis|launcher|conf|sweeps|benchmarks|tests|hydra_plugins|\.ci)/[\w./-]*)`")
CODE_SYMBOLS = re.compile(r"`([\w/]+\.py)`\s*\(((?:`[\w.]+`(?:,\s*)?)+)\)")


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_code_the_docs_name_exists(page):
    """Every repository path a page names in backticks exists, and every name it gives in brackets after a module,
    as in `asym/models.py` (`build_network`), is defined in that module."""
    text, missing = page.read_text(), []
    for path in CODE_PATH.findall(text):
        if not (REPO / path.rstrip("/")).exists():
            missing.append(path)
    for path, names in CODE_SYMBOLS.findall(text):
        source = (REPO / path).read_text() if (REPO / path).is_file() else ""
        for name in re.findall(r"`([\w.]+)`", names):
            for part in name.split("."):
                if not re.search(rf"^\s*(?:def|class)\s+{part}\b|^{part}\b.*=", source, re.M):
                    missing.append(f"{path}: {part}")
    assert not missing, f"{page.name} names what is not there: {missing}"


def test_docs_pages_are_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    assert DOCS, "docs/ has no pages"
    for page in DOCS:
        assert f"(docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def leaf_keys(cls, prefix: str = "") -> list[str]:
    """Every leaf key of a structured config, dotted (``train.bn_alpha``)."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += leaf_keys(type(default), f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_every_config_key_is_documented():
    from asym.config import Config
    keys = leaf_keys(Config)
    assert "train.bn_alpha" in keys and "tracking.uri" in keys and "model" in keys
    page = (REPO / "docs" / "configuration.md").read_text()
    missing = [k for k in keys if f"`{k}`" not in page]
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_readme_reads_to_the_end():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move details to a docs/ page"
