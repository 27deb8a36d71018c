"""Text sources. For now: the built-in demo corpus, which needs no download.

The demo corpus is real English prose this machine already has: the docstrings of
the Python standard library, read with `ast` from the source files (never by
importing the modules), in sorted file order so it is the same on every run of
the same Python version.
"""

from __future__ import annotations

import ast
import os
import sysconfig
from collections.abc import Iterator


def demo_corpus(max_bytes: int = 8 << 20, min_chars: int = 200) -> Iterator[str]:
    """Yields documents (docstrings of at least `min_chars` characters) up to `max_bytes`."""
    root = sysconfig.get_paths()["stdlib"]
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ("site-packages", "test", "tests", "idlelib", "lib2to3"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= min_chars:
                        yield doc
                        total += len(doc.encode("utf-8"))
                        if total >= max_bytes:
                            return
