"""Data mixtures (bertjax/data/mixture.py, a plan phase's `mixture`): proportions over a
long run, determinism from content (not paths), exact resume, one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import trainlib

from bertjax import train as train_lib
from bertjax.data.mixture import Mixture, mixture_weights

B = 16


def _source(i):
    """Source i's batches from batch `start` on: rows numbered from start * B."""

    def open_source(_, start):
        k = start
        while True:
            rows = np.arange(k * B, (k + 1) * B)
            yield {"source": np.full(B, i), "row": rows}
            k += 1

    return open_source


def _open(i, start):
    return _source(i)(i, start)


def _mixture(weights=(0.6, 0.3, 0.1), digests=("c", "a", "b"), start=0, seed=0):
    return Mixture(["x", "y", "z"], list(digests), np.asarray(weights), B, seed, 0, _open, start)


def test_proportions_over_a_long_run_are_the_weights():
    mix = _mixture()
    batches = [next(mix) for _ in range(2000)]  # 32,000 rows
    sources = np.concatenate([b["source"] for b in batches])
    share = np.bincount(sources, minlength=3) / sources.size
    # The binomial standard deviation is at most sqrt(0.25 / 32000) = 0.0028: 0.01 is
    # more than 3.5 of it.
    np.testing.assert_allclose(share, [0.6, 0.3, 0.1], atol=0.01)
    assert mix.metrics() == {
        f"mixture_rows/{n}": int(c)
        for n, c in zip("xyz", np.bincount(sources, minlength=3), strict=True)
    }
    # Every source is read in order, no row skipped or read twice.
    for i in range(3):
        rows = np.sort(np.concatenate([b["row"][b["source"] == i] for b in batches]))
        np.testing.assert_array_equal(rows, np.arange(rows.size))


def test_a_resumed_mixture_yields_the_uninterrupted_batches():
    straight = _mixture()
    want = [next(straight) for _ in range(40)]
    resumed = _mixture(start=25)
    for k in range(25, 40):
        got = next(resumed)
        for key in want[k]:
            np.testing.assert_array_equal(got[key], want[k][key])


def test_the_mix_follows_content_not_order_or_names():
    a = _mixture()
    # The same sources listed in another order (with their weights): the same batches.
    b = Mixture(
        ["z", "x", "y"],
        ["b", "c", "a"],
        np.asarray([0.1, 0.6, 0.3]),
        B,
        0,
        0,
        lambda i, s: _open([2, 0, 1][i], s),
        0,
    )
    for _ in range(5):
        x, y = next(a), next(b)
        np.testing.assert_array_equal(x["source"], y["source"])
        np.testing.assert_array_equal(x["row"], y["row"])
    other_seed = _mixture(seed=1)
    assert any(
        not np.array_equal(next(other_seed)["source"], next(_mixture())["source"]) for _ in range(3)
    )


def test_temperature_weights_hand_computed():
    # rows 100 and 400, temperature 0.5: 10 and 20 -> 1/3 and 2/3.
    w = mixture_weights("m", {"sources": ("a", "b"), "temperature": 0.5}, [100, 400])
    np.testing.assert_allclose(w, [1 / 3, 2 / 3])
    w = mixture_weights("m", {"sources": ("a", "b"), "weights": (3, 1)}, [0, 0])
    np.testing.assert_allclose(w, [0.75, 0.25])
    with pytest.raises(ValueError, match=r"^m.names: 1 names for 2 sources$"):
        mixture_weights("m", {"sources": ("a", "b"), "weights": (3, 1), "names": ("x",)}, [0, 0])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two prepared datasets (different text, one tokenizer) and one of another
    tokenizer."""
    root = tmp_path_factory.mktemp("mix")
    first = trainlib.prepare(
        "bert", str(root / "en"), trainlib.write_corpus(str(root / "a.txt"), seed=0)
    )
    second = trainlib.prepare(
        "bert",
        str(root / "fr"),
        trainlib.write_corpus(str(root / "b.txt"), seed=1),
        **{"tokenizer.path": f"{first}/tokenizer"},
    )
    other = trainlib.prepare(
        "bert",
        str(root / "other"),
        trainlib.write_corpus(str(root / "c.txt"), n_docs=60, seed=2),
        **{"tokenizer.vocab_size": 120},
    )
    return first, second, other


def _config(sources, **mixture):
    c = trainlib.config("bert", sources[0], **{"train.steps": 8, "train.checkpoint_every": 2})
    c.phases = (dict(share=1.0, mixture=dict(sources=tuple(sources), **mixture)),)
    return c


@pytest.mark.integration  # a training run, a command or prepared data
@pytest.mark.parametrize(
    "mixture,message",
    [
        (dict(weights=(0.5, -0.5)), "phases[0].mixture.weights[1]=-0.5: must be >= 0 (source"),
        (dict(weights=(1.0,)), "phases[0].mixture.weights: 1 weights for 2 sources"),
        (dict(weights=(1, 1), temperature=0.5), "give weights or temperature"),
        (dict(temperature=0.0), "phases[0].mixture.temperature=0.0: must be positive"),
    ],
)
def test_bad_weights_are_one_line(data, mixture, message):
    c = _config(data[:2], **mixture)
    with pytest.raises(ValueError) as e:
        train_lib.train(c, "/nonexistent/never")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.integration  # a training run, a command or prepared data
def test_a_missing_source_or_another_tokenizer_is_one_line(data, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"phases\[0\].mixture.sources\[1\]: "):
        train_lib.train(
            _config([data[0], str(tmp_path / "none")], weights=(1, 1)), str(tmp_path / "run")
        )
    with pytest.raises(
        ValueError,
        match=r"phases\[0\].mixture.sources: .*other has another "
        "tokenizer",
    ):
        train_lib.train(_config([data[0], data[2]], weights=(1, 1)), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.integration  # a training run, a command or prepared data
def test_mixed_training_resumes_exactly_and_logs_rows_per_source(data, tmp_path, capsys):
    c = _config(data[:2], weights=(0.75, 0.25), names=("en", "fr"))
    straight = str(tmp_path / "straight")
    train_lib.train(c, straight)
    out = capsys.readouterr().out
    rows = [
        int(line.split("mixture_rows/en=")[1].split()[0].replace(",", ""))
        + int(line.split("mixture_rows/fr=")[1].split()[0].replace(",", ""))
        for line in out.splitlines()
        if line.startswith("train step 8:")
    ]
    assert rows == [8 * 8]  # every row of 8 steps of batch 8, from one of the two

    class Stop(train_lib.Hook):
        def after_save(self, trainer, step):
            if step == 4:
                trainer.ckpts.wait()
                raise KeyboardInterrupt

    # The same data at another path, listed in the other order: the same run.
    moved = [str(tmp_path / "copy_fr"), str(tmp_path / "copy_en")]
    shutil.copytree(data[1], moved[0])
    shutil.copytree(data[0], moved[1])
    other = _config(moved, weights=(0.25, 0.75), names=("fr", "en"))
    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(c, resumed, hooks=[Stop()])
    train_lib.train(other, resumed)
    assert trainlib.state_hash(resumed, 8) == trainlib.state_hash(straight, 8)
    fresh = str(tmp_path / "fresh")
    train_lib.train(other, fresh)
    assert trainlib.state_hash(fresh, 8) == trainlib.state_hash(straight, 8)
    assert "plan: 1 phase\n" in capsys.readouterr().out
