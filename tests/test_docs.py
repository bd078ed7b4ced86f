r"""The repository teaches on its own: no pointer leaves it, and every docs/ pointer lands.

- No tracked file refers to material outside the repository: the project's private notes folder,
  the private math and performance notes, or a source document named by its number instead of its
  title (docs/math.md lists the four by title and author, under Sources). Random seeds are fine.
- Every "docs/X.md §N" cited anywhere names a file of docs/ with a numbered heading "§N".
- Docstrings with a backslash are raw strings, and no Python file holds a control character
  (a non-raw "\frac" once printed as a form feed followed by "rac").
"""
import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Built by concatenation so that no other file needs to spell them (this file is not scanned).
_NOTES = "shared" + "/"
_PRIVATE = ("MATH" + ".md", "PERF" + ".md")
_BY_NUMBER = re.compile(
    r"(?<!random )(?<![-\w.=])seeds?\s+[1-4](?:\s*(?:,|and|&)\s*[1-4])*\b"  # "seed 4", "seeds 1 and 4"
    r"|\b(?:first|second|third|fourth)\s+seed\b"                              # "the first seed"
    r"|\bsource\s+documents?\s+(?:no\.?\s*|#\s*)?\d"                          # "source document 2"
    r"|(?<![\w.])00[0-3]_",                                                   # "001_..." file names
    re.IGNORECASE,
)


def forbidden(text):
    """The first reference to something outside the repository in ``text``, or None."""
    if _NOTES in text:
        return _NOTES
    for name in _PRIVATE:
        if name in text:
            return name
    m = _BY_NUMBER.search(text)
    return m.group(0) if m else None


@pytest.mark.parametrize("text", [
    "see seed 4 for the slides", "Seeds 1 and 4 write Algorithm 1", "the first seed's figure",
    "(fourth seed)", "source document 2", "from 001_ca11.txt", "the " + "MATH" + ".md conventions",
    "../" + "shared" + "/seeds", "PERF" + ".md says", "the Second Seed",
])
def test_the_pattern_catches_references_by_number(text):
    assert forbidden(text) is not None, text


@pytest.mark.parametrize("text", [
    "seed=0", "TrainConfig(seed=3)", "--seed 3", "--seeds 3", "a random seed 2 makes it differ",
    "random seed", "seeded with (seed, k)", "docs/math.md §4", "T = 1000_000", "x_001", "0.001_",
    "the seed is fixed", "seeds = st.integers(0, 2**31 - 1)", "docs/math.md, Sources",
])
def test_the_pattern_lets_random_seeds_pass(text):
    assert forbidden(text) is None, (text, forbidden(text))


def _tracked_text_files():
    """(name, text) of every tracked text file but this one, whose examples match on purpose."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or name == "tests/test_docs.py":
            continue  # deleted in the work tree, or a submodule
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (images, arrays)
        yield name, data.decode("utf-8", errors="replace")


def test_no_tracked_file_points_outside_the_repository():
    bad = []
    for name, text in _tracked_text_files():
        for i, line in enumerate(text.splitlines(), 1):
            hit = forbidden(line)
            if hit:
                bad.append(f"{name}:{i}: {hit!r}")
    assert not bad, "references outside the repository:\n" + "\n".join(bad)


# "docs/math.md §3", "docs/math.md §1, §3 and §6-§9", "docs/attention.md §1-§4", "docs/x.md §2.1"
_POINTER = re.compile(r"docs/([\w-]+\.md)((?:\s*(?:,|and|-|–|to)?\s*§\d+(?:\.\d+)?)+)")
_SECTION = re.compile(r"(-|–|to)?\s*§(\d+(?:\.\d+)?)")
_HEADING = re.compile(r"^#+\s*§(\d+(?:\.\d+)?)\b", re.MULTILINE)


def cited_sections(text):
    """{(file, section)} for every docs pointer in ``text``; a range §a-§b cites a..b."""
    cited = set()
    for m in _POINTER.finditer(text):
        prev = None
        for dash, sec in _SECTION.findall(m.group(2)):
            if dash and prev is not None and "." not in sec and "." not in prev:
                cited.update((m.group(1), str(k)) for k in range(int(prev) + 1, int(sec)))
            cited.add((m.group(1), sec))
            prev = sec
    return cited


def test_cited_sections_parses_lists_and_ranges():
    text = "see docs/math.md §1, §3 and §6-§8; docs/attention.md §2.1 and docs/performance.md §4."
    assert cited_sections(text) == {("math.md", "1"), ("math.md", "3"), ("math.md", "6"), ("math.md", "7"),
                                    ("math.md", "8"), ("attention.md", "2.1"), ("performance.md", "4")}
    assert cited_sections("docs/math.md, Sources; docs/README.md") == set()


# Topic files written by the engineer who builds the feature (docs/README.md lists them): a pointer to
# one is allowed while the file does not exist yet; once it exists, its sections are checked too.
PLANNED = {"attention.md", "latent.md", "quality.md", "backends.md"}


def test_every_docs_pointer_names_a_numbered_heading():
    headings = {}
    for path in (ROOT / "docs").glob("*.md"):
        headings[path.name] = set(_HEADING.findall(path.read_text(encoding="utf-8")))
    dead = []
    for name, text in _tracked_text_files():
        for i, line in enumerate(text.splitlines(), 1):
            for doc, sec in sorted(cited_sections(line)):
                if doc not in headings and doc in PLANNED:
                    continue
                if doc not in headings:
                    dead.append(f"{name}:{i}: docs/{doc} does not exist")
                elif sec not in headings[doc]:
                    dead.append(f"{name}:{i}: docs/{doc} has no heading §{sec}")
    assert not dead, "dead docs/ pointers:\n" + "\n".join(dead)


def test_every_docs_file_named_exists():
    """A pointer without a section ("see docs/foo.md") must name an existing file (or a planned one)."""
    present = {p.name for p in (ROOT / "docs").glob("*.md")}
    missing = []
    for name, text in _tracked_text_files():
        for i, line in enumerate(text.splitlines(), 1):
            for doc in re.findall(r"docs/([\w-]+\.md)", line):
                if doc not in present and doc not in PLANNED:
                    missing.append(f"{name}:{i}: docs/{doc}")
    assert not missing, "pointers to missing docs files:\n" + "\n".join(missing)


def test_docstrings_with_backslashes_are_raw_and_no_control_characters():
    bad = []
    for name, text in _tracked_text_files():
        if not name.endswith(".py"):
            continue
        if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text):
            bad.append(f"{name}: control character")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    src = ast.get_source_segment(text, body[0].value) or ""
                    if "\\" in src and not src[:1] in "rR":
                        bad.append(f"{name}:{body[0].lineno}: docstring with a backslash is not raw")
    assert not bad, "\n".join(bad)
