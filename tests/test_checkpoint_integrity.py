"""Training checkpoints that are damaged on disk, and saves that fail (bertjax/checkpoint.py,
bertjax/train.py).

A checkpoint damaged after it was committed (bytes flipped, a file truncated or deleted,
metadata deleted or garbled) is reported, moved to WORKDIR/damaged_checkpoints and the
one before it is used: the run ends bit-identical to an uninterrupted one, and rotation
keeps the checkpoint it resumed from. With every checkpoint damaged the command stops in
one line. A save that fails with ENOSPC stops the run in one line and leaves the last
good checkpoint restorable.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time

import clilib
import faults
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trainlib

from bertjax import checkpoint, paths
from bertjax import train as train_lib

STEPS, STOP = 10, 6  # the run; the template stops (preempted) at STOP, checkpoints 2, 4, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config, reference state hash of the uninterrupted run, template workdir holding
    checkpoints 2, 4 and 6 of the same run)."""
    root = tmp_path_factory.mktemp("integrity")
    corpus = trainlib.write_corpus(str(root / "corpus.txt"))
    data = trainlib.prepare("bert", str(root / "data"), corpus)
    c = trainlib.config(
        "bert", data, **{"train.steps": STEPS, "train.checkpoint_every": 2, "train.max_to_keep": 3}
    )
    assert train_lib.train(c, str(root / "full"))["status"] == "done"
    want = trainlib.state_hash(str(root / "full"))
    stopped = train_lib.train(
        c, str(root / "template"), hooks=[faults.Fault("sigterm_at_step", STOP)]
    )
    assert stopped["status"] == "preempted"
    assert _steps(root / "template") == [2, 4, 6]
    return c, want, root / "template"


def _steps(workdir) -> list[int]:
    return sorted(
        int(n) for n in paths.listdir(paths.join(str(workdir), "checkpoints")) if n.isdigit()
    )


def _largest_file(directory) -> str:
    files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs]
    return max(files, key=os.path.getsize)


def _flip(path):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for i in np.random.default_rng(0).choice(len(data), size=min(64, len(data)), replace=False):
            data[i] ^= 0xFF
        f.seek(0)
        f.write(data)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _garble(path):
    with open(path, "w") as f:
        f.write("{not json")


def _other_state(step):
    shutil.rmtree(step / "state")
    shutil.copytree(step.parent / "4" / "state", step / "state")


def _drop_from_meta(key: str):
    """Damage: the step's meta JSON without `key` (a digest or record that the resume
    needs to check the step)."""

    def damage(step):
        for r, _, fs in os.walk(step / "meta"):
            for f in fs:
                path = os.path.join(r, f)
                with open(path) as fh:
                    meta = json.load(fh)
                if isinstance(meta, dict) and key in meta:
                    del meta[key]
                    with open(path, "w") as fh:
                        json.dump(meta, fh)
                    return
        raise AssertionError(f"no {key} in {step / 'meta'}")

    return damage


DAMAGE = {
    # Checks that an omission must not switch off.
    "no state_digest": _drop_from_meta("state_digest"),
    "no data record": _drop_from_meta("data"),
    # A whole, readable state of another step: only the digest tells.
    "another step's state": _other_state,
    "flipped bytes": lambda step: _flip(_largest_file(step / "state")),
    "truncated data file": lambda step: _truncate(_largest_file(step / "state")),
    "deleted data file": lambda step: os.remove(_largest_file(step / "state")),
    "deleted metadata": lambda step: os.remove(step / "state" / "_METADATA"),
    "garbage json": lambda step: [
        _garble(os.path.join(r, f)) for r, _, fs in os.walk(step / "data") for f in fs
    ],
}


@pytest.mark.parametrize("where", ["local", "gs"])
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_one_before_used(
    kind, where, setup, tmp_path, capsys, request
):
    """Also with the workdir in a bucket (the local Cloud Storage emulator): the damaged
    copy is uploaded and the run reads, moves aside and resumes there."""
    c, want, template = setup
    local = tmp_path / "run"
    shutil.copytree(template, local)
    DAMAGE[kind](local / "checkpoints" / str(STOP))
    workdir = str(local)
    if where == "gs":
        workdir = request.getfixturevalue("bucket") + "/run"
        for name in paths.walk_files(str(local)):
            paths.upload(str(local / name), paths.join(workdir, name))
    result = train_lib.train(c, workdir)
    out = capsys.readouterr().out
    warning = [ln for ln in out.splitlines() if ln.startswith("warning: checkpoint 6 ")]
    assert len(warning) == 1, out[-3000:]
    if kind == "another step's state":
        assert "differs from the digest recorded when it was saved" in warning[0]
    if kind == "no state_digest":
        assert "records no state_digest, so it cannot be verified" in warning[0]
    if kind == "no data record":
        assert "records no data" in warning[0]
    assert warning[0].endswith(f"; moved to {workdir}/damaged_checkpoints/6"), warning[0]
    assert f"step 4/{STEPS} from checkpoint {workdir}/checkpoints/4" in out
    # Nothing deleted: the damaged step is kept aside, whole.
    assert paths.isdir(paths.join(workdir, "damaged_checkpoints", "6", "state"))
    assert result["status"] == "done" and trainlib.state_hash(workdir) == want
    # Rotation (max_to_keep 3) kept the checkpoint the run resumed from.
    assert _steps(workdir) == [4, 6, 8, 10]


def test_flipped_bits_in_a_restored_state_are_named_by_leaf(tmp_path):
    ckpts = checkpoint.TrainCheckpoints(str(tmp_path / "c"), async_save=False)
    state = {
        "params": {
            "w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4),
            "b": jnp.ones(4, jnp.bfloat16),
        },
        "step": jnp.asarray(7, jnp.int32),
    }
    ckpts.save(7, state, {}, {})
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    restored, _, meta = ckpts.restore(7, target)
    assert ckpts.verify(restored, meta) is None
    # Every single-bit flip of every element is seen, in float32 and in bfloat16.
    w = np.asarray(restored["params"]["w"]).view(np.uint32)
    for i in range(w.size):
        for bit in range(32):
            flipped = w.copy().reshape(-1)
            flipped[i] ^= np.uint32(1 << bit)
            bad = {
                **restored,
                "params": {
                    **restored["params"],
                    "w": jnp.asarray(flipped.view(np.float32).reshape(3, 4)),
                },
            }
            assert ckpts.verify(bad, meta) == (
                "state leaf params/w differs from the digest recorded when it was saved"
            ), (i, bit)
    b = np.asarray(restored["params"]["b"]).view(np.uint16).copy()
    b[2] ^= 1
    bad = {**restored, "params": {**restored["params"], "b": jnp.asarray(b.view(jnp.bfloat16))}}
    assert ckpts.verify(bad, meta).startswith("state leaf params/b differs")
    # Swapping two elements keeps every value but moves them: seen too.
    swapped = np.asarray(restored["params"]["w"]).copy().reshape(-1)
    swapped[[0, 5]] = swapped[[5, 0]]
    bad = {**restored, "params": {**restored["params"], "w": jnp.asarray(swapped.reshape(3, 4))}}
    assert ckpts.verify(bad, meta).startswith("state leaf params/w differs")
    # A NaN that the digest also records (bits written as they were) is named.
    nan = {
        **restored,
        "params": {**restored["params"], "w": restored["params"]["w"].at[0, 0].set(jnp.nan)},
    }
    nan_meta = {"state_digest": checkpoint._digest(ckpts._check(nan)[1])}
    assert ckpts.verify(nan, nan_meta) == "the state holds NaN or Inf values"
    # Without a digest nothing can be verified: refused, whatever the values.
    assert ckpts.verify(restored, {}) == (
        "its meta records no state_digest, so it cannot be verified"
    )
    ckpts.close()


def test_every_checkpoint_damaged_stops_the_command_in_one_line(setup, tmp_path):
    c, _, template = setup
    workdir = tmp_path / "run"
    shutil.copytree(template, workdir)
    for step in (2, 4, 6):
        os.remove(workdir / "checkpoints" / str(step) / "state" / "_METADATA")
    r = trainlib.run(trainlib.train_cmd(c, str(workdir)))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Event loop" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: {workdir}: no checkpoint can be resumed; all 3 were damaged and "
        f"moved to {workdir}/damaged_checkpoints. Restore a good copy into "
        "checkpoints/, or run again to start from the beginning"
    ), last
    assert sorted(os.listdir(workdir / "damaged_checkpoints")) == ["2", "4", "6"]
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("warning: checkpoint")] == [
        ln for ln in r.stdout.splitlines() if "moved to" in ln
    ]


@pytest.mark.parametrize("where", ["local", "gs"])
def test_a_deleted_data_file_falls_back_quietly_from_the_command(where, setup, tmp_path, request):
    """Orbax's failed read leaves coroutines that print thousands of lines ("Exception
    ignored in: <coroutine ...>" with TensorStore specs) when freed: the command shows
    the one warning line and nothing on stderr, with the workdir local or in a bucket."""
    c, want, template = setup
    local = tmp_path / "run"
    shutil.copytree(template, local)
    DAMAGE["deleted data file"](local / "checkpoints" / str(STOP))
    workdir = str(local)
    if where == "gs":
        workdir = request.getfixturevalue("bucket") + "/run"
        for name in paths.walk_files(str(local)):
            paths.upload(str(local / name), paths.join(workdir, name))
    r = trainlib.run(trainlib.train_cmd(c, workdir))
    assert r.returncode == 0, r.stderr[-3000:]
    # Not the failed read's: TensorStore's note that the emulator's machine has no gcloud
    # credentials file, and Orbax's warning when a save waits on the one before (a
    # loaded machine's slow disk).
    benign = ("google_auth_provider", "WARNING:absl:Waiting for previous save to complete")
    stderr = [ln for ln in r.stderr.splitlines() if not any(b in ln for b in benign)]
    assert "\n".join(stderr).strip() == "", r.stderr[-3000:]
    warning = [ln for ln in r.stdout.splitlines() if ln.startswith("warning: checkpoint 6 ")]
    assert len(warning) == 1 and "cannot be read (Error reading" in warning[0], r.stdout
    assert trainlib.state_hash(workdir) == want


# Run in a fresh process (its unraisable hook is the process's): three coroutines that
# fail while being freed, from Orbax's, TensorStore's and a user's files.
_LEAKS = "\n".join(
    [
        "import os",
        "from bertjax import orbax_output",
        "SRC = ('class Pause:\\n'",
        "       '    def __await__(self):\\n'",
        "       '        yield\\n'",
        "       'async def leak():\\n'",
        "       '    try:\\n'",
        "       '        await Pause()\\n'",
        "       '    finally:\\n'",
        "       '        raise RuntimeError(\"Event loop is closed\")\\n')",
        "def leak_from(*parts):",
        "    ns = {}",
        "    exec(compile(SRC, os.sep.join(['', *parts]), 'exec'), ns)",
        "    c = ns['leak']()",
        "    c.send(None)",
        "    del c  # freed: closing it raises, which Python reports as unraisable",
        "orbax_output._drop_failed_read_leftovers()",
        "orbax_output._drop_failed_read_leftovers()  # not wrapped twice",
        "leak_from('site-packages', 'orbax', 'checkpoint', 'x.py')",
        "leak_from('site-packages', 'tensorstore', 'x.py')",
        "leak_from('home', 'user', 'mine.py')",
        # Futures whose exceptions nobody retrieved, freed: asyncio logs each one.
        "import asyncio, gc",
        "loop = asyncio.new_event_loop()",
        "def unretrieved(error):",
        "    f = loop.create_future()",
        "    f.set_exception(error)",
        "    del f",
        "    gc.collect()",
        "def raised_in(*parts):",
        "    ns = {}",
        "    exec(compile('def fail():\\n    raise KeyError(\"no such array\")\\n',",
        "                 os.sep.join(['', *parts]), 'exec'), ns)",
        "    try:",
        "        ns['fail']()",
        "    except KeyError as e:",
        "        return e",
        'unretrieved(ValueError(\'FAILED_PRECONDITION: Error reading "params.w/0" in OCDBT '
        'database at local file "/x": Truncated Zstd-compressed stream\'))',
        "unretrieved(raised_in('site-packages', 'orbax', 'checkpoint', 'y.py'))",
        "unretrieved(raised_in('home', 'user', 'theirs.py'))",
        "unretrieved(ValueError('user failure'))",
    ]
)


def test_coroutines_left_by_a_failed_read_are_freed_silently_whenever_that_happens():
    """Orbax's and TensorStore's coroutines that fail while being freed, after a failed
    read, print nothing, however late they are freed; any other code's still prints."""
    r = clilib.python("-c", _LEAKS, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("Exception ignored in") == 1, r.stderr
    assert "mine.py" in r.stderr and "orbax" not in r.stderr, r.stderr
    # asyncio's "never retrieved": the user's two futures print, Orbax's and TensorStore's not.
    assert r.stderr.count("exception was never retrieved") == 2, r.stderr
    assert "theirs.py" in r.stderr and "user failure" in r.stderr, r.stderr
    assert "OCDBT" not in r.stderr, r.stderr


def test_a_save_that_fails_with_enospc_stops_the_run_in_one_line(setup, tmp_path, monkeypatch):
    """The data item of checkpoint 8 cannot be written (a full disk): the run stops with
    one line naming the step, the file and the OS error, checkpoint 6 is intact, and
    running again resumes from it to the uninterrupted run's bits. The state item's
    writes, still running when the data item fails, have ended when the error is
    reported (else they land in the re-run's save of step 8)."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
    from orbax.checkpoint._src.handlers import standard_checkpoint_handler as standard

    c, want, template = setup
    workdir = tmp_path / "run"
    shutil.copytree(template, workdir)
    real = handler.JsonCheckpointHandler._save_fn
    real_state = standard.StandardCheckpointHandler.async_save
    late = []

    async def full_disk(self, x, directory):
        if "phase" in x and x["pipeline"]["step"] == 8:
            path = str(directory / "metadata")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return await real(self, x, directory)

    class LateWrite:  # a state write that lands after the data item has failed
        def __init__(self, directory):
            self.path = os.path.join(str(directory), "late_write")

        def result(self, timeout=None):
            time.sleep(1.0)
            open(self.path, "w").close()
            late.append(self.path)

    async def slow_state(self, directory, *args, **kwargs):
        futures = await real_state(self, directory, *args, **kwargs)
        if "/8.orbax-checkpoint-tmp" not in str(directory):
            return futures
        return [LateWrite(directory), *(futures or [])]

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", full_disk)
    monkeypatch.setattr(standard.StandardCheckpointHandler, "async_save", slow_state)
    with pytest.raises(train_lib.TrainingError) as e:
        train_lib.train(c, str(workdir))
    assert len(late) == 1, "the failed save's remaining writes were not waited for"
    monkeypatch.setattr(standard.StandardCheckpointHandler, "async_save", real_state)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("checkpoint 8 could not be written (") and (
        "/checkpoints/8.orbax-checkpoint-tmp/data" in message
    ), message
    assert "/metadata: No space left on device); the run stopped at step " in message
    assert message.endswith(
        f", the last good checkpoint is {workdir}/checkpoints/6. Free "
        "space (or fix the path), then run the same command to resume"
    )
    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", real)
    assert _steps(workdir) == [2, 4, 6]
    assert train_lib.train(c, str(workdir))["status"] == "done"
    assert trainlib.state_hash(str(workdir)) == want
