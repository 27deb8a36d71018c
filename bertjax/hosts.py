"""What the hosts of a run do together: a termination signal turned into a flag the loop
polls, flags agreed on by every host, a global array's value on every host, and lines
printed once (by host 0)."""

from __future__ import annotations

import signal
from typing import Any

import jax
import numpy as np


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop polls between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def any_host(*flags: bool) -> Any:
    """Each flag True on every host if it is True on any (a collective: every host must
    call it); one flag gives a bool, several a tuple."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))
        flags = tuple(bool(f) for f in np.any(np.reshape(gathered, (-1, len(flags))), axis=0))
    return flags[0] if len(flags) == 1 else tuple(flags)


def to_host(x: Any) -> Any:
    """A global array's whole value on every host (numpy)."""
    if jax.process_count() == 1:
        return jax.device_get(x)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(x, tiled=True)


def log(msg: str) -> None:
    """`msg` on stdout, once: by host 0."""
    if jax.process_index() == 0:
        print(msg, flush=True)
