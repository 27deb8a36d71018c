"""Atomic writes: build under a temporary name, rename when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_directory(path: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary sibling of `path` to fill; renames it to `path` on success.

    On any exception the temporary directory is removed and `path` is untouched, so
    an interrupted export or import never leaves a partial output behind. An
    existing `path` is an error unless `overwrite` is set.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, path)


def replace_directory(src: str, dst: str) -> None:
    """Renames finished directory `src` to `dst`, replacing an existing `dst`.

    The old `dst` is moved aside first, so at every moment `dst` is either the old
    complete directory or the new one.
    """
    if os.path.exists(dst):
        old = f"{src}.old"
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


def read_json(path: str) -> Any:
    """The JSON at `path`; a missing or unreadable file, or one that is not JSON, is a
    ValueError of one line naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def write_json(path: str, obj: object) -> None:
    """`obj` as indented JSON at `path`, written under a temporary name and renamed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
