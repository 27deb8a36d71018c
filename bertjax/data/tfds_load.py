"""TensorFlow Datasets builders, prepared without hanging on a machine that cannot reach
the dataset's servers (a TPU VM without egress, a cluster behind a firewall).

tensorflow-datasets retries each download 10 times with exponential backoff and no
timeout, printing urllib3 warnings and progress bars for minutes before it gives up.
`prepared_builder` lets a download fail within seconds instead, and says in one line
which dataset could not be had and where its prepared files would be found.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

# A download that cannot connect or stalls this long fails (urllib3 falls back to the
# socket default timeout when requests passes none, as tensorflow-datasets does).
_TIMEOUT_S = 30.0
# Retries of one download: enough for a dropped connection, not for a missing network.
_RETRIES = 2


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """tfds' absl warnings (an empty variant folder) and urllib3's retry warnings stay
    off stderr, where a failure's one line must stand alone; errors still show."""
    loggers = [logging.getLogger(n) for n in ("absl", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _bounded_downloads() -> Iterator[None]:
    from tensorflow_datasets.core.download import downloader

    retries, timeout = downloader.MAX_RETRIES, socket.getdefaulttimeout()
    downloader.MAX_RETRIES = _RETRIES
    socket.setdefaulttimeout(_TIMEOUT_S)
    try:
        with _quiet():
            yield
    finally:
        downloader.MAX_RETRIES = retries
        socket.setdefaulttimeout(timeout)


def _network_error(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is a failure to reach a server."""
    import requests

    while e is not None:
        if isinstance(
            e,
            (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                socket.timeout,
                ConnectionError,
                socket.gaierror,
            ),
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


def prepared_builder(name: str, data_dir: str | None = None) -> Any:
    """`tfds.builder(name, data_dir)`, downloaded and prepared if it is not yet
    (`prepare`)."""
    import tensorflow_datasets as tfds

    with _quiet():
        builder = tfds.builder(name, data_dir=data_dir)
    return prepare(builder, name)


def prepare(builder: Any, name: str) -> Any:
    """`builder.download_and_prepare()` when its data is not there yet, returning the
    builder. A dataset that cannot be downloaded is a ValueError of one line naming it
    (`name`) and the directory its prepared files belong in."""
    with _quiet():  # it logs an empty variant folder as a warning
        if builder.is_prepared():
            return builder
    import tensorflow_datasets as tfds

    # tfds' progress bars go to stderr, where a failure's one line must stand alone.
    tfds.disable_progress_bar()
    print(
        f"downloading and preparing TFDS dataset {name!r} into {builder.data_dir} (once)",
        flush=True,
    )
    try:
        with _bounded_downloads():
            builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 -- requests, urllib3, tfds errors of every kind
        if not _network_error(e):
            raise
        reason = " ".join(str(e).split())[:160]
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and cannot be "
            f"downloaded here ({reason}): prepare it on a machine with the internet "
            f"(tfds.builder({name!r}).download_and_prepare()) and copy its directory there, "
            "or set TFDS_DATA_DIR to where a copy is"
        ) from None
    return builder
