"""One path layer for every file bertjax reads or writes outside Orbax: local paths and
object-store URLs (`gs://bucket/...`; any fsspec URL whose filesystem is installed, e.g.
`s3://` with s3fs) behind the same functions.

Local paths go straight to `os`/`open`; URLs go through fsspec (gcsfs for gs://), one
client per scheme shared with Orbax's small files (bertjax/objectstore.py). Orbax keeps
its own I/O for arrays (TensorStore).

Atomic publishing. A local output is built under a temporary sibling name and renamed
when complete. Object stores have no rename, so there:
- a single file is uploaded as one object (`write_bytes`, `upload`): Cloud Storage makes
  an object visible only once its upload has finished, so a reader sees the old object,
  the new one, or none, never a part;
- a directory is built in a local temporary directory and uploaded file by file, its
  *marker* file last (`atomic_directory(path, marker=...)`): config.json for a model
  directory or an export, manifest.json for prepared data. Replacing an existing
  directory deletes its marker first. Readers treat a directory without its marker as
  unfinished (a model directory without config.json is "not a bertjax model"; prepared
  data without manifest.json is "not prepared"), so an interrupted upload never reads as
  complete.

Errors on URLs come out as OSError naming the path and the operation, so that commands
print them on one line.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO, Any

from bertjax import objectstore

_CHUNK = 1 << 24  # bytes read at a time when hashing or copying


def is_remote(path: str) -> bool:
    """True for a URL with a scheme (gs://, s3://, memory://), False for a local path."""
    return "://" in str(path) and not str(path).startswith("file://")


def _local(path: str) -> str:
    path = os.fspath(path)
    return path[len("file://") :] if path.startswith("file://") else path


# --- names ---------------------------------------------------------------------------


def join(path: str, *parts: str) -> str:
    """os.path.join for local paths, '/'-joined for URLs."""
    if is_remote(path):
        return posixpath.join(str(path), *parts)
    return os.path.join(path, *parts)


def dirname(path: str) -> str:
    if is_remote(path):
        scheme, rest = str(path).rstrip("/").split("://", 1)
        head = posixpath.dirname(rest)
        return f"{scheme}://{head}" if head else f"{scheme}://{rest}"
    return os.path.dirname(path)


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(path)


def absolute(path: str) -> str:
    """A local path made absolute; a URL as it is."""
    return str(path).rstrip("/") if is_remote(path) else os.path.abspath(_local(path))


def relative(path: str, start: str) -> str:
    """`path` relative to `start` (both local, or both URLs)."""
    if is_remote(path):
        return posixpath.relpath(str(path).split("://", 1)[1], str(start).split("://", 1)[1])
    return os.path.relpath(path, start)


# --- queries -------------------------------------------------------------------------


def _stat(path: str, local: Any, method: str) -> Any:
    """`local(path)` for a local path, else the filesystem's `method`, errors in one line."""
    if not is_remote(path):
        return local(_local(path))
    fs, p = objectstore.fs(path)
    with objectstore.calling(path, "stat"):
        return getattr(fs, method)(p)


def exists(path: str) -> bool:
    return bool(_stat(path, os.path.exists, "exists"))


def isdir(path: str) -> bool:
    return bool(_stat(path, os.path.isdir, "isdir"))


def isfile(path: str) -> bool:
    return bool(_stat(path, os.path.isfile, "isfile"))


def getsize(path: str) -> int:
    return int(_stat(path, os.path.getsize, "size"))


def sizes(path: str) -> dict[str, int]:
    """{name: bytes} of the files directly in directory `path` (subdirectories left out;
    {} when it does not exist): one listing request on an object store, made afresh
    (no cached listing), so it sees what other processes published."""
    if not is_remote(path):
        try:
            with os.scandir(_local(path)) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        except FileNotFoundError:
            return {}
    return objectstore.sizes(path)


def forget_listings(path: str) -> None:
    """Drops this process's cached object-store listings (gcsfs keeps them per process,
    and Orbax lists through the same client), so that the next listing of `path` sees
    what other processes wrote since. Nothing to do for a local path."""
    if is_remote(path):
        objectstore.fs(path)[0].invalidate_cache()


def listdir(path: str) -> list[str]:
    """The names in directory `path`, sorted."""
    if not is_remote(path):
        return sorted(os.listdir(_local(path)))
    return objectstore.listdir(path)


def walk_files(path: str) -> list[str]:
    """Every file under directory `path`, as sorted '/'-separated relative names."""
    if not is_remote(path):
        root = _local(path)
        out = []
        for d, dirs, files in os.walk(root):
            dirs.sort()
            out += [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/") for f in files]
        return sorted(out)
    return objectstore.walk_files(path)


def glob(pattern: str) -> list[str]:
    """Paths matching `pattern` (`*`, `?`, `[...]`, `**`), sorted; URLs keep their scheme."""
    if not is_remote(pattern):
        import glob as globlib

        return sorted(globlib.glob(os.path.expanduser(_local(pattern)), recursive=True))
    return objectstore.glob(pattern)


# --- reading -------------------------------------------------------------------------


def open(path: str, mode: str = "r", **kwargs: Any) -> IO[Any]:  # noqa: A001
    """A file object for reading (`r`, `rb`) from a local path or URL. Writing goes
    through `write_bytes`/`write_text`/`atomic_directory`, which publish atomically."""
    if any(c in mode for c in "wax+"):
        raise ValueError(
            f"paths.open is for reading; write {path} with write_bytes, "
            "write_text or atomic_directory"
        )
    if not is_remote(path):
        return builtins.open(_local(path), mode, **kwargs)
    fs, p = objectstore.fs(path)
    with objectstore.calling(path, "open"):
        if "b" in mode:
            return fs.open(p, "rb")
        return fs.open(
            p,
            "rt",
            encoding=kwargs.get("encoding", "utf-8"),
            errors=kwargs.get("errors"),
            newline=kwargs.get("newline"),
        )


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with builtins.open(_local(path), "rb") as f:
            return f.read()
    fs, p = objectstore.fs(path)
    with objectstore.calling(path, "read"):
        return fs.cat_file(p)


def read_text(path: str) -> str:
    """The file's text, UTF-8; a file that is not UTF-8 is a ValueError naming it."""
    raw = read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_json(path: str) -> Any:
    """The JSON at `path`; a missing or unreadable file, or one that is not JSON, is a
    ValueError of one line naming it."""
    try:
        text = read_text(path)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or objectstore.words(e)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def sha256(path: str) -> str:
    """The sha256 hex digest of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(path: str, local: str) -> None:
    """Copies file or directory `path` (local or URL) to the local path `local`."""
    if not is_remote(path):
        src = _local(path)
        if os.path.isdir(src):
            shutil.copytree(src, local)
        else:
            shutil.copyfile(src, local)
        return
    fs, p = objectstore.fs(path)
    with objectstore.calling(path, "download"):
        if fs.isdir(p):
            os.makedirs(local, exist_ok=True)
            for name in walk_files(path):
                target = os.path.join(local, *name.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                fs.get_file(posixpath.join(p, name), target)
        else:
            fs.get_file(p, local)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding what `path` holds: `path` itself when it is local, else a
    temporary download of the file or directory, removed afterwards (for readers that
    need local files: tokenizers, safetensors, TensorFlow's checkpoint reader)."""
    if not is_remote(path):
        yield _local(path)
        return
    tmp = tempfile.mkdtemp(prefix="bertjax-")
    try:
        target = os.path.join(tmp, basename(path) or "data")
        download(path, target)
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- writing -------------------------------------------------------------------------


def makedirs(path: str) -> None:
    """Creates a local directory and its parents. Object stores have no directories: for a
    URL this only checks, with one request, that its bucket exists (FileNotFoundError
    naming it), so that a job with a mistyped bucket stops before its work."""
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)
        return
    fs, _ = objectstore.fs(path)
    root = objectstore.bucket(path)
    with objectstore.calling(root, "check bucket"):
        if not fs.exists(root):
            raise FileNotFoundError(2, "no such bucket", root)


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[str]:
    """Yields a temporary sibling of local file `path` to write; renames it to `path` once
    the block ends without an exception, else removes it."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    """`data` at `path`, published atomically: a local temporary sibling renamed into
    place, or one object upload."""
    if is_remote(path):
        fs, p = objectstore.fs(path)
        with objectstore.calling(path, "write", changes=True):
            fs.pipe_file(p, data)
        return
    with _replacing(_local(path)) as tmp:
        with builtins.open(tmp, "wb") as f:
            f.write(data)
        apply_umask(tmp)


def apply_umask(path: str) -> None:
    """Gives local file `path` the mode a plain `open` would (0666 less the umask):
    libraries that create files 0600 would otherwise lock teammates out of shared
    storage."""
    os.chmod(path, 0o666 & ~_UMASK)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: object) -> None:
    """`obj` as indented JSON at `path`, published atomically."""
    write_text(path, json.dumps(obj, indent=2))


def upload(local: str, path: str) -> None:
    """Publishes a copy of the finished local file `local` at `path` (local or URL),
    atomically: one object upload, or a copy renamed into place."""
    if is_remote(path):
        fs, p = objectstore.fs(path)
        with objectstore.calling(path, "upload", changes=True):
            fs.put_file(local, p)
        return
    with _replacing(_local(path)) as tmp:
        shutil.copyfile(local, tmp)


def copy(src: str, dst: str) -> None:
    """Publishes a copy of file `src` at `dst` (each local or a URL), atomically: between
    URLs of one store a server-side copy (the bytes never pass through this machine),
    else an upload (`upload`) or a download renamed into place."""
    if is_remote(src) and is_remote(dst) and objectstore.fs(src)[0] is objectstore.fs(dst)[0]:
        fs, p = objectstore.fs(src)
        with objectstore.calling(dst, f"copy from {src}", changes=True):
            fs.copy(p, objectstore.fs(dst)[1])
        return
    if not is_remote(src):
        upload(_local(src), dst)
        return
    if is_remote(dst):
        raise ValueError(f"cannot copy {src} to {dst}: different stores")
    with _replacing(_local(dst)) as tmp:
        download(src, tmp)


def remove(path: str) -> None:
    """Removes a file; a missing one is not an error."""
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(_local(path))
        return
    fs, p = objectstore.fs(path)
    with objectstore.calling(path, "delete", changes=True):
        if fs.exists(p):
            fs.rm_file(p)


def rmtree(path: str) -> None:
    """Removes a directory and everything in it; a missing one is not an error."""
    if not is_remote(path):
        shutil.rmtree(_local(path), ignore_errors=True)
        return
    fs, p = objectstore.fs(path)
    with objectstore.calling(path, "delete", changes=True):
        if fs.exists(p):
            fs.rm(p, recursive=True)


def move(src: str, dst: str) -> None:
    """Moves file or directory `src` to `dst` (a rename locally; copy then delete on an
    object store, where it is not atomic: used only to move damaged data aside)."""
    if not is_remote(src) and not is_remote(dst):
        os.makedirs(os.path.dirname(_local(dst)) or ".", exist_ok=True)
        shutil.move(_local(src), _local(dst))
        return
    if is_remote(src) != is_remote(dst):
        raise ValueError(f"cannot move {src} to {dst}: one is local, the other a URL")
    fs, p = objectstore.fs(src)
    with objectstore.calling(src, f"move to {dst}", changes=True):
        fs.mv(p, objectstore.fs(dst)[1], recursive=True)


def replace_directory(src: str, dst: str) -> None:
    """Renames finished local directory `src` to `dst`, replacing an existing `dst`: the
    old one is moved aside first, so at every moment `dst` is complete, old or new."""
    if os.path.exists(dst):
        old = f"{src}.old"
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


@contextlib.contextmanager
def atomic_directory(
    path: str, overwrite: bool = False, marker: str = "config.json"
) -> Iterator[str]:
    """Yields a local temporary directory to fill; publishes it at `path` on success.

    Local `path`: a temporary sibling renamed into place (`replace_directory`). URL: the
    files are uploaded with `marker` last (`objectstore.publish_directory`). On any
    exception nothing is published and `path` is untouched. An existing `path` is an
    error unless `overwrite` is set.
    """
    remote = is_remote(path)
    path = absolute(path)
    if exists(path) and not overwrite:
        raise FileExistsError(17, "already exists (pass --overwrite to replace it)", path)
    if remote:
        tmp = tempfile.mkdtemp(prefix="bertjax-publish-")
    else:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
    try:
        yield tmp
        if remote:
            objectstore.publish_directory(tmp, walk_files(tmp), path, marker)
        else:
            replace_directory(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The process umask (os.umask can only be read by setting it: once, at import).
_UMASK = _read_umask()
