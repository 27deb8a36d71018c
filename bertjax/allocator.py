"""The host memory allocator: tcmalloc when the system has it (docs/troubleshooting.md).

XLA:CPU allocates its temporary buffers afresh at every execution of a step. Under the C
library's malloc, buffers that large are mmap'ed and unmapped each time, so every step
page-faults all of them in again: measured on the 2-core development CPU, `bert_mini`
fine-tuning took 100,000 minor page faults and ~200 ms of system time a step, 540 ms a
step against 380 ms with tcmalloc, which keeps freed memory for the next step
(benchmarks/RESULTS.md). On accelerators the host allocator matters less; tcmalloc is
what Cloud TPU's own guides preload too.

`python -m bertjax` therefore re-executes itself, once, with tcmalloc in LD_PRELOAD
when a tcmalloc library is installed (Debian/Ubuntu: `apt install libtcmalloc-minimal4`)
and LD_PRELOAD holds none. BERTJAX_ALLOCATOR chooses:

  (unset), auto   tcmalloc when found, else the C library's malloc
  system          never preload anything
  PATH            preload this shared library (it must exist)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

ENV = "BERTJAX_ALLOCATOR"
DONE = "BERTJAX_ALLOCATOR_PRELOADED"  # set in the re-executed process: never twice
NAMES = (
    "libtcmalloc_minimal.so.4",
    "libtcmalloc.so.4",
    "libtcmalloc_minimal.so",
    "libtcmalloc.so",
)


def library_dirs(prefix: str = sys.prefix) -> list[str]:
    """Where a tcmalloc library is looked for: the environment's lib/ (conda), then the
    system's library directories."""
    dirs = [os.path.join(prefix, "lib")]
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        dirs.append(os.path.join(conda, "lib"))
    return dirs + [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ]


def find_tcmalloc(dirs: Sequence[str]) -> str | None:
    """The first tcmalloc library in `dirs`, or None."""
    for d in dirs:
        for name in NAMES:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
    return None


def choose(env: Mapping[str, str], dirs: Sequence[str], platform: str = sys.platform) -> str | None:
    """The library to preload before this process goes on, or None (nothing to do).
    ValueError (one line naming BERTJAX_ALLOCATOR) for a path that does not exist."""
    want = env.get(ENV, "auto").strip() or "auto"
    if want == "system" or env.get(DONE) or not platform.startswith("linux"):
        return None
    preloaded = env.get("LD_PRELOAD", "")
    if want == "auto":
        if "tcmalloc" in preloaded or "jemalloc" in preloaded:
            return None  # the user chose an allocator already
        return find_tcmalloc(dirs)
    if not os.path.isfile(want):
        raise ValueError(
            f"{ENV}={want}: no such file (expected auto, system or the path of a shared "
            "library such as libtcmalloc_minimal.so.4)"
        )
    return None if want in preloaded.split(":") else want


def reexec(argv: Sequence[str] | None = None) -> None:
    """Replaces this process by itself with the chosen allocator preloaded (same pid,
    arguments, interpreter options and open files); returns when there is nothing to do."""
    library = choose(os.environ, library_dirs())
    if library is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    env[DONE] = library
    # tcmalloc reports every allocation over 1 GiB on stderr by default: not a problem here.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 60))
    argv = list(argv if argv is not None else sys.orig_argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def describe() -> str:
    """The allocator this process runs with, for benchmark headers."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            maps = f.read()
    except OSError:
        return "unknown (no /proc/self/maps)"
    for name in ("tcmalloc", "jemalloc"):
        if name in maps:
            path = next(ln.split()[-1] for ln in maps.splitlines() if name in ln)
            return f"{name} ({path})"
    return (
        "the C library's malloc (CPU steps are faster with tcmalloc: "
        "apt install libtcmalloc-minimal4; docs/troubleshooting.md)"
    )
