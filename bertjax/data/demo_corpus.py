"""The demo corpus's text: English prose mined from the installed Python docstrings.

`sources.DemoSource` (spec "demo") reads it as documents: every bertjax installation
already has it, no download. `files` lists the standard library's Python files (plus
the language reference in pydoc_data/topics.py), then those of the installed
DEMO_PACKAGES, in sorted order; `docstrings` finds a file's docstrings with a small
lexer (files are read as text, never imported); `prose_texts` keeps each docstring's
prose paragraphs (no code, doctests, argument lists, tables) as one text, each
distinct text once.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import re
import sysconfig
import textwrap
import warnings
from collections.abc import Iterator

# Installed packages whose docstrings extend the demo corpus, in this order: the ones
# requirements.txt installs (directly or as a dependency of jax / tensorflow), so the
# corpus is the same wherever bertjax runs with that environment.
DEMO_PACKAGES = ("numpy", "flax", "optax", "absl", "ml_collections", "jax", "scipy", "tensorflow")
_RST_ROLE = re.compile(r":[\w:.-]+:`([^`]*)`")
_RST_LITERAL = re.compile(r"``([^`]*)``")
_UNDERLINE = re.compile(r"[-=~^*+#_`'\"]{3,}\s*")
_NOT_LETTER = re.compile(r"[^\w ]|[\d_]")  # neither a letter nor a space
_PROSE_END = re.compile(r"[.!?:][\"')\]]*$")
_NOT_PROSE = (">>>", "...", "..", "|", "$", ":", "+", "#", "%")
_SECTIONS = re.compile(
    r"(Args|Arguments|Parameters|Returns|Yields|Raises|Attributes|Examples?|Notes?|"
    r"See Also|References|Usage|Warning|Todo)\s*:?\s*$"
)


def prose(paragraph: str) -> str | None:
    """`paragraph` (of a docstring) as one line if it reads as English prose, else None.

    Prose: uniformly indented lines (a hanging indent means an argument list or code),
    at least 7 words, mostly letters, ending with a full stop (or a colon introducing an
    example); not a doctest, table, directive, field list or section header. RST roles
    and literals (:func:`x`, ``x``) are reduced to their text.
    """
    lines = textwrap.dedent(paragraph).split("\n")
    if any(
        ln[:1].isspace() or _UNDERLINE.fullmatch(ln) or ln.startswith(_NOT_PROSE) for ln in lines
    ):
        return None
    text = " ".join(ln.strip() for ln in lines)
    if not _PROSE_END.search(text) or text.endswith("::") or _SECTIONS.match(text):
        return None
    text = _RST_LITERAL.sub(r"\1", _RST_ROLE.sub(r"\1", text))
    if len(_NOT_LETTER.findall(text)) > 0.2 * len(text) or text.count(" ") < 6 or "http" in text:
        return None
    return text


# Python's lexical structure, just enough to find docstrings: from a position, skips
# code, comments and one-line strings up to the next triple quote (group 1), in one call
# of the regex engine. Possessive quantifiers keep it linear; a stray quote is skipped.
_TO_TRIPLE_QUOTE = re.compile(
    r"""(?:[^#"']++|#[^\n]*+|"(?!"")(?:\\.|[^"\\\n])*+"|'(?!'')(?:\\.|[^'\\\n])*+'|"(?!"")|'(?!''))*+"""
    r"""(\"\"\"|''')"""
)


def _string_end(src: str, start: int, quote: str) -> int:
    """Index just past the triple-quoted string whose body starts at `start` (-1: none)."""
    j = start
    while True:
        k = src.find(quote, j)
        if k < 0:
            return -1
        b = k
        while b > start and src[b - 1] == "\\":
            b -= 1
        if (k - b) % 2 == 0:  # the quote is not escaped
            return k + 3
        j = k + 1


_BLOCK_KEYWORDS = re.compile(
    r"(if|elif|else|for|while|try|except|finally|with|match|case|async\s+for|async\s+with)\b"
)


def _opens_body(src: str, line_start: int) -> bool:
    """Whether the code before `line_start` is empty (a module docstring) or ends with a
    `def`/`class` header: a line ending in ':' (comments aside) that does not start an
    if/for/while/try/with... block."""
    end = line_start
    while end > 0:
        begin = src.rfind("\n", 0, end - 1) + 1
        line = src[begin:end].strip()
        if line and not line.startswith("#"):
            line = re.sub(r"\s+#[^'\"]*$", "", line)
            return line.endswith(":") and not _BLOCK_KEYWORDS.match(line)
        end = begin
    return True


def docstrings(path: str) -> Iterator[str]:
    """Docstrings (modules, classes, functions) of one Python file, in source order.

    The file is read as text, never imported or parsed: a small lexer skips comments and
    strings and takes the triple-quoted strings that start a module or a `def`/`class`
    body (4x faster than `ast.parse`, which matters for ~50 MB of source). Python's
    pydoc_data/topics.py holds the language reference as a dict of strings: those count
    as docstrings too (read with `ast`)."""
    try:
        with open(path, encoding="utf-8") as f:
            src = f.read()
    except (UnicodeDecodeError, OSError):
        return
    if path.endswith(os.path.join("pydoc_data", "topics.py")):
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            return
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for v in node.values:
                    if isinstance(v, ast.Constant) and isinstance(v.value, str):
                        yield v.value
        return
    pos = 0
    while (m := _TO_TRIPLE_QUOTE.match(src, pos)) is not None:
        end = _string_end(src, m.end(), m.group(1))
        if end < 0:
            return
        pos = end
        start = m.start(1)
        while start > 0 and m.start(1) - start < 2 and src[start - 1] in "rRuUbBfF":
            start -= 1
        line_start = src.rfind("\n", 0, start) + 1
        prefix = src[start : m.start(1)].lower()
        if "b" in prefix or "f" in prefix or src[line_start:start].strip():
            continue
        if not _opens_body(src, line_start):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old code
                value = ast.literal_eval(src[start:end])
        except (SyntaxError, ValueError):
            continue
        doc = inspect.cleandoc(value)
        if doc:
            yield doc


def python_files(root: str, skip: tuple[str, ...]) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def files() -> Iterator[str]:
    """The stdlib's files, then those of DEMO_PACKAGES that are installed."""
    paths = sysconfig.get_paths()
    yield from python_files(
        paths["stdlib"],
        ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo"),
    )
    for package in DEMO_PACKAGES:
        for site in dict.fromkeys((paths["purelib"], paths["platlib"])):
            root = os.path.join(site, package)
            if os.path.isdir(root):
                yield from python_files(root, ("test", "tests", "testing", "_vendor"))
                break


def prose_texts(path: str, min_chars: int, seen: set[bytes]) -> Iterator[str]:
    """The prose of each docstring of `path` with at least `min_chars` characters of it,
    paragraphs separated by blank lines; a text whose digest is in `seen` (a repeated
    docstring: inherited, generated) is skipped, the others are added to it."""
    for doc in docstrings(path):
        kept = [p for p in map(prose, re.split(r"\n\s*\n", doc)) if p]
        if not kept or sum(map(len, kept)) < min_chars:
            continue  # nothing (or too little) prose: not a document at all
        digest = hashlib.blake2b(
            "\n".join(kept).encode("utf-8", "replace"), digest_size=16
        ).digest()
        if digest in seen:
            continue
        seen.add(digest)
        yield "\n\n".join(kept)
