"""The command line's help: `COMMAND --help` for every command (its flags, their help and
defaults, its docs page) in well under a second and before JAX or TensorFlow loads;
`help COMMAND`; unknown commands; `--print_config`.

Each command runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import time

import clilib
import pytest
import yaml

from bertjax.__main__ import COMMANDS

# Nothing of these may be imported before the help is printed.
HEAVY = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax",
    "tensorflow",
    "tensorstore",
    "transformers",
    "torch",
)
# The docs page each command's help points to (docs/<page>).
DOCS = {
    "init": "training.md",
    "describe": "training.md",
    "train": "training.md",
    "import": "conversion.md",
    "export": "conversion.md",
    "fill_mask": "conversion.md",
    "prepare": "data.md",
    "prepare tokenizer": "data.md",
    "prepare data": "data.md",
    "prepare import-google": "data.md",
    "compile": "accelerators.md",
    "bench": "benchmarks.md",
    "bench data": "data.md",
    "bench prepare": "benchmarks.md",
    "bench train": "benchmarks.md",
    "evaluate": "finetuning.md",
    "predict": "finetuning.md",
    "score": "finetuning.md",
    "compare": "ablations.md",
    "sweep": "ablations.md",
    "average": "recipes.md",
}
SUBCOMMANDS = {
    "prepare": ("tokenizer", "data", "import-google"),
    "bench": ("data", "prepare", "train"),
}


def bertjax(*args: str, importtime: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    """(the finished `python -m bertjax ARGS`, its wall-clock seconds)."""
    start = time.perf_counter()
    r = clilib.python(
        *(["-X", "importtime"] if importtime else []), "-m", "bertjax", *args, timeout=120
    )
    return r, time.perf_counter() - start


def _usage(command: str):
    """The command's Usage (its subcommands' flags together for a bare `prepare`)."""
    from bertjax.commands import flags as common

    name, _, sub = command.partition(" ")
    module = importlib.import_module(COMMANDS[name][0])
    return common.usage_of(name, module.HELP, sub or None)


def test_every_command_and_subcommand_is_listed_here():
    assert set(DOCS) == set(COMMANDS) | {
        f"{c} {s}" for c, subs in SUBCOMMANDS.items() for s in subs
    }


@pytest.mark.parametrize("command", sorted(DOCS))
def test_help_lists_the_flags_before_anything_heavy_loads(command):
    r, seconds = bertjax(*command.split(), "--help", importtime=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"usage: python -m bertjax {command.split()[0]}"), lines[0]
    for flag in _usage(command).flags:
        assert re.search(rf"^  --(\[no\])?{flag.name}\b", r.stdout, re.M), (flag.name, r.stdout)
    assert lines[-1].startswith("docs: ") and f"docs/{DOCS[command]}" in lines[-1], lines[-1]
    imported = {
        m.group(1).strip().split(".")[0]
        for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", r.stderr, re.M)
    }
    assert imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert seconds < 2.0, f"{command} --help took {seconds:.2f} s"


def test_help_shows_each_flag_with_its_help_and_default():
    r, _ = bertjax("bench", "train", "--help")
    assert "usage: python -m bertjax bench train [--flags]" in r.stdout
    assert "  --seconds=FLOAT\n      How long to time each side. (default: 10.0)" in r.stdout
    assert "  --[no]vs_torch\n" in r.stdout and not re.search(r"^  --workers=", r.stdout, re.M)
    assert "  --[no]print_config\n" in r.stdout  # bench train takes --config
    r, _ = bertjax("sweep", "--help")
    assert "  --print_commands=local|slurm|tpu_vm\n      Print one command" in r.stdout
    assert "--coordinator_address=STR" in r.stdout  # the multi-host flags
    r, _ = bertjax("score", "--help")
    assert "--print_config" not in r.stdout  # no --config to print


def test_h_help_command_and_helpfull_agree():
    help_, _ = bertjax("train", "--help")
    for args in (["train", "-h"], ["help", "train"], ["train", "--workdir=/x", "--help"]):
        r, _ = bertjax(*args)
        assert r.returncode == 0 and r.stdout == help_.stdout, args
    full, _ = bertjax("train", "--helpfull")
    assert full.returncode == 0 and full.stdout.startswith(help_.stdout)
    assert "every flag defined in this process" in full.stdout
    sub, _ = bertjax("prepare", "data", "--help")
    assert bertjax("help", "prepare", "data")[0].stdout == sub.stdout
    assert not re.search(r"^  --tokenizer=", sub.stdout, re.M)  # import-google's flag


def test_a_command_with_subcommands_lists_them():
    r, _ = bertjax("prepare", "--help")
    assert r.stdout.startswith("usage: python -m bertjax prepare tokenizer|data|import-google")
    assert "subcommands: tokenizer, data, import-google" in r.stdout
    for flag in ("config", "kind", "from", "validation", "tokenizer", "out"):
        assert f"  --{flag}=" in r.stdout, flag


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"], ["help", "--help"]])
def test_top_level_help_lists_the_commands(args):
    r, _ = bertjax(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m bertjax <command>")
    assert all(re.search(rf"^  {name} ", r.stdout, re.M) for name in COMMANDS)


def test_no_command_is_a_usage_error():
    r, _ = bertjax()
    assert r.returncode == 2 and r.stderr.startswith("usage: python -m bertjax <command>")


@pytest.mark.parametrize(
    "args, line",
    [
        (["trian"], "error: unknown command 'trian'; did you mean 'train'?"),
        (["trian", "--help"], "error: unknown command 'trian'; did you mean 'train'?"),
        (["help", "exprot"], "error: unknown command 'exprot'; did you mean 'export'?"),
        (["frobnicate"], "error: unknown command 'frobnicate'"),
        (
            ["prepare", "dta", "--help"],
            "error: unknown prepare subcommand 'dta'; did you mean 'data'?",
        ),
    ],
)
def test_unknown_commands_are_named_with_a_suggestion(args, line):
    r, _ = bertjax(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines()[0] == line, r.stderr


def test_print_config_shows_the_resolved_config_and_does_nothing(tmp_path):
    workdir = tmp_path / "run"
    r, _ = bertjax(
        "train",
        "--config=configs/pretrain.py:bert_tiny",
        "--print_config",
        "--config.train.steps=7",
        "--config.model.num_layers=3",
        f"--workdir={workdir}",
    )
    assert r.returncode == 0, r.stderr
    config = yaml.unsafe_load(r.stdout)  # ml_collections writes tuples as !!python/tuple
    assert config["train"]["steps"] == 7 and config["model"]["num_layers"] == 3
    assert config["model"]["hidden_size"] == 128  # the preset's
    assert not workdir.exists()


@pytest.mark.parametrize(
    "command, spec",
    [
        ("describe", "configs/pretrain.py:bert_tiny"),
        ("init", "configs/pretrain.py:bert_tiny"),
        ("compile", "configs/pretrain.py:bert_tiny"),
        ("sweep", "configs/ablations/masking.py:cpu"),
        ("evaluate", "configs/finetune.py:sst2,bert_tiny"),
        ("predict", "configs/finetune.py:sst2,bert_tiny"),
        ("bench data", "configs/pretrain.py:bert_tiny"),
        ("prepare data", "configs/pretrain.py:bert_tiny"),
    ],
)
def test_print_config_on_every_command_that_takes_a_config(command, spec):
    r, _ = bertjax(*command.split(), f"--config={spec}", "--config.seed=123", "--print_config")
    assert r.returncode == 0, r.stderr
    assert yaml.unsafe_load(r.stdout)["seed"] == 123


def test_print_config_without_a_config_is_one_line():
    r, _ = bertjax("score", "--print_config")
    assert r.returncode == 1 and r.stderr == "error: --print_config: score takes no --config\n"
    r, _ = bertjax("train", "--print_config")
    assert r.returncode == 1 and r.stderr == "error: --config is required\n"


def test_the_help_lists_every_flag_a_command_reads():
    """The flags a command module defines, the shared ones it reads (`common.X`) and, when
    it joins a multi-host run, bertjax.distributed's all appear in its --help."""
    from absl import flags

    from bertjax.commands import flags as common

    by_module = flags.FLAGS.flags_by_module_dict()
    names: dict[str, list[str]] = {}  # module -> its commands (import and export share one)
    for name, (module_name, _) in COMMANDS.items():
        names.setdefault(module_name, []).append(name)
    for module_name, commands in names.items():
        module = importlib.import_module(module_name)
        listed = set().union(
            *({f.name for f in common.usage_of(c, module.HELP).flags} for c in commands)
        )
        source = open(module.__file__, encoding="utf-8").read()
        reads = {f.name for f in by_module.get(module_name, [])}
        reads |= {
            getattr(common, a).name
            for a in re.findall(r"common\.([A-Z_]+)\b", source)
            if a != "PRINT_CONFIG"
        }
        if "distributed.initialize_from_flags" in source:
            reads |= {f.name for f in by_module["bertjax.distributed"]}
        assert reads and reads <= listed, (module_name, reads - listed)
