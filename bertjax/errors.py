"""Error messages on one line: what a command prints after `error:`."""

from __future__ import annotations


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """An exception's message (or a text) on one line, at most `limit` characters and
    "..." (Orbax's, tensorstore's and TensorFlow's span several); the exception's type
    name when it has no message."""
    text = " ".join(str(e).split())
    if not text:
        return type(e).__name__ if isinstance(e, BaseException) else ""
    return text[:limit] + ("..." if len(text) > limit else "")


class TrainingError(ValueError):
    """The run cannot go on (diverged, or config and workdir disagree); one line says why."""
