"""How a URL reaches its object store (bertjax/paths.py's back end for `gs://` and any
other fsspec URL): one client per scheme, the store's errors turned into one-line
OSErrors, and cached listings dropped after every write.

gcsfs is the client for gs://. Orbax's small files go through etils `epath`, which
bertjax points at fsspec (`EPATH_USE_TF=false`, bertjax/__init__.py) and which asks
fsspec for the same instance (same arguments), so both sides share one client, one set
of credentials and one listing cache; TensorStore (Orbax's arrays) follows
`TENSORSTORE_GCS_HTTP_URL` where the tests use a local emulator. gcsfs retries transient
errors (HTTP 429/5xx, dropped connections) itself before giving up.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
from collections.abc import Iterator
from typing import Any


@functools.cache
def _filesystem(protocol: str) -> Any:
    import fsspec

    if protocol in ("gs", "gcs"):
        import logging

        # gcsfs asks the storage-control API for the bucket's layout and warns when it
        # cannot (no credentials for that API, an emulator); it then works as usual.
        logging.getLogger("gcsfs").setLevel(logging.ERROR)
    try:
        if protocol in ("gs", "gcs"):
            # The instance etils epath gives Orbax (same arguments, same object).
            return fsspec.filesystem("gcs", finalize_on_close=True)
        return fsspec.filesystem(protocol)
    except (ImportError, ValueError) as e:
        raise OSError(
            f"no filesystem for {protocol}:// URLs ({e}); for gs:// install "
            "gcsfs (requirements.txt)"
        ) from None


def fs(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, the URL as that filesystem names it)."""
    return _filesystem(str(url).split("://", 1)[0]), str(url)


def bucket(url: str) -> str:
    """scheme://bucket of a URL."""
    scheme, rest = str(url).split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def words(e: BaseException) -> str:
    """What an exception says, on one line of at most 300 characters."""
    return (" ".join(str(e).split()) or type(e).__name__)[:300]


def error(url: str, op: str, e: BaseException) -> OSError:
    """An OSError whose one line is "URL: OP failed (what the store said)"."""
    if isinstance(e, FileNotFoundError):
        with contextlib.suppress(Exception):  # a missing bucket is worth naming
            if not fs(url)[0].exists(bucket(url)):
                return FileNotFoundError(2, f"{op}: no such bucket {bucket(url)}", url)
        return FileNotFoundError(2, f"{op}: no such file or directory", url)
    if isinstance(e, PermissionError):
        return PermissionError(13, f"{op}: permission denied ({words(e)})", url)
    return OSError(5, f"{op} failed ({words(e)})", url)


@contextlib.contextmanager
def calling(url: str, op: str, changes: bool = False) -> Iterator[None]:
    """Turns what the store raises into `error`s. `changes`: the operation writes, so
    fsspec's cached listings (which Orbax reads through etils epath, and which gcsfs
    keeps per process) are dropped afterwards, even if it failed half-way."""
    try:
        yield
    except OSError as e:
        if getattr(e, "filename", None) == url:
            raise
        raise error(url, op, e) from None
    except Exception as e:  # noqa: BLE001 -- aiohttp, google-auth, HttpError ...
        raise error(url, op, e) from None
    finally:
        if changes:
            fs(url)[0].invalidate_cache()


# --- listings --------------------------------------------------------------------------


def sizes(url: str) -> dict[str, int]:
    """{name: bytes} of the objects directly under `url` ({} when there are none), listed
    afresh (no cached listing), so it sees what other processes published."""
    store, p = fs(url)
    with calling(url, "list"):
        try:
            entries = store.ls(p, detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        return {
            posixpath.basename(e["name"].rstrip("/")): int(e["size"])
            for e in entries
            if e.get("type") == "file"
        }


def listdir(url: str) -> list[str]:
    """The names directly under `url`, sorted; FileNotFoundError when there are none."""
    store, p = fs(url)
    with calling(url, "list"):
        if not store.isdir(p):
            raise FileNotFoundError(url)
        return sorted(
            {
                posixpath.basename(e.rstrip("/"))
                for e in store.ls(p, detail=False)
                if e.rstrip("/") != p.split("://", 1)[-1].rstrip("/")
            }
        )


def walk_files(url: str) -> list[str]:
    """Every object under `url`, as sorted names relative to it."""
    store, p = fs(url)
    with calling(url, "list"):
        base = p.split("://", 1)[-1].rstrip("/") + "/"
        return sorted(f.split("://", 1)[-1][len(base) :] for f in store.find(p))


def glob(pattern: str) -> list[str]:
    """URLs matching `pattern`, sorted, with their scheme."""
    store, p = fs(pattern)
    scheme = str(pattern).split("://", 1)[0]
    with calling(pattern, "list"):
        return sorted(f"{scheme}://{m.split('://', 1)[-1]}" for m in store.glob(p))


# --- publishing ------------------------------------------------------------------------


def publish_directory(local: str, names: list[str], url: str, marker: str) -> None:
    """Uploads the finished local directory `local` (its files `names`, '/'-separated) to
    `url`: every file but `marker` first, `marker` last. An existing directory at `url`
    loses its marker before anything else changes, so no reader takes a half-replaced
    directory for a finished one."""
    if marker not in names:
        raise ValueError(f"{local}: has no {marker} to publish last")
    store, p = fs(url)
    with calling(url, "publish", changes=True):
        if store.exists(posixpath.join(p, marker)):
            store.rm_file(posixpath.join(p, marker))
        if store.exists(p):
            store.rm(p, recursive=True)
        for name in [n for n in names if n != marker] + [marker]:
            store.put_file(os.path.join(local, *name.split("/")), posixpath.join(p, name))
