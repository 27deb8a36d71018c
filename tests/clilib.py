"""The one way the tests run a command: `python -m bertjax ARGS` in a subprocess, from
the repository root, with TensorFlow's start-up chatter off."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bertjax(
    *args: str,
    ok: bool | None = None,
    env: dict[str, str] | None = None,
    cwd: str = ROOT,
    timeout: float = 600,
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """Runs `python -m bertjax *args`; stdout and stderr captured as text. `ok`: True
    asserts exit status 0, False a non-zero one (stderr in the message), None checks
    nothing. `env`: the environment instead of this process's (PYTHONPATH is set);
    `cwd`: where it runs (the repository root)."""
    base = env if env is not None else {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(
        [sys.executable, "-m", "bertjax", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": ROOT},
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
