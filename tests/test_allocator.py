"""The host allocator (bertjax/allocator.py): which library `python -m bertjax` preloads,
and that re-executing with it keeps the command line and happens once."""

from __future__ import annotations

import os
import sys

import pytest
from clilib import bertjax, environ, python

from bertjax import allocator


def _fake_lib(directory, name="libtcmalloc_minimal.so.4") -> str:
    path = os.path.join(str(directory), name)
    open(path, "wb").close()
    return path


def test_auto_finds_tcmalloc_in_the_first_directory_that_has_one(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lib = _fake_lib(tmp_path / "b", "libtcmalloc.so.4")
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert allocator.choose({}, dirs, "linux") == lib
    assert allocator.choose({"BERTJAX_ALLOCATOR": "auto"}, dirs, "linux") == lib
    # minimal is preferred where both are
    minimal = _fake_lib(tmp_path / "b")
    assert allocator.choose({}, dirs, "linux") == minimal


def test_nothing_to_do(tmp_path):
    dirs = [str(tmp_path)]
    assert allocator.choose({}, dirs, "linux") is None  # none installed
    _fake_lib(tmp_path)
    assert allocator.choose({"BERTJAX_ALLOCATOR": "system"}, dirs, "linux") is None
    assert allocator.choose({}, dirs, "darwin") is None
    # already re-executed once, or the user preloads an allocator of their own
    assert allocator.choose({"BERTJAX_ALLOCATOR_PRELOADED": "x"}, dirs, "linux") is None
    assert allocator.choose({"LD_PRELOAD": "/opt/libjemalloc.so.2"}, dirs, "linux") is None


def test_an_explicit_path_must_exist(tmp_path):
    lib = _fake_lib(tmp_path, "libmine.so")
    env = {"BERTJAX_ALLOCATOR": lib}
    assert allocator.choose(env, [], "linux") == lib
    assert allocator.choose({**env, "LD_PRELOAD": f"/x.so:{lib}"}, [], "linux") is None
    with pytest.raises(ValueError, match=r"^BERTJAX_ALLOCATOR=/no/such\.so: no such file"):
        allocator.choose({"BERTJAX_ALLOCATOR": "/no/such.so"}, [], "linux")


def _libc() -> str:
    """The C library this interpreter has mapped: preloading it changes nothing."""
    with open("/proc/self/maps", encoding="utf-8") as f:
        paths = {ln.split()[-1] for ln in f if "/libc.so" in ln or "/libc-" in ln}
    return sorted(paths)[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_reexec_keeps_the_command_line_sets_the_preload_and_runs_once():
    lib = _libc()
    child = (
        "import os, sys; from bertjax import allocator; "
        "print(os.getpid(), sys.argv[1:], os.environ['LD_PRELOAD'], "
        "os.environ['BERTJAX_ALLOCATOR_PRELOADED'], flush=True); "
        "allocator.reexec([sys.executable, '-c', 'print(\"again\")'])"
    )
    script = (
        "import os, sys; from bertjax import allocator; print(os.getpid(), flush=True); "
        f"allocator.reexec([sys.executable, '-c', {child!r}, 'a b', '--x=1'])"
    )
    proc = python("-c", script, env=environ(BERTJAX_ALLOCATOR=lib), ok=True)
    first, second = proc.stdout.strip().splitlines()
    pid = first
    assert second == f"{pid} ['a b', '--x=1'] {lib} {lib}", second  # same process
    assert "again" not in proc.stdout  # the re-executed process did not do it twice


def test_a_command_with_a_missing_library_fails_in_one_line_before_any_work():
    proc = bertjax(
        "describe",
        "--config=configs/pretrain.py:bert_tiny",
        env=environ(BERTJAX_ALLOCATOR="/no/such.so"),
        ok=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: BERTJAX_ALLOCATOR=/no/such.so: no such file (expected auto, system or the "
        "path of a shared library such as libtcmalloc_minimal.so.4)"
    ]
