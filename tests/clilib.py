"""The one way the tests start a process: `bertjax(*args)` runs `python -m bertjax ARGS`,
`python(*args)` any Python command line, `run(cmd)` any command, each to completion;
`start(cmd)` returns the running Popen, for the tests that signal a process, watch it or
run several at once. Each runs from the repository root with PYTHONPATH there and
TensorFlow's start-up chatter off; `devices=N` runs JAX on N simulated CPU devices.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERTJAX = [sys.executable, "-m", "bertjax"]


def environ(devices: int | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a child, then `extra`. With `devices`, JAX on that
    many simulated CPU devices, and XLA's optimisation off: a test compiles many tiny
    programs, and level 0 halves compile times with IEEE-exact arithmetic."""
    return {**_environ(None, devices), **extra}


def _environ(env: dict[str, str] | None, devices: int | None) -> dict[str, str]:
    base = env if env is not None else {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = {**base, "PYTHONPATH": ROOT}
    if devices is not None:
        out.update(
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
            "--xla_backend_optimization_level=0",
        )
    return out


def run(
    cmd: Sequence[str],
    *,
    ok: bool | None = None,
    devices: int | None = None,
    env: dict[str, str] | None = None,
    cwd: str = ROOT,
    timeout: float = 600,
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """Runs `cmd` to completion; stdout and stderr captured as text. `ok`: True asserts
    exit status 0, False a non-zero one (the output's tail in the message), None checks
    nothing. `env`: the environment instead of this process's (PYTHONPATH is set either
    way); `devices`: see environ(); `cwd`: where it runs (the repository root)."""
    r = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=_environ(env, devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if ok is True:
        assert r.returncode == 0, r.stderr[-3000:]
    elif ok is False:
        assert r.returncode != 0, r.stdout[-3000:]
    return r


def bertjax(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Runs `python -m bertjax *args` (run() says what the keywords do)."""
    return run([*BERTJAX, *args], **kwargs)


def python(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Runs `python *args` with this interpreter: a script, `-c CODE`, `-m MODULE`."""
    return run([sys.executable, *args], **kwargs)


def start(
    cmd: Sequence[str],
    *,
    devices: int | None = None,
    env: dict[str, str] | None = None,
    cwd: str = ROOT,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
) -> subprocess.Popen:
    """Starts `cmd` and returns it running, text mode, stdout and stderr to pipes unless
    given (a file, or subprocess.STDOUT for stderr). The caller waits for it, or kills it."""
    return subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=_environ(env, devices),
        stdout=stdout,
        stderr=stderr,
        text=True,
    )
