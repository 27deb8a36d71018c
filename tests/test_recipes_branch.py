"""Decays branched from a stable run (config.init_from_checkpoint=WORKDIR@STEP) and the
checkpoints a stable run keeps for them (train.keep_every, train.keep_every_tokens).

A branch from step 8 of a stable run, decaying over steps 8..12, ends bit-identical to
one uninterrupted run that switched to its decay at step 8; the stable run's directory
(local or in a bucket) is byte-for-byte what it was.
"""

from __future__ import annotations

import shutil

import pytest
import trainlib

from bertjax import experiment, paths
from bertjax import train as train_lib
from bertjax.tasks.base import Phase

STEPS, BRANCH = 12, 8
# wsd with no decay: the peak from the end of the warmup (2 steps) to the end.
STABLE = {"optim.decay": "wsd", "optim.decay_steps": 0}
DECAY = {
    "optim.decay": "wsd",
    "optim.decay_steps": STEPS - BRANCH,
    "optim.decay_shape": "1-sqrt",
    "optim.end_learning_rate": 1e-4,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    corpus = trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))
    return trainlib.prepare("bert", str(tmp_path_factory.mktemp("data")), corpus)


def _config(data, **overrides):
    return trainlib.config("bert", data, **{"train.steps": STEPS, **overrides})


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """(the stable run's workdir, the uninterrupted run's final state hash)."""
    stable = str(tmp_path_factory.mktemp("stable") / "run")
    # Saves every 2 steps, keeps 1 by rotation, and every 4th step by the policy.
    train_lib.train(
        _config(
            data,
            **STABLE,
            **{"train.checkpoint_every": 2, "train.max_to_keep": 1, "train.keep_every": 4},
        ),
        stable,
    )
    straight = str(tmp_path_factory.mktemp("straight") / "run")
    train_lib.train(_config(data, **DECAY), straight)
    return stable, trainlib.state_hash(straight, STEPS)


def _steps(workdir):
    return sorted(int(n) for n in paths.listdir(paths.join(workdir, "checkpoints")) if n.isdigit())


def _snapshot(directory):
    """{relative name: sha256} of every file under `directory` (local or gs://)."""
    return {n: paths.sha256(paths.join(directory, n)) for n in paths.walk_files(directory)}


def test_keep_every_holds_checkpoints_past_max_to_keep(runs):
    stable, _ = runs
    assert _steps(stable) == [4, 8, 12]  # 2, 6 and 10 rotated away (max_to_keep 1)


def test_keep_every_tokens_saves_where_the_count_crosses_a_multiple(data, tmp_path):
    # 8 x 32 = 256 tokens a step: 1,500 is crossed at step 6 (1,536), 3,000 at 12 (3,072).
    workdir = str(tmp_path / "run")
    train_lib.train(
        _config(
            data,
            **STABLE,
            **{
                "train.checkpoint_every": 0,
                "train.max_to_keep": 1,
                "train.keep_every_tokens": 1500,
            },
        ),
        workdir,
    )
    assert _steps(workdir) == [6, 12]


def test_kept_steps_follow_each_phases_tokens():
    c = trainlib.config("bert", **{"train.keep_every": 0, "train.keep_every_tokens": 1000})
    # 10 steps of 4 x 32 = 128 tokens, then 10 of 2 x 64 = 128 ... and 4 x 64 = 256.
    phases = [
        Phase(0, 0, 10, 4, "", {"max_seq_length": 32}),
        Phase(1, 10, 20, 4, "", {"max_seq_length": 64}),
    ]
    keep = experiment.kept_steps(c, phases)
    # Tokens after step s: 128 s up to 10 (1,280), then 1,280 + 256 (s - 10).
    # Multiples of 1,000 crossed at s = 8 (1,024), 13 (2,048), 17 (3,072).
    assert [s for s in range(1, 21) if keep(s)] == [8, 13, 17]


@pytest.mark.parametrize("where", ["local", "gs"])
def test_a_branched_decay_equals_the_uninterrupted_run(
    where, runs, data, tmp_path, request, capsys
):
    stable, want = runs
    source = stable
    if where == "gs":
        source = request.getfixturevalue("bucket") + "/stable"
        for name in paths.walk_files(stable):
            paths.upload(paths.join(stable, name), paths.join(source, name))
    before = _snapshot(source)
    branch = str(tmp_path / "branch")
    result = train_lib.train(
        _config(data, **DECAY, **{"init_from_checkpoint": f"{source}@{BRANCH}"}), branch
    )
    assert result["status"] == "done" and result["step"] == STEPS
    assert (
        f"step {BRANCH}/{STEPS} from checkpoint {source}/checkpoints/{BRANCH} (a branch"
    ) in capsys.readouterr().out
    assert trainlib.state_hash(branch, STEPS) == want
    assert _snapshot(source) == before  # the stable run is only read


def test_a_preempted_branch_resumes_from_its_own_checkpoints(runs, data, tmp_path):
    stable, want = runs
    branch = str(tmp_path / "branch")
    c = _config(
        data, **DECAY, **{"init_from_checkpoint": f"{stable}@{BRANCH}", "train.checkpoint_every": 2}
    )

    class Stop(train_lib.Hook):
        def after_save(self, trainer, step):
            if step == 10:
                trainer.ckpts.wait()
                raise KeyboardInterrupt  # dies once checkpoint 10 is written

    with pytest.raises(KeyboardInterrupt):
        train_lib.train(c, branch, hooks=[Stop()])
    assert 10 in _steps(branch)
    train_lib.train(c, branch)
    assert trainlib.state_hash(branch, STEPS) == want


@pytest.mark.parametrize(
    "spec,overrides,message",
    [
        ("{stable}@6", {}, "step 6 is not a saved checkpoint of {stable} (saved: 4, 8, 12)"),
        ("{stable}", {}, "expected WORKDIR@STEP"),
        (
            "{stable}@8",
            {"optim.decay_steps": 6},
            "the decay (optim.decay_steps=6) starts at update 6, before the branch point "
            "(update 8)",
        ),
        ("{stable}@12", {}, "step 12 leaves nothing to train in train.steps=12"),
        ("{missing}@4", {}, "no such directory"),
    ],
)
def test_a_bad_branch_point_is_one_line_and_writes_nothing(
    spec, overrides, message, runs, data, tmp_path
):
    stable, _ = runs
    names = {"stable": stable, "missing": str(tmp_path / "nothing")}
    branch = tmp_path / "branch"
    c = _config(data, **{**DECAY, "init_from_checkpoint": spec.format(**names), **overrides})
    with pytest.raises((ValueError, OSError)) as e:
        train_lib.train(c, str(branch))
    assert message.format(**names) in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    assert not branch.exists()
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
