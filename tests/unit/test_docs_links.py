"""Every relative link in the documentation resolves: to an existing file or
directory of the repository and, for `#anchor` links into Markdown files, to
a heading of that file as GitHub names it. Web and mail links are not checked.

The documents checked: README.md, docs/**/*.md, deploy/README.md,
tests/bench/README.md and clients/**/README.md (outside build and dependency
directories such as node_modules/ and target/).
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENT_PATTERNS = ("README.md", "docs/**/*.md", "deploy/README.md", "tests/bench/README.md", "clients/**/README.md")
# Directories of installed dependencies and build output: their READMEs are not ours.
SKIPPED_DIRECTORIES = {"node_modules", "target", "dist", "build", "__pycache__"}
UNCHECKED_SCHEMES = ("http://", "https://", "mailto:")

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
_ATX_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_HTML_ANCHOR = re.compile(r"""<a\s[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
# [text](target "title") and ![alt](target); the text may hold one level of brackets (a badge).
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text]
    r"\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+[\"'(].*?[\"')])?\s*\)"  # (target "title")
)
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML_TAG = re.compile(r"<[^>]+>")
_MARKDOWN_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def documents(root: Path = REPO) -> list[Path]:
    """The Markdown files whose links are checked."""
    found: set[Path] = set()
    for pattern in DOCUMENT_PATTERNS:
        for path in root.glob(pattern):
            parts = path.relative_to(root).parts[:-1]
            if path.is_file() and not any(part in SKIPPED_DIRECTORIES or part.startswith(".") for part in parts):
                found.add(path)
    return sorted(found)


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)[0] * len(opening.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        lines.append((number, line))
    return lines


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and link reference definition."""
    found: list[tuple[int, str]] = []
    for number, line in _prose_lines(text):
        line = _CODE_SPAN.sub(lambda span: " " * len(span.group(0)), line)
        definition = _REFERENCE_DEFINITION.match(line)
        targets = [definition.group(1)] if definition else [m.group(1) for m in _INLINE_LINK.finditer(line)]
        found.extend((number, target.strip("<>")) for target in targets)
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, punctuation
    dropped (letters, digits, '_' and '-' stay), each space a '-'."""
    pieces, end = [], 0
    for span in _CODE_SPAN.finditer(heading):  # code is shown as written; markup elsewhere is not text
        pieces.append(_rendered_markup(heading[end : span.start()]))
        pieces.append(span.group(0).strip("`"))
        end = span.end()
    text = "".join(pieces) + _rendered_markup(heading[end:])
    kept = "".join(
        c for c in text.lower() if c in " -_" or unicodedata.category(c)[0] in "LN" or unicodedata.category(c) == "Mn"
    )
    return kept.replace(" ", "-")


def _rendered_markup(text: str) -> str:
    return _HTML_TAG.sub("", _MARKDOWN_LINK_TEXT.sub(r"\1", text)).replace("*", "")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown file offers: its headings' slugs (repeats get
    -1, -2, ... as on GitHub) and explicit <a id/name="..."> anchors."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    previous = ""
    for _number, line in _prose_lines(text):
        heading = _ATX_HEADING.match(line)
        title = heading.group(1) if heading else None
        if (
            title is None
            and previous.strip()
            and not previous.lstrip().startswith(("|", "-", "*", ">"))
            and _SETEXT_UNDERLINE.match(line)
            and not _ATX_HEADING.match(previous)
        ):
            title = previous.strip()
        if title is not None:
            slug = github_slug(title)
            seen = counts.get(slug, 0)
            counts[slug] = seen + 1
            found.add(slug if seen == 0 else f"{slug}-{seen}")
        found.update(match.group(1) for match in _HTML_ANCHOR.finditer(line))
        previous = line
    return found


def broken_links(document: Path, root: Path = REPO) -> list[str]:
    """What is wrong with each relative link of `document`, one line per broken link."""
    text = document.read_text(encoding="utf-8")
    problems: list[str] = []
    for number, target in links(text):
        if not target or target.lower().startswith(UNCHECKED_SCHEMES):
            continue
        where = f"{document.relative_to(root)}:{number}: ({target})"
        path_part, _, anchor = target.partition("#")
        path_part = urllib.parse.unquote(path_part)
        if path_part.startswith("/"):
            resolved = (root / path_part.lstrip("/")).resolve()
        else:
            resolved = (document.parent / path_part).resolve() if path_part else document
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{where} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where} {resolved.relative_to(root.resolve())} does not exist")
        elif (
            anchor
            and resolved.suffix == ".md"
            and resolved.is_file()
            and urllib.parse.unquote(anchor) not in anchors(resolved.read_text(encoding="utf-8"))
        ):
            problems.append(f"{where} {resolved.relative_to(root.resolve())} has no heading #{anchor}")
    return problems


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_resolves(document):
    problems = broken_links(document)
    assert not problems, "broken links (fix the target, or the heading it points at):\n" + "\n".join(problems)


def test_the_documents_checked_include_the_readme_docs_and_every_client_readme():
    names = {str(path.relative_to(REPO)) for path in documents()}
    assert {"README.md", "deploy/README.md", "tests/bench/README.md", "clients/README.md"} <= names
    assert {f"clients/{lang}/README.md" for lang in ("go", "java", "python", "rust", "typescript")} <= names
    assert any(name.startswith("docs/") for name in names)


def test_slugs_follow_githubs_rules():
    assert github_slug("Alerts: what they mean, what to do") == "alerts-what-they-mean-what-to-do"
    assert github_slug("TLS, mTLS and API keys") == "tls-mtls-and-api-keys"
    assert github_slug("`[callers.<name>]`: one per caller") == "callersname-one-per-caller"
    assert github_slug("Errors, in every language") == "errors-in-every-language"
    assert github_slug("A [linked](other.md) title") == "a-linked-title"
    assert github_slug("Ports, files and Secrets of the pod") == "ports-files-and-secrets-of-the-pod"
    assert anchors("# Same\n\n## Same\n\nSetext\n------\n") == {"same", "same-1", "setext"}


def test_broken_files_and_anchors_are_found_and_code_and_web_links_are_not_checked(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Running it for real\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n"
        "[ok](docs/guide.md) [ok](docs/guide.md#running-it-for-real) [ok](#title) [dir](docs/)\n"
        "| [python](python) | [anchor](docs/guide.md#running-it) | [self](#nowhere) |\n"
        "[web](https://example.com/missing) [mail](mailto:someone@example.com) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[ref]: ../outside.md\n"
    )
    problems = broken_links(readme, root=tmp_path)
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "(python) python does not exist",
        "(docs/guide.md#running-it) docs/guide.md has no heading #running-it",
        "(#nowhere) README.md has no heading #nowhere",
        "(../outside.md) leaves the repository",
    ], problems
