"""A bounded, checksummed local cache of the shards a pipeline reads from a bucket.

tf.data reads local files only here (TensorFlow's own gs:// client cannot be pointed
at the Cloud Storage emulator the tests use, and every gs:// access goes through
bertjax.paths), so the pipeline reads a gs:// data directory's shards from local copies:

  * `acquire(url, sha256, size, owner, epoch)` returns the local copy of a shard,
    downloading it (paths.download) the first time it is needed and checking its size
    and sha256 against the manifest's as it arrives (a file of a cache directory left
    by an earlier process is checked once, locally, before its first use). A mismatch is
    a `ChecksumMismatch` naming the URL; nothing of the download is kept.
  * `release(path, owner)` says that the interleave has read the copy to its end;
    `release_before(owner, epoch)` releases what an owner held in earlier epochs (an
    epoch may stop before the end of its last files), `release_owner(owner)` all of it.
  * `prefetch(items)` downloads upcoming shards in the background while there is room,
    so that opening the next shard rarely waits for the network.

The bound: the bytes of the copies (and of downloads under way) never exceed
`bound_bytes`. Before a download, copies in use by no one are evicted, least recently
used first (what was fetched ahead last); copies in use are never evicted. A pipeline
checks at start that the bound holds its interleave cycle (its largest shards, as many
as it reads at once); should several pipelines at once still need more (training and
evaluation together), the bound is exceeded with a warning rather than waiting.

Copies are named by their sha256, so the same bytes at another URL (a bucket copy of
the data) are the same copy. The default directory is a temporary one per process,
removed at exit; an explicit one (data.cache_dir) is kept across runs (a restarted job
downloads nothing already there) and is locked: one process at a time.

What it costs: local disk up to the bound; one download (one GET, the shard's bytes)
per shard the first time, and again each time it was evicted before being read again
(a bound that holds the whole split: once per process and shard; a smaller one: about
once per epoch and shard); a local sha256 pass over every downloaded copy.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Hashable, Iterable

from bertjax import paths
from bertjax.data.records import DataFormatError

_SUFFIX = ".tfrecord"
_NAME = re.compile(r"^[0-9a-f]{64}\.tfrecord$")
_PREFETCH_THREADS = 2


class ChecksumMismatch(DataFormatError):
    """A downloaded shard is not what the manifest says (size or sha256)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class ShardCache:
    """Local copies of remote shards in `directory`, at most `bound_bytes` of them."""

    def __init__(self, directory: str, bound_bytes: int, lock: bool) -> None:
        self.directory = directory
        self.bound = int(bound_bytes)
        os.makedirs(directory, exist_ok=True)
        self._lock_file = _lock(directory) if lock else None
        self._cond = threading.Condition()
        self._sizes: collections.OrderedDict[str, int] = collections.OrderedDict()  # LRU
        self._pending: dict[str, threading.Event] = {}  # key -> set when its download ends
        self._reserved = 0  # bytes of downloads under way
        self._holds: dict[tuple[Hashable, str], int] = {}  # (owner, key) -> epoch
        self._ahead: set[str] = set()  # fetched ahead, not used since
        self._checked: set[str] = set()  # keys whose copy this process checked
        self._warned = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            _PREFETCH_THREADS, thread_name_prefix="bertjax-shard-prefetch"
        )
        self.downloads = 0  # shards downloaded by this process (for tests and logs)
        found = []
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if _NAME.match(name):
                found.append((os.path.getmtime(path), name[: -len(_SUFFIX)], os.path.getsize(path)))
            elif ".tmp-" in name:  # a download an earlier process did not finish
                with contextlib.suppress(OSError):
                    os.remove(path)
        for _, key, size in sorted(found):
            self._sizes[key] = size
        with self._cond:
            self._make_room(0, demand=False)

    # ------------------------------------------------------------------ use

    @property
    def used_bytes(self) -> int:
        """Bytes of the copies and of the downloads under way."""
        return sum(self._sizes.values()) + self._reserved

    def path(self, key: str) -> str:
        return os.path.join(self.directory, key + _SUFFIX)

    def acquire(
        self, url: str, sha256: str, size: int | None, owner: Hashable, epoch: int = 0
    ) -> str:
        """The local copy of shard `url` (downloaded and checked if needed; sha256 "" or
        size None: not known, not checked), held for `owner` until released."""
        key = _key(url, sha256, size)
        while True:
            with self._cond:
                event = self._pending.get(key)
                if event is None:
                    self._holds[(owner, key)] = epoch
                    self._ahead.discard(key)
                    if key in self._sizes:
                        self._sizes.move_to_end(key)
                        break
                    self._start(key, size, demand=True)
                    break
            event.wait()
        try:
            if key not in self._checked:
                self._fetch(url, sha256, size, key)
            with contextlib.suppress(OSError):
                os.utime(self.path(key))  # the order of use, for a later process
            return self.path(key)
        except BaseException:
            with self._cond:
                self._holds.pop((owner, key), None)
            raise

    def release(self, path: str, owner: Hashable) -> None:
        key = os.path.basename(path)[: -len(_SUFFIX)]
        with self._cond:
            self._holds.pop((owner, key), None)

    def release_before(self, owner: Hashable, epoch: int) -> None:
        with self._cond:
            for hold in [h for h, e in self._holds.items() if h[0] == owner and e < epoch]:
                del self._holds[hold]

    def release_owner(self, owner: Hashable) -> None:
        with self._cond:
            for hold in [h for h in self._holds if h[0] == owner]:
                del self._holds[hold]

    def prefetch(self, items: Iterable[tuple[str, str, int | None]]) -> None:
        """Starts downloading (url, sha256, size) shards not yet here, in order, while
        they fit without evicting anything in use or fetched ahead."""
        for url, sha256, size in items:
            key = _key(url, sha256, size)
            with self._cond:
                if key in self._sizes or key in self._pending:
                    continue
                if not self._start(key, size, demand=False):
                    return
            self._pool.submit(self._prefetch_one, url, sha256, size, key)

    # ------------------------------------------------------------------ internals

    def _start(self, key: str, size: int | None, demand: bool) -> bool:
        """Reserves room for a download of `key` (lock held); False when a prefetch
        does not fit."""
        if not self._make_room(size or 0, demand) and not demand:
            return False
        self._pending[key] = threading.Event()
        self._reserved += size or 0
        self._sizes.pop(key, None)
        return True

    def _make_room(self, size: int, demand: bool) -> bool:
        """Evicts unused copies, least recently used first, until `size` more bytes
        fit (lock held). A prefetch evicts no copy fetched ahead. True if they fit."""
        held = {key for _, key in self._holds}
        for ahead_too in (False, True) if demand else (False,):
            for key in list(self._sizes):
                if self.used_bytes + size <= self.bound:
                    return True
                if key in held or (key in self._ahead and not ahead_too):
                    continue
                del self._sizes[key]
                self._ahead.discard(key)
                self._checked.discard(key)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path(key))
        if self.used_bytes + size <= self.bound:
            return True
        if demand and not self._warned:
            self._warned = True
            print(
                f"warning: {self.directory}: the shards in use need more than the "
                f"cache bound of {self.bound / 1e9:.3f} GB (data.cache_gb); exceeding "
                "it",
                file=sys.stderr,
                flush=True,
            )
        return False

    def _fetch(self, url: str, sha256: str, size: int | None, key: str) -> None:
        """Downloads `url` into its copy (reserved by `_start`) or checks the copy an
        earlier process left; ends the pending state either way."""
        target = self.path(key)
        ok = downloaded = False
        try:
            if os.path.exists(target) and key not in self._pending:
                # A copy from an earlier process (or evicted and fetched again by now).
                if not sha256 or paths.sha256(target) == sha256:
                    ok = True
                    return
                os.remove(target)
                with self._cond:
                    self._sizes.pop(key, None)
                    self._start(key, size, demand=True)
            tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            try:
                paths.download(url, tmp)
                downloaded = True
                if (size is not None and os.path.getsize(tmp) != size) or (
                    sha256 and paths.sha256(tmp) != sha256
                ):
                    raise ChecksumMismatch(url)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            ok = True
        finally:
            with self._cond:
                event = self._pending.pop(key, None)
                if event is not None:
                    self._reserved -= size or 0
                self.downloads += downloaded
                if ok:
                    self._sizes[key] = os.path.getsize(target)
                    self._sizes.move_to_end(key)
                    self._checked.add(key)
                if event is not None:
                    event.set()

    def _prefetch_one(self, url: str, sha256: str, size: int | None, key: str) -> None:
        try:
            self._fetch(url, sha256, size, key)
        except BaseException:  # noqa: BLE001 - the demand download reports it
            return
        with self._cond:
            if not any(k == key for _, k in self._holds):
                self._ahead.add(key)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._lock_file is not None:
            self._lock_file.close()


def _key(url: str, sha256: str, size: int | None) -> str:
    """The copy's name: the shard's sha256, or (a manifest without digests) one of its
    URL and size."""
    if sha256:
        return sha256
    return hashlib.sha256(f"{url}|{size}".encode()).hexdigest()


def _lock(directory: str):
    import fcntl

    f = open(os.path.join(directory, ".lock"), "w")  # noqa: SIM115 - held while the cache lives
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DataFormatError(
            f"{directory}: data.cache_dir is in use by another process; "
            "give each process its own (or leave data.cache_dir empty "
            "for a temporary one)"
        ) from None
    return f


_CACHES: dict[str, ShardCache] = {}
_CACHES_LOCK = threading.Lock()


def shared(directory: str, bound_gb: float, need_bytes: int) -> ShardCache:
    """This process's cache in `directory` ("": a temporary directory removed at exit),
    bounded to `bound_gb` GB (0: half the free disk space there when first made; a
    later call may change the bound); DataFormatError when the bound is below
    `need_bytes`, what one pipeline reads at once."""
    with _CACHES_LOCK:
        key = os.path.abspath(directory) if directory else ""
        cache = _CACHES.get(key)
        if cache is None:
            if directory:
                os.makedirs(directory, exist_ok=True)
                path, lock = os.path.abspath(directory), True
            else:
                path, lock = tempfile.mkdtemp(prefix="bertjax-shards-"), False
                atexit.register(shutil.rmtree, path, ignore_errors=True)
            bound = _bound(path, bound_gb, need_bytes)
            cache = _CACHES[key] = ShardCache(path, bound, lock)
            atexit.register(cache.close)
        else:
            with cache._cond:
                cache.bound = _bound(cache.directory, bound_gb, need_bytes, cache.bound)
    return cache


def _bound(directory: str, bound_gb: float, need_bytes: int, current: int | None = None) -> int:
    if bound_gb < 0:
        raise ValueError(f"data.cache_gb={bound_gb} must be >= 0 (0: half the free disk)")
    if bound_gb:
        bound = int(bound_gb * 1e9)
        what = f"data.cache_gb={bound_gb:g}"
    elif current is not None:
        return max(current, need_bytes)
    else:
        bound = shutil.disk_usage(directory).free // 2
        what = f"half the free disk space of {directory} ({bound / 1e9:.3f} GB)"
    if bound < need_bytes:
        raise DataFormatError(
            f"{directory}: {what} cannot hold the shards the pipeline reads at once "
            f"({need_bytes / 1e9:.3f} GB); raise data.cache_gb or free disk space"
        )
    return bound
