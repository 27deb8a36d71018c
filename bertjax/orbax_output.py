"""What Orbax and TensorStore print, brought to one line: why a read failed
(`read_error`), a read whose failure leaves thousands of lines of tracebacks and freed
coroutines behind (`quiet_read`), and a background save's output held until it commits
or fails (`HeldBackgroundOutput`). bertjax/checkpoint.py and bertjax/modeldir.py read
and write through them."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import re
import sys
import threading
import time
from typing import Any

from bertjax import paths
from bertjax.errors import one_line


def read_error(e: BaseException) -> str:
    """Why an Orbax read failed, on one line: tensorstore's own message when the chain
    holds one ('Error reading "opt_state.2.mu.…kernel/0.0" in OCDBT database at local
    file "DIR": ZSTD_decompressStream() failed: Data corruption detected'), which names
    the array and the file, rather than Orbax's wrapper around it."""
    seen, x = [], e
    while x is not None and len(seen) < 8:
        seen.append(x)
        x = x.__cause__ or x.__context__
    for x in seen:
        found = re.search(r"\b(Error (?:reading|writing) .*)", one_line(x, 2000))
        if found:
            return found.group(1)[:400]
    return one_line(e)


class ReadError(Exception):
    """An Orbax read failed; the message is `read_error`'s line for it."""


def _from_orbax(obj: Any) -> bool:
    """Whether `obj` is a coroutine, generator or frame of Orbax's or TensorStore's code."""
    code = (
        getattr(obj, "cr_code", None)
        or getattr(obj, "gi_code", None)
        or getattr(obj, "f_code", None)
    )
    name = getattr(code, "co_filename", "")
    return any(f"{os.sep}{pkg}{os.sep}" in name for pkg in ("orbax", "tensorstore"))


class _UnretrievedReadErrors(logging.Filter):
    """Drops asyncio's "Future/Task exception was never retrieved" for an exception of
    Orbax's or TensorStore's (a failed read gathers many reads: the first failure is
    raised, the others' futures are freed later with their exceptions unseen); asyncio's
    other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "exception was never retrieved" not in message:
            return True
        if re.search(r"\bError (?:reading|writing) \"", message):  # TensorStore's form
            return False
        tb = record.exc_info[2] if record.exc_info else None
        while tb is not None:
            if _from_orbax(tb.tb_frame):
                return False
            tb = tb.tb_next
        return True


def _drop_failed_read_leftovers() -> None:
    """From the first failed read on, the coroutines and futures it left are freed
    silently whenever that happens (a fixed wait cannot tell when, on a loaded machine):
    Python reports a coroutine that fails while being freed through
    sys.unraisablehook, which this wraps to drop Orbax's and TensorStore's and pass on
    everything else; asyncio logs a future whose exception nobody retrieved, which a
    filter on its logger drops for the same code (`_UnretrievedReadErrors`)."""
    previous = sys.unraisablehook
    if getattr(previous, "bertjax_quiet", False):
        return
    logging.getLogger("asyncio").addFilter(_UnretrievedReadErrors())

    def hook(unraisable: Any) -> None:
        if not _from_orbax(unraisable.object):
            previous(unraisable)

    hook.bertjax_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def quiet_read(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), an Orbax read. A failed read also makes tensorstore's threads
    print tracebacks ("Event loop is closed") through sys.stderr, and leaves coroutines
    that print "Exception ignored in: <coroutine ...>" with the whole TensorStore spec
    (thousands of lines) when they are freed: both are held back while it runs (the
    coroutines are freed here, by dropping the original exception), shown only if it
    succeeds. A failure is re-raised as a ReadError of one line."""
    held = io.StringIO()
    with contextlib.redirect_stderr(held):
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- Orbax / tensorstore errors of every kind
            message = read_error(e)
            del e
            _drop_failed_read_leftovers()
            time.sleep(0.5)  # the failed read's threads finish printing into `held`
            gc.collect()  # its coroutines report while stderr is still held
            raise ReadError(message) from None
    sys.stderr.write(held.getvalue())
    return out


# What Orbax warns about on every read of another run's checkpoints (a branch, `average`,
# `evaluate`), none of it a problem for bertjax, which verifies what it reads itself.
_CHATTER = re.compile(
    r"CheckpointManagerOptions\.read_only=True, setting save_interval_steps=0"
    r"|Given directory is read only="
    r"|Metadata file does not exist: \S*_CHECKPOINT_METADATA$"
)


class _OrbaxChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING
            and "orbax" in record.pathname
            and _CHATTER.match(record.getMessage())
        )


def quiet_orbax_warnings() -> None:
    """Drops Orbax's warnings that read-only use always prints (`_CHATTER`); its other
    warnings pass. Idempotent."""
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxChatter) for f in logger.filters):
        logger.addFilter(_OrbaxChatter())


class HeldBackgroundOutput(logging.Filter):
    """While a save runs in the background, what Orbax logs at ERROR and what threads
    other than the main one print to sys.stderr are held: written out when the save
    commits, into a file when it fails (one tensorstore failure prints dozens of
    tracebacks, `SaveError` says it in one line)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []
        self._stderr: Any = None
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or "orbax" not in record.pathname:
            return True
        text = f"{record.levelname}:{record.name}:{record.getMessage()}\n"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info) + "\n"
        with self._lock:
            self.held.append(text)
        return False

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self._stderr.write(text)
        with self._lock:
            self.held.append(text)
        return len(text)

    def flush(self) -> None:
        self._stderr.flush()

    def __getattr__(self, name: str) -> Any:  # the rest of the file protocol
        return getattr(self._stderr, name)

    def start(self) -> None:
        if self._stderr is None:
            self._stderr, sys.stderr = sys.stderr, self
            logging.getLogger("absl").addFilter(self)

    def stop(self, into: str | None = None) -> None:
        """Stops holding; what was held goes to sys.stderr, or to the file `into`."""
        with self._lock:
            text, self.held = "".join(self.held), []
        if self._stderr is not None:
            sys.stderr, self._stderr = self._stderr, None
            logging.getLogger("absl").removeFilter(self)
        if text and into is None:
            sys.stderr.write(text)
        elif text:
            try:
                if not paths.is_remote(into):
                    os.makedirs(os.path.dirname(into), exist_ok=True)
                previous = paths.read_text(into) if paths.exists(into) else ""
                paths.write_text(into, previous + text)
            except (OSError, ValueError):  # the disk that failed the save may be full
                with contextlib.suppress(OSError):
                    paths.remove(into)
