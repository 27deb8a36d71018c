"""TensorFlow for the input pipeline, imported on first use with the accelerators
hidden from it (JAX owns them), as the Flax examples do."""

from __future__ import annotations

import os
import threading
from typing import Any

_TF_LOCK = threading.Lock()
_TF_READY = False


def tensorflow() -> Any:
    """The tensorflow module, accelerators hidden from it."""
    global _TF_READY
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    with _TF_LOCK:
        if not _TF_READY:
            for kind in ("GPU", "TPU"):
                try:
                    tf.config.set_visible_devices([], kind)
                except (RuntimeError, ValueError):
                    pass  # already initialised, or no such device type
            _TF_READY = True
    return tf
