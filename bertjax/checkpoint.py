"""Training checkpoints (model directories: bertjax/modeldir.py).

A *training checkpoint* is one step of WORKDIR/checkpoints, an Orbax
`CheckpointManager` directory (`TrainCheckpoints`):

  WORKDIR/checkpoints/<step>/state/   the train state (bertjax/steps.py): params,
                                      optimizer state, step, skip counters
  WORKDIR/checkpoints/<step>/data/    JSON: the data position {"phase", "pipeline"}
  WORKDIR/checkpoints/<step>/meta/    JSON: the model config, to refuse a mismatched
                                      resume; `state_digest`: per state leaf, a
                                      fingerprint of its bits taken when it was saved;
                                      the task's record of its data ("data": each
                                      phase's path and manifest digest)

WORKDIR may be a gs:// URL: Orbax writes there itself (TensorStore for arrays, etils
epath over fsspec for its small files), and the rest goes through bertjax/paths.py.

Orbax writes a step under a temporary name and renames it when every item (and, on
several hosts, every host) is done, so an interrupted save never looks like a
checkpoint; leftovers are removed when the next run opens the directory.

Integrity. A committed step can still be damaged later (a flipped bit on disk, a file
truncated or deleted by hand). Resume therefore verifies what it restored: every leaf's
fingerprint against `state_digest` (computed on the devices from the restored arrays,
so nothing is read twice) and every value finite. A step that fails, or that Orbax
cannot read, is moved to WORKDIR/damaged_checkpoints/<step> (never deleted) and the
next older one is tried (bertjax/train.py). Rotation (`max_to_keep`) never deletes the
step a run resumed from, so a good checkpoint survives until a newer one was written,
nor the steps a `keep` policy names (train.keep_every, train.keep_every_tokens).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bertjax import paths
from bertjax.errors import one_line
from bertjax.orbax_output import (
    HeldBackgroundOutput,
    quiet_orbax_warnings,
    quiet_read,
    read_error,
)

# --- training checkpoints --------------------------------------------------------------

_JOIN_TIMEOUT_S = 600  # how long a failed save's remaining writes are waited for
DAMAGED = "damaged_checkpoints"  # beside WORKDIR/checkpoints: steps that failed verification


class NonFiniteStateError(ValueError):
    """A train state with NaN or Inf values was about to be saved."""


class SaveError(OSError):
    """A checkpoint could not be written (disk full, permissions, a lost bucket)."""


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """Two position-weighted sums of a leaf's bits, modulo 2**32 ([2] uint32).

    Each element's bits (as uint32) are multiplied by an odd number derived from its
    index and summed: one flipped bit changes an element by +-2**k and so each sum by
    2**k times an odd number, never 0 modulo 2**32; independent damage in several places
    goes unnoticed with probability ~2**-64. Elementwise over the leaf's own shape (no
    reshape), so it runs on sharded arrays as they lie, on any mesh, with the same result.
    """
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    index = jnp.zeros(bits.shape, jnp.uint32)
    for d, n in enumerate(bits.shape):
        index = index * jnp.uint32(n) + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, d)
    m1 = index * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15) | jnp.uint32(1)
    m2 = (index ^ jnp.uint32(0x5BD1E995)) * jnp.uint32(0x85EBCA6B) | jnp.uint32(1)
    return jnp.stack([jnp.sum(bits * m1, dtype=jnp.uint32), jnp.sum(bits * m2, dtype=jnp.uint32)])


def _check_state(state: Any) -> tuple[jax.Array, Any]:
    """(every floating-point value finite, the fingerprint of every leaf)."""
    from bertjax.steps import all_finite

    return all_finite(state), jax.tree.map(_leaf_fingerprint, state)


def _leaf_name(path: tuple[Any, ...]) -> str:
    names = (getattr(k, a) for k in path for a in ("key", "idx", "name") if hasattr(k, a))
    return "/".join(str(n) for n in names)


def _digest(fingerprints: Any) -> dict[str, str]:
    """{leaf name: 16 hex digits}, as `state_digest` is stored."""
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(fingerprints))[0]
    return {_leaf_name(p): "".join(f"{int(v):08x}" for v in np.asarray(f)) for p, f in flat}


def _save_error_words(e: BaseException) -> str:
    """ "FILE: what the OS said" for an OSError or a tensorstore write error, else the
    message on one line."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = one_line(e, 2000)
    code = re.search(r"os_error_code='(\d+)'", text)
    path = re.search(r'Failed writing: "([^"]+)"', text) or re.search(r'local file "([^"]+)"', text)
    if code and path:
        return f"{path.group(1)}: {os.strerror(int(code.group(1)))}"
    return text[:300]


class _KeepLatestAndResumed:
    """Orbax preservation policy: the newest `n` steps, the step this run resumed from
    (its digest was verified), whatever their number, and every step `keep(step)` says
    to keep (a stable phase's branch points, bertjax/experiment.py `kept_steps`)."""

    def __init__(self, n: int, keep: Callable[[int], bool] | None = None) -> None:
        self.n, self.resumed, self.keep = n, None, keep or (lambda step: False)

    def should_preserve(self, checkpoints: Any, *, context: Any) -> list[bool]:
        del context
        first = len(checkpoints) - self.n
        return [
            i >= first or c.step == self.resumed or self.keep(c.step)
            for i, c in enumerate(checkpoints)
        ]


class TrainCheckpoints:
    """Orbax CheckpointManager over the train state, the data position and the model config.

    save() refuses a state with any non-finite value, so no such checkpoint is ever
    committed, and records the state's fingerprint (`state_digest`) for `verify`. With
    `async_save`, save() returns once the arrays are copied to host memory and the files
    are written in the background; `failed_save()` says, between steps, whether that
    write failed; `wait()` blocks until the last save is committed. Every host must call
    save() and restore() with the same step.
    """

    def __init__(
        self,
        directory: str,
        max_to_keep: int = 3,
        async_save: bool = True,
        keep: Callable[[int], bool] | None = None,
        read_only: bool = False,
    ) -> None:
        """`keep`: steps rotation never deletes; `read_only`: another run's checkpoints,
        read and never written (no directory created, no leftover removed)."""
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = paths.absolute(directory)
        paths.forget_listings(self.directory)  # steps other processes saved since
        quiet_orbax_warnings()
        self._keep = _KeepLatestAndResumed(max_to_keep, keep)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=self._keep,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "meta")
        )
        self._check = jax.jit(_check_state)
        self._pending: int | None = None  # the step being written in the background
        self._output = HeldBackgroundOutput()

    def latest_step(self) -> int | None:
        """The newest committed step, or None (incomplete saves are never listed)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def step_dir(self, step: int) -> str:
        return paths.join(self.directory, str(step))

    def save(self, step: int, state: Any, data: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Saves `state` (a pytree of jax.Arrays) as step `step`; NonFiniteStateError if
        any floating-point value in it is NaN or Inf (nothing is written then);
        SaveError if the write fails (at once when saving synchronously, else from
        `failed_save()` or `wait()`)."""
        finite, fingerprints = self._check(state)
        if not bool(finite):
            raise NonFiniteStateError(
                f"{self.directory}: the train state at step {step} holds NaN or Inf values; "
                "not saving it"
            )
        ocp = self._ocp
        self.wait()  # the previous save, so that its failure is reported as its own
        self._output.start()
        self._pending = step
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave(dict(data)),
                    meta=ocp.args.JsonSave({**meta, "state_digest": _digest(fingerprints)}),
                ),
                force=True,
            )
        except Exception as e:  # noqa: BLE001 -- OSError, tensorstore's ValueError, ...
            self._fail(e)
        if not self._manager.is_saving_in_progress():
            self.wait()

    def failed_save(self) -> SaveError | None:
        """The error of the background save if it has ended and failed, else None (it
        is still running, or it committed). Cheap: call it between steps."""
        if self._pending is None or self._manager.is_saving_in_progress():
            return None
        try:
            self.wait()
        except SaveError as e:
            return e
        return None

    def wait(self) -> None:
        """Blocks until every started save is committed; SaveError if one failed."""
        if self._pending is None:
            return
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- what the background write raised
            self._fail(e)
        if not paths.isdir(self.step_dir(self._pending)):  # not committed, no error seen
            self._fail(RuntimeError("the checkpoint was not committed"))
        self._pending = None
        self._output.stop()

    def _fail(self, e: BaseException) -> None:
        step, self._pending = self._pending, None
        self._join_failed_writes()
        self._output.stop(
            into=paths.join(paths.dirname(self.directory), "logs", f"save_error_{step}.log")
        )
        raise SaveError(
            f"checkpoint {step} could not be written ({_save_error_words(e)})"
        ) from None

    def _join_failed_writes(self) -> None:
        """Waits for the writes of a failed save that are still running: Orbax stops
        waiting at the first item that fails, while the other items' writes go on in
        threads and would land in a later save of the same step (in this process).
        Best effort over Orbax internals (0.12): nothing to join if they change."""
        checkpointer = getattr(self._manager, "_checkpointer", None)
        background = getattr(checkpointer, "_async_manager", None)
        for f in getattr(background, "_commit_futures", None) or ():
            with contextlib.suppress(Exception):
                f.result(timeout=_JOIN_TIMEOUT_S)

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(state, data, meta) of `step`, the state laid out as `target` says.

        target: ShapeDtypeStructs with shardings (`sharding.abstract_state`), possibly of
        another mesh or device count than the one that saved: Orbax reshards.
        """
        ocp = self._ocp
        restored = quiet_read(
            self._manager.restore,
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], dict(restored["data"]), dict(restored["meta"])

    def restore_on_host(self, step: int) -> tuple[Any, dict[str, Any]]:
        """(state as numpy arrays, meta) of `step`, read onto this process's first device
        whatever mesh wrote it and verified (`verify`): for tools that read a run's
        checkpoints outside training (`average`). ValueError naming the step otherwise."""
        where = self.step_dir(step)
        problem = self.check_files(step)
        try:
            if problem is None:
                saved = quiet_read(
                    self._ocp.StandardCheckpointer().metadata, paths.join(where, "state")
                ).item_metadata
                device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
                target = jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved
                )
                state, _, meta = self.restore(step, target)
                problem = self.verify(state, meta)
        except Exception as e:  # noqa: BLE001 -- Orbax / tensorstore / JSON errors
            problem = f"cannot be read ({read_error(e)})"
        if problem:
            raise ValueError(f"checkpoint {where}: {problem}")
        return jax.tree.map(np.asarray, state), meta

    def verify(self, state: Any, meta: Mapping[str, Any]) -> str | None:
        """What is wrong with a restored state, in words, or None: every leaf's
        fingerprint against the `state_digest` recorded at save (required: a checkpoint
        without one cannot be verified), then every value finite."""
        recorded = meta.get("state_digest")
        if not isinstance(recorded, Mapping):
            return "its meta records no state_digest, so it cannot be verified"
        finite, fingerprints = self._check(state)
        now = _digest(fingerprints)
        bad = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
        if bad:
            more = f" (as do {len(bad) - 1} more)" if len(bad) > 1 else ""
            return f"state leaf {bad[0]} differs from the digest recorded when it was saved{more}"
        if not bool(finite):
            return "the state holds NaN or Inf values"
        return None

    def resumed_from(self, step: int) -> None:
        """Rotation keeps `step` (verified by this run's resume) from now on."""
        self._keep.resumed = step

    def move_aside(self, step: int) -> str:
        """Moves step `step` to WORKDIR/damaged_checkpoints/ (every host calls it; the
        first one moves); returns where it went."""
        dest_dir = paths.join(paths.dirname(self.directory), DAMAGED)
        dest, n = paths.join(dest_dir, str(step)), 1
        while paths.exists(dest):
            n += 1
            dest = paths.join(dest_dir, f"{step}-{n}")
        if jax.process_index() == 0:
            paths.move(self.step_dir(step), dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"bertjax_move_aside_{step}")
        self._manager.reload()
        return dest

    def check_files(self, step: int) -> str | None:
        """What is wrong with the files a committed step must have (missing, or JSON
        that does not parse), in words naming the file; None if nothing."""
        for name in ("meta/metadata", "data/metadata", "state/_METADATA"):
            path = paths.join(self.step_dir(step), name)
            if not paths.isfile(path):
                return f"{path} is missing"
            try:
                json.loads(paths.read_bytes(path))
            except (ValueError, OSError) as e:
                return f"{path} cannot be read ({one_line(e)})"
        return None

    def read_meta(self, step: int) -> dict[str, Any]:
        """The meta item of `step` alone (no arrays are read)."""
        ocp = self._ocp
        restored = quiet_read(
            self._manager.restore, step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return dict(restored["meta"])

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()
            self._output.stop()
