"""The parameters' EMA during training (optim.ema_decay, bertjax/ema.py): hand-computed
updates, a numpy recomputation from every step's checkpoint, bit-exact resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trainlib

from bertjax import ema, modeldir
from bertjax import train as train_lib


def test_two_updates_hand_computed():
    tx = ema.params_ema(0.9)
    params = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(params)
    u1 = {"w": jnp.array([0.5, -1.0])}
    out, state = tx.update(u1, state, params)
    assert np.array_equal(out["w"], u1["w"])  # updates pass through
    d1 = 2 / 11  # min(0.9, (1 + 1) / (10 + 1))
    e1 = [d1 * 1.0 + (1 - d1) * 1.5, d1 * 2.0 + (1 - d1) * 1.0]
    np.testing.assert_allclose(state.ema["w"], e1, rtol=1e-6)
    params = {"w": jnp.array([1.5, 1.0])}
    _, state = tx.update({"w": jnp.array([0.5, 0.5])}, state, params)
    d2 = 0.25  # min(0.9, 3 / 12)
    np.testing.assert_allclose(
        state.ema["w"], [d2 * e1[0] + (1 - d2) * 2.0, d2 * e1[1] + (1 - d2) * 1.5], rtol=1e-6
    )
    assert int(state.count) == 2
    assert ema.ema_params(((), state)) is state.ema  # found inside an optimizer state


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    corpus = trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))
    return trainlib.prepare("bert", str(tmp_path_factory.mktemp("data")), corpus)


def _config(data):
    return trainlib.config(
        "bert",
        data,
        **{
            "train.steps": 8,
            "train.checkpoint_every": 1,
            "train.max_to_keep": 20,
            "train.export_model": True,
            "optim.ema_decay": 0.5,
        },
    )


def _flat(tree):
    return {
        jax.tree_util.keystr(p): np.asarray(x, np.float64)
        for p, x in jax.tree_util.tree_leaves_with_path(tree)
    }


@pytest.mark.integration  # a training run, a command or prepared data
def test_the_exported_ema_is_the_numpy_ema_of_every_step(data, tmp_path):
    workdir = str(tmp_path / "run")
    train_lib.train(_config(data), workdir)
    params = [_flat(trainlib.restore_host(workdir, s)[1]["params"]) for s in range(1, 9)]
    _, got = modeldir.load(f"{workdir}/model_ema")
    got = _flat(got)
    # The warmup's first update has rate 0: the parameters after step 1 are the initial
    # ones, so ema_1 = d_1 ema_0 + (1 - d_1) params_1 = params_1; then each update t
    # (step t) moves it by d_t = min(0.5, (1 + t) / (10 + t)).
    e = params[0]
    for t in range(2, 9):
        d = min(0.5, (1 + t) / (10 + t))
        e = {k: d * e[k] + (1 - d) * params[t - 1][k] for k in e}
    assert set(got) == set(e)
    for k in got:
        np.testing.assert_allclose(got[k], e[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert any(not np.allclose(got[k], params[-1][k]) for k in got)  # not the params


@pytest.mark.integration  # a training run, a command or prepared data
def test_an_interrupted_run_resumes_its_ema_exactly(data, tmp_path):
    straight = str(tmp_path / "straight")
    train_lib.train(_config(data), straight)

    class Stop(train_lib.Hook):
        def after_save(self, trainer, step):
            if step == 5:
                trainer.ckpts.wait()
                raise KeyboardInterrupt

    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(_config(data), resumed, hooks=[Stop()])
    train_lib.train(_config(data), resumed)
    assert trainlib.state_hash(resumed, 8) == trainlib.state_hash(straight, 8)
    _, a = modeldir.load(f"{resumed}/model_ema")
    _, b = modeldir.load(f"{straight}/model_ema")
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )
