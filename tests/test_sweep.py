"""Sweeps (bertjax/tools/sweep.py), downstream evaluations (bertjax/tools/downstream.py) and the
launch scripts' handling of a sweep's runs.

The end-to-end test runs a two-run sweep of a tiny model: run 1 through the command
`--print_commands=local` prints (launch/local.sh, a real subprocess), run 2 killed by
SIGKILL in its pretraining by `sweep` itself, then resumed in process; a third `sweep`
does nothing; `compare` reports what the runs' results say.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest
import trainlib

from bertjax import configfile
from bertjax.tools import compare, downstream, sweep

ROOT = trainlib.ROOT
MASKING = os.path.join(ROOT, "configs", "ablations", "masking.py")

# A sweep of the tiny test model over two learning rates; both runs share one prepared
# data directory (the learning rate is not a data setting).
SWEEP_FILE = """
import sys
sys.path.insert(0, {tests!r})
import trainlib


def get_config(arg=None):
    c = trainlib.config("bert", data_dir="")
    c.data.source = "bert:{corpus}"
    c.train.update(steps=8, checkpoint_every=4, log_every=2, export_model=True)
    c.downstream.update(
        tasks="demo_next", config="configs/finetune.py:{{task}},bert_tiny,runlocal",
        overrides="train.steps=4 train.batch_size=8 max_seq_length=32 train.log_every=2")
    return c


def get_sweep(arg=None):
    return [{{"optim.learning_rate": 1e-3}}, {{"optim.learning_rate": 3e-3}}]
"""


def _sweep_file(tmp_path) -> str:
    corpus = trainlib.write_corpus(str(tmp_path / "corpus.txt"))
    path = tmp_path / "lr_sweep.py"
    path.write_text(SWEEP_FILE.format(tests=os.path.join(ROOT, "tests"), corpus=corpus))
    return str(path)


# --------------------------------------------------------------------------- the runs


def test_the_masking_sweep_is_what_its_config_says(tmp_path):
    runs = sweep.load_sweep(f"{MASKING}:cpu")
    assert [r.name for r in runs] == [
        "strategy=token",
        "strategy=whole_word",
        "strategy=span",
    ]
    base = configfile.load_config(f"{MASKING}:cpu")
    configs = [sweep.run_config(base, r, str(tmp_path)) for r in runs]
    assert [c.masking.strategy for c in configs] == ["token", "whole_word", "span"]
    # Everything else is the base config: only the key swept (and the data directory
    # derived from it) differs.
    flat = [compare.flatten(c.to_dict()) for c in configs]
    differ = {k for k in flat[0] if len({str(f[k]) for f in flat}) > 1}
    assert differ == {"masking.strategy", "data.dir"}
    assert len({c.data.dir for c in configs}) == 3  # masking is a preparation setting
    assert all(c.data.dir.startswith(str(tmp_path / "data")) for c in configs)
    assert configs[0].downstream.tasks == "demo_next,demo_boundary"
    assert configs[0].downstream.seeds == 3
    for c in configs:
        downstream.check(c)  # every task's fine-tuning config builds
        task = downstream.task_config(c, "demo_next", "/m")
        assert task.init_from == "/m" and task.optim.learning_rate == 3e-4


def test_runs_that_agree_on_the_data_share_its_directory(tmp_path):
    base = configfile.load_config(f"{MASKING}:cpu")
    runs = sweep.name_runs(
        [
            {"optim.learning_rate": 1e-3},
            {"optim.learning_rate": 3e-4},
            {"masking.masked_lm_prob": 0.2},
        ],
        "test",
    )
    dirs = [sweep.run_config(base, r, str(tmp_path)).data.dir for r in runs]
    assert dirs[0] == dirs[1] != dirs[2]
    assert [r.name for r in runs] == [
        "learning_rate=0.001",
        "learning_rate=0.0003",
        "masked_lm_prob=0.2",
    ]


def test_names_use_the_full_key_only_where_two_keys_share_their_last_part():
    runs = sweep.name_runs(
        [{"data.seed": 1, "seed": 2}, {"data.seed": 3, "seed": 2}, {"train.steps": 5}], "test"
    )
    assert [r.name for r in runs] == ["data.seed=1,seed=2", "data.seed=3,seed=2", "steps=5"]
    assert sweep.name_runs([{}], "t")[0].name == "base"
    assert sweep.name_runs([{"data.source": "text:/a/b c"}], "t")[0].name == "source=text_a_b_c"


@pytest.mark.parametrize(
    "runs, needle",
    [
        ([{"train.steps": 5}, {"train.steps": 5}], "both named 'steps=5'"),
    ],
)
def test_two_runs_with_one_name_are_refused(runs, needle):
    with pytest.raises(ValueError, match=needle):
        sweep.name_runs(runs, "f.py")


@pytest.mark.parametrize(
    "body, needle",
    [
        ("def get_config(arg=None):\n    return None\n", "defines no get_sweep"),
        ("def get_sweep(arg=None):\n    return []\n", "expected a non-empty list"),
        ("def get_sweep(arg=None):\n    return [{'a': 1}, 'b']\n", r"get_sweep\(\)\[1\] is 'b'"),
    ],
)
def test_bad_sweep_files_fail_in_one_line(tmp_path, body, needle):
    path = tmp_path / "s.py"
    path.write_text(body)
    with pytest.raises(ValueError, match=needle):
        sweep.load_sweep(f"{path}:x")


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"masking.stratgy": "span"}, "sweep run r: unknown config key 'masking.stratgy'"),
        ({"maskin.strategy": "span"}, "'maskin.strategy' .maskin is not a config section"),
        ({"train.steps": "many"}, "train.steps=many: invalid literal"),
    ],
)
def test_a_bad_override_names_the_run_and_key(tmp_path, override, needle):
    base = configfile.load_config(f"{MASKING}:cpu")
    with pytest.raises(ValueError, match=needle):
        sweep.run_config(base, sweep.Run("r", override), str(tmp_path))


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("tasks", "demo_next,demo_next", "a task is repeated"),
        ("tasks", "no_such_task", "no_such_task"),
        ("config", "configs/finetune.py:demo_next", "must contain {task}"),
        ("config", "configs/nowhere.py:{task}", "nowhere.py: no such config file"),
        ("overrides", "optim.learning_rat=1", "downstream.overrides: unknown config key"),
        ("overrides", "optim.learning_rate", "is not KEY=VALUE"),
        ("seeds", 0, "must be at least 1"),
    ],
)
def test_bad_downstream_settings_fail_before_pretraining(key, value, needle):
    c = configfile.load_config(f"{MASKING}:tiny")
    c.downstream[key] = value
    with pytest.raises(ValueError, match=needle):
        downstream.check(c)


def test_override_values_are_read_as_the_keys_type():
    c = configfile.load_config(f"{MASKING}:cpu")
    for key, text, want in [
        ("train.steps", "7", 7),
        ("optim.learning_rate", "3e-4", 3e-4),
        ("train.memory_check", "false", False),
        ("masking.strategy", "span", "span"),
    ]:
        configfile.set_key(c, key, text, "t")
        node = c
        for part in key.split("."):
            node = node[part]
        assert node == want and type(node) is type(want)


# --------------------------------------------------------------------------- launch/


def _fake(path, text: str) -> str:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _train_args(output: str) -> list[str]:
    """The arguments after `-m bertjax train` in `output`: a command line, or inside the
    --command= of a gcloud ssh line (tpu_vm.sh)."""
    found = []
    for line in output.splitlines():
        for words in (
            shlex.split(line),
            *(
                shlex.split(w.removeprefix("--command="))
                for w in shlex.split(line)
                if w.startswith("--command=")
            ),
        ):
            if "bertjax" in words and "train" in words:
                found.append(words[words.index("train") + 1 :])
    assert len(found) == 1, output
    return found[0]


def _config_of(args: list[str]) -> tuple[str, object]:
    spec = next(a.split("=", 1)[1] for a in args if a.startswith("--config="))
    workdir = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
    c = configfile.load_config(spec)
    for a in args:
        if a.startswith("--config."):
            key, value = a[len("--config.") :].split("=", 1)
            configfile.set_key(c, key, value, "flags")
    return workdir, c


def test_printed_commands_are_what_the_launch_scripts_run(tmp_path):
    spec = f"{MASKING}:tiny"
    base = configfile.load_config(spec)
    overrides = {"train.steps": 30, "tokenizer.vocab_size": 500}
    for key, value in overrides.items():
        configfile.set_key(base, key, value, "test")
    runs = sweep.load_sweep(spec)
    work = str(tmp_path / "w")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    echo = _fake(bin_dir / "python", 'echo "$0 $*" | sed "s|^[^ ]*|python|"\n')
    _fake(bin_dir / "srun", 'shift; "$@"\n')  # drops --kill-on-bad-exit, runs the rest
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHON": echo,
        "TPU_NAME": "t",
        "ZONE": "z",
        "DRY_RUN": "1",
        "SKIP_SETUP": "1",
        "SLURM_JOB_ID": "1",
        "GPUS_PER_NODE": "0",
    }
    for launcher in sorted(sweep.LAUNCHERS):
        lines = sweep.commands(spec, base, runs, work, launcher, overrides)
        prepares = [ln for ln in lines if " prepare data " in ln]
        launches = [ln for ln in lines if ln.startswith(("launch/", "sbatch "))]
        assert len(runs) == 2 and len(prepares) == len(launches) == 2 and len(lines) == 4
        assert lines.index(prepares[0]) < lines.index(launches[0])
        for run, line in zip(runs, launches, strict=True):
            want = sweep.run_config(base, run, work)
            if launcher == "slurm":
                line = "bash " + line.removeprefix("sbatch ")
            out = subprocess.run(
                line, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, out.stderr
            workdir, got = _config_of(_train_args(out.stdout))
            assert workdir == os.path.join(work, run.name)
            # The flags the script forwarded rebuild the run's config exactly.
            assert sweep.config_digest(got) == sweep.config_digest(want), launcher
            assert got.masking.strategy == run.overrides["masking.strategy"]
            assert got.train.steps == 30
        # The prepare lines carry the same config (as `prepare data` would read it).
        _, prep = _config_of(shlex.split(prepares[1])[3:] + ["--workdir=x"])
        assert prep.data.dir == sweep.run_config(base, runs[1], work).data.dir


# --------------------------------------------------------------------------- end to end


def test_a_sweep_runs_resumes_after_a_kill_and_is_then_done(tmp_path, capsys):
    spec = _sweep_file(tmp_path)
    work = str(tmp_path / "sweep")
    base = configfile.load_config(spec)
    runs = sweep.load_sweep(spec)
    assert [r.name for r in runs] == ["learning_rate=0.001", "learning_rate=0.003"]
    lines = sweep.commands(spec, base, runs, work, "local", {})
    assert len(lines) == 3  # one shared data directory, prepared once

    # Run 1 as a user would with the printed launch command, on data prepared here (the
    # printed `prepare data` line's config is checked in the launch test above).
    assert " prepare data " in lines[0] and lines[1].startswith("launch/local.sh ")
    sweep._prepare(sweep.run_config(base, runs[0], work))
    out = subprocess.run(
        lines[1],
        shell=True,
        cwd=ROOT,
        env={**trainlib.env(), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run1 = os.path.join(work, runs[0].name)
    with open(os.path.join(run1, "results.json")) as f:
        results1 = json.load(f)
    first = results1["downstream"]["demo_next"]
    assert first["metric"] == "accuracy" and first["split"] == "validation"
    assert first["seeds"] == [0] and len(first["scores"]) == 1
    with open(os.path.join(first["workdir"], "seed_0", "best", "config.json")) as f:
        assert json.load(f)["scores"]["validation"]["accuracy"] == first["scores"][0]
    mtime = os.path.getmtime(os.path.join(run1, "results.json"))

    # The sweep skips run 1 and is killed inside run 2's pretraining, after step 6
    # (checkpoint 4 saved).
    killed = trainlib.run(
        [
            sys.executable,
            os.path.join(ROOT, "tests", "faults.py"),
            "kill_after_step:6",
            "sweep",
            f"--config={spec}",
            f"--workdir={work}",
        ],
        timeout=600,
    )
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert f"run 1/2 {runs[0].name}: done" in killed.stdout
    run2 = os.path.join(work, runs[1].name)
    assert not os.path.exists(os.path.join(run2, "results.json"))

    capsys.readouterr()
    assert sweep.run_sweep(base, runs, work) == [runs[1].name]
    out = capsys.readouterr().out
    assert f"run 1/2 {runs[0].name}: done" in out
    assert "step 4/8 from checkpoint" in out  # resumed, not restarted
    assert os.path.getmtime(os.path.join(run1, "results.json")) == mtime
    with open(os.path.join(run2, "results.json")) as f:
        results2 = json.load(f)

    # Done: a third sweep trains nothing; a changed config is refused, not continued.
    assert sweep.run_sweep(base, runs, work) == []
    assert "bertjax train:" not in capsys.readouterr().out
    changed = base.copy_and_resolve_references()
    changed.train.steps = 9
    with pytest.raises(ValueError, match="started with another config"):
        sweep.run_sweep(changed, runs, work)

    # compare: one row per run in the sweep's order, the downstream figures from results.
    report = str(tmp_path / "report")
    compare.compare([work], report)
    with open(os.path.join(report, "report.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [r.name for r in runs]
    assert [r["overrides"] for r in rows] == [
        f"optim.learning_rate={v}" for v in ("0.001", "0.003")
    ]
    for row, results in zip(rows, (results1, results2), strict=True):
        d = results["downstream"]["demo_next"]
        assert float(row["demo_next/accuracy median"]) == pytest.approx(d["median"])
        assert int(row["demo_next/accuracy n"]) == 1
        assert int(row["steps"]) == 8
