"""Finding and reading an original Google TF checkpoint (google.py converts it).

A directory (or its `variables/`, as TF-Hub modules store it) or a checkpoint prefix
becomes one checkpoint prefix (`find_checkpoint`); `Reader` gives its variables'
names and shapes and reads tensors on demand as float32; the variables that only
training needs (optimizer slots, counters) are told apart (`training_only`), and the
family is the one whose `google.marker` the variables carry (`checkpoint_family`).
Config and vocabulary files next to the checkpoint are found with
`search_dirs`/`first_file`.

TensorFlow is imported only when a checkpoint is read.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from bertjax.convert.hf import ConversionError
from bertjax.models.family import Family
from bertjax.models.registry import FAMILIES

# Variables that only training needs: optimizer slots and counters. Matched on the
# whole name, or on the last path component (`bert/.../kernel/adam_m`).
_TRAINING_ONLY_NAMES = frozenset(
    {
        "global_step",
        "beta1_power",
        "beta2_power",
        "good_steps",
        "loss_scale",
        "current_loss_scale",
        "_CHECKPOINTABLE_OBJECT_GRAPH",
    }
)
_TRAINING_ONLY_LEAVES = frozenset(
    {
        "adam_m",
        "adam_v",
        "lamb_m",
        "lamb_v",
        "Adam",
        "Adam_1",
        "Momentum",
        "Adagrad",
        "AdamWeightDecayOptimizer",
        "AdamWeightDecayOptimizer_1",
        "ExponentialMovingAverage",
    }
)


# --- files -----------------------------------------------------------------------------


def _checkpoint_in(directory: str) -> str | None:
    """The checkpoint prefix in `directory`: the one the `checkpoint` state file names
    (its directory part ignored: it is often a gs:// path from training), else the only
    `*.index`, else `*-best`, else the highest `-N` step."""
    if not os.path.isdir(directory):
        return None
    state = os.path.join(directory, "checkpoint")
    if os.path.isfile(state):
        with open(state, "rb") as f:
            text = f.read(1 << 16).decode("utf-8", "replace")
        m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.M)
        if m:
            prefix = os.path.join(directory, re.split(r"[/\\]", m.group(1))[-1])
            if os.path.isfile(prefix + ".index"):
                return prefix
    prefixes = sorted(
        os.path.join(directory, f[: -len(".index")])
        for f in os.listdir(directory)
        if f.endswith(".index")
    )
    if len(prefixes) <= 1:
        return prefixes[0] if prefixes else None
    best = [p for p in prefixes if p.endswith("-best")]
    if len(best) == 1:
        return best[0]
    steps = {p: int(m.group(1)) for p in prefixes if (m := re.search(r"-(\d+)$", p))}
    if len(steps) == len(prefixes):
        return max(steps, key=steps.__getitem__)
    names = ", ".join(os.path.basename(p) for p in prefixes)
    raise ConversionError(
        f"{directory}: several TF checkpoints ({names}); pass the "
        "directory of one, or a checkpoint prefix"
    )


def find_checkpoint(path: str) -> str:
    """A checkpoint prefix from a directory (or `variables/` inside it, as TF-Hub
    modules store it) or from a prefix itself."""
    if os.path.isfile(path + ".index"):
        return path
    for directory in (path, os.path.join(path, "variables")):
        prefix = _checkpoint_in(directory)
        if prefix:
            return prefix
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such directory")
    raise ConversionError(f"{path}: no TensorFlow checkpoint (*.index) found")


def is_google_checkpoint(directory: str) -> bool:
    """Whether `directory` (or its `variables/`) holds a TF checkpoint, i.e. a `*.index`
    file, or is a checkpoint prefix; reads no tensors. `load` says which one it takes."""
    if os.path.isfile(directory + ".index"):
        return True
    return any(
        os.path.isdir(d) and any(f.endswith(".index") for f in os.listdir(d))
        for d in (directory, os.path.join(directory, "variables"))
    )


def search_dirs(path: str, prefix: str) -> list[str]:
    base = path if os.path.isdir(path) else os.path.dirname(prefix)
    dirs = [base, os.path.join(base, "assets"), os.path.dirname(prefix)]
    return list(dict.fromkeys(os.path.normpath(d) for d in dirs))


def first_file(dirs: list[str], names: tuple[str, ...]) -> str | None:
    for name in names:
        for d in dirs:
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
    return None


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot read JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return obj


class Reader:
    """Names and shapes of a TF checkpoint, tensors read on demand as float32."""

    def __init__(self, prefix: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        self.prefix = prefix
        try:
            self._reader = tf.train.load_checkpoint(prefix)
            raw = self._reader.get_variable_to_shape_map()
        except Exception as e:  # noqa: BLE001 - any TF failure means "unreadable file"
            raise ConversionError(f"{prefix}: cannot read TF checkpoint ({_one_line(e)})") from None
        # TF-Hub modules exported from a checkpoint may carry a module/ scope.
        self.original = {n[len("module/") :] if n.startswith("module/") else n: n for n in raw}
        self.shapes = {n: tuple(int(d) for d in raw[o]) for n, o in self.original.items()}

    def get(self, name: str) -> np.ndarray:
        try:
            arr = np.asarray(self._reader.get_tensor(self.original[name]))
        except Exception as e:  # noqa: BLE001 - truncated or corrupt data files
            raise ConversionError(
                f"{self.prefix}: cannot read variable {name} ({_one_line(e)})"
            ) from None
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype.name != "bfloat16":
            raise ConversionError(
                f"{self.prefix}: variable {name} has dtype {arr.dtype}, expected floating point"
            )
        return arr.astype(np.float32)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def training_only(name: str) -> bool:
    return name in _TRAINING_ONLY_NAMES or name.rsplit("/", 1)[-1] in _TRAINING_ONLY_LEAVES


def checkpoint_family(reader: Reader) -> Family:
    """The family whose `google.marker` the variables carry (the longest matching one:
    ALBERT's bert/encoder/transformer/ before BERT's bert/)."""
    records = sorted(
        (f for f in FAMILIES.values() if f.google), key=lambda f: -len(f.google.marker)
    )
    for fam in records:
        if any(n.startswith(fam.google.marker) for n in reader.shapes):
            return fam
    markers = ", ".join(f.google.marker for f in records)
    raise ConversionError(
        f"{reader.prefix}: no variables under {markers}; not a Google "
        "BERT, ALBERT or ELECTRA pretraining checkpoint"
    )
