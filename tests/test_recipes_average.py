"""`python -m bertjax average`: saved checkpoints' parameters averaged into a model
directory, against numpy means of the checkpoints as read back."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest
import trainlib

from bertjax import modeldir, paths
from bertjax import train as train_lib
from bertjax.tools import average


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """A 6-step run keeping checkpoints 2, 4 and 6."""
    corpus = trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))
    data = trainlib.prepare("bert", str(tmp_path_factory.mktemp("data")), corpus)
    workdir = str(tmp_path_factory.mktemp("run") / "run")
    train_lib.train(
        trainlib.config(
            "bert",
            data,
            **{
                "train.steps": 6,
                "train.checkpoint_every": 2,
                "train.max_to_keep": 3,
                "optim.decay": "constant",
                "optim.warmup_steps": 0,
            },
        ),
        workdir,
    )
    return workdir


def _params(workdir, step):
    return trainlib.restore_host(workdir, step)[1]["params"]


def _flat(tree):
    return {
        jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)
    }


def test_uniform_average_is_the_numpy_mean(run, tmp_path):
    out = str(tmp_path / "avg")
    line = average.write(out, [(run, 2), (run, 4), (run, 6)])
    assert "uniform average of 3 checkpoints" in line
    _, got = modeldir.load(out)
    want = [_flat(_params(run, s)) for s in (2, 4, 6)]
    got = _flat(got)
    assert set(got) == set(want[0])
    for name, value in got.items():
        mean = np.mean(np.stack([w[name] for w in want]).astype(np.float64), axis=0)
        assert value.dtype == want[0][name].dtype
        np.testing.assert_allclose(value, mean, rtol=1e-6, atol=1e-7, err_msg=name)
    # The checkpoints differ: the average is none of them.
    assert any(not np.array_equal(got[n], want[2][n]) for n in got)
    _, meta = modeldir.read_config(out)
    assert meta["average"]["weights"] == pytest.approx([1 / 3] * 3)
    assert modeldir.load_tokenizer(out) is not None  # the training data's


def test_ema_of_the_last_k_follows_the_recursion(run, tmp_path):
    out = str(tmp_path / "ema")
    points = average.last_checkpoints(run, 2)
    assert points == [(run, 4), (run, 6)]
    average.write(out, points, "ema", 0.75)
    got = _flat(modeldir.load(out)[1])
    x4, x6 = _flat(_params(run, 4)), _flat(_params(run, 6))
    for name, value in got.items():  # e = 0.75 x4 + 0.25 x6
        want = 0.75 * x4[name].astype(np.float64) + 0.25 * x6[name].astype(np.float64)
        np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-7, err_msg=name)


def test_ema_weights_hand_computed():
    # d = 0.5, K = 3: e = 0.25 x1 + 0.25 x2 + 0.5 x3.
    np.testing.assert_allclose(average.weights(3, "ema", 0.5), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(average.weights(4), [0.25] * 4)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda r: average.check([(r, 3)]),
            "--checkpoints: step 3 is not a saved checkpoint of {run} (saved: 2, 4, 6)",
        ),
        (lambda r: average.parse_checkpoint(r), "is not WORKDIR@STEP"),
        (lambda r: average.last_checkpoints(r, 4), "--last=4: {run} has only 3 saved"),
        (lambda r: average.weights(2, "ema", 1.0), "--ema_decay=1.0: must be in [0, 1)"),
        (lambda r: average.check([(r + "_missing", 2)]), "no such directory"),
    ],
)
def test_bad_input_is_one_line(call, message, run):
    with pytest.raises((ValueError, OSError)) as e:
        call(run)
    assert message.format(run=run) in str(e.value)
    assert "\n" not in str(e.value)


def test_the_command_writes_nothing_on_a_bad_step(run, tmp_path):
    out = tmp_path / "avg"
    r = trainlib.run(
        [
            sys.executable,
            "-m",
            "bertjax",
            "average",
            f"--checkpoints={run}@2,{run}@5",
            f"--out={out}",
        ]
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: --checkpoints: step 5 is not a saved checkpoint of {run} (saved: 2, 4, 6)"
    )
    assert not out.exists() and paths.isdir(run)


def test_checkpoints_and_output_in_a_bucket(run, bucket):
    source = f"{bucket}/stable"
    for name in paths.walk_files(run):
        paths.upload(paths.join(run, name), paths.join(source, name))
    out = f"{bucket}/avg"
    average.write(out, [(source, 4), (source, 6)])
    _, got = modeldir.load(out)
    x4, x6 = _flat(_params(run, 4)), _flat(_params(run, 6))
    for name, value in _flat(got).items():
        want = (x4[name].astype(np.float64) + x6[name].astype(np.float64)) / 2
        np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-7, err_msg=name)


def test_the_command_prints_one_line_and_nothing_on_stderr(run, tmp_path):
    """Orbax warns on every read-only open of another run's checkpoints ("Given directory
    is read only", "Metadata file does not exist"): none of it reaches the user."""
    import clilib

    out = tmp_path / "avg"
    r = clilib.bertjax("average", f"--workdir={run}", "--last=2", f"--out={out}", ok=True)
    assert r.stderr == "", r.stderr
    assert r.stdout.startswith(f"wrote {out}: the uniform average of 2 checkpoints"), r.stdout
