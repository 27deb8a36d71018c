"""Shard files: their names, atomic writes and checksums.

A shard and its metadata are written to a temporary name and renamed (`write_atomic`,
`write_atomic_stream`), so a file is there whole or not at all; `remove_partial_files`
clears what an interrupted run left. PARTS names DATA/.shards, where shards wait until
`finished_shards.publish` gives them their final names (SHARD_RE).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import uuid
from collections.abc import Iterable

PARTS = ".shards"  # DATA/.shards: in-progress shards and their metadata
SHARD_RE = re.compile(r"^(train|validation)-(\d{5})-of-(\d{5})\.tfrecord$")


def shard_name(split: str, k: int, total: int) -> str:
    return f"{split}-{k:05d}-of-{total:05d}.tfrecord"


def write_atomic(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all. A failed write (a full disk) removes its
    temporary file and names `path`; the shards already written stay, and running the
    same command again resumes after them."""
    write_atomic_stream(path, (data,))


def write_atomic_stream(path: str, parts: Iterable[bytes]) -> tuple[int, str]:
    """`write_atomic` of the concatenated `parts`, each written as it comes (the file is
    never whole in memory); returns the file's size and sha256."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    h, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
                h.update(part)
                size += len(part)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OSError(
            e.errno,
            f"{e.strerror or e}; the shards written before it are kept "
            "and the same command resumes after them",
            path,
        ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return size, h.hexdigest()


def remove_partial_files(parts_dir: str) -> None:
    """Removes the temporary files of an interrupted run."""
    for leftover in glob.glob(os.path.join(parts_dir, "*.tmp-*")):
        os.remove(leftover)
