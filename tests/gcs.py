"""A local Cloud Storage emulator for the tests (the `gcp-storage-emulator` package, run
by tests/gcs_emulator.py).

Importing this module (tests/conftest.py does, before any test imports gcsfs or
TensorStore) picks a free port on 127.0.0.1 and points every client at it:
STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage), TENSORSTORE_GCS_HTTP_URL
(TensorStore, under Orbax). The server starts on first use (`bucket()`), once per test
process, in memory; subprocesses the tests start inherit the variables and talk to the
same server. Each `bucket()` is a new, empty bucket.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import uuid

_server: subprocess.Popen | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One server per test process (each pytest-xdist worker its own), whatever the parent's.
PORT = _free_port()
URL = f"http://127.0.0.1:{PORT}"
os.environ["STORAGE_EMULATOR_HOST"] = URL
os.environ["TENSORSTORE_GCS_HTTP_URL"] = URL
# gcsfs's hierarchical-namespace layer asks a control-plane API the emulator lacks.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


def start() -> None:
    """Starts the emulator (once per process) and waits until it answers."""
    global _server
    if _server is not None and _server.poll() is None:
        return
    # Stopped at exit, after the handlers that clients registered later (atexit runs
    # them last-in first-out), so that no request of theirs meets a closed port.
    atexit.register(stop)
    _server = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "gcs_emulator.py"), str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _server.poll() is not None:
            raise RuntimeError("the Cloud Storage emulator exited at start")
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the Cloud Storage emulator did not answer on {URL} in 60 s")


def stop() -> None:
    global _server
    if _server is not None:
        _server.terminate()
        try:
            _server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _server.kill()
        _server = None


def bucket() -> str:
    """gs://NAME of a new, empty bucket on the emulator."""
    import fsspec

    start()
    name = f"bertjax-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("gs").mkdir(name)  # a bucket: no scheme, no slash
    return f"gs://{name}"
