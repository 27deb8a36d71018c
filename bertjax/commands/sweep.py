r"""`python -m bertjax sweep`: the runs of an ablation a config file declares.

  python -m bertjax sweep --config=configs/ablations/masking.py:cpu --workdir=/tmp/masking
  python -m bertjax sweep --config=configs/ablations/masking.py:cpu --workdir=/tmp/masking \
      --config.train.steps=300 --print_commands=local

Runs every run of `get_sweep` into WORKDIR/<run name>/ one after another (data, then
pretraining, then the config's downstream fine-tuning, then results.json); re-running
resumes. --print_commands=local|tpu_vm|slurm prints the commands for launch/ instead
and runs nothing. --config.KEY=VALUE overrides apply to every run. The library is
bertjax/tools/sweep.py; `compare WORKDIR` reports on the runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from absl import flags
from ml_collections import config_flags

from bertjax import distributed
from bertjax.commands import flags as common
from bertjax.tools import sweep

if TYPE_CHECKING:
    from bertjax import train

_PRINT = flags.DEFINE_enum(
    "print_commands",
    None,
    sorted(sweep.LAUNCHERS),
    "Print one command per run for this launch/ script instead of running the runs.",
)

HELP = {
    "sweep": common.Usage(
        (
            common.CONFIG,
            common.WORKDIR,
            _PRINT,
            distributed.COORDINATOR,
            distributed.NUM_PROCESSES,
            distributed.PROCESS_ID,
            distributed.LOCAL_DEVICE_IDS,
            distributed.CPU_COLLECTIVES,
        ),
        "ablations.md",
    )
}

# Hooks every run of this command gets (tests/faults.py adds fault injection here).
HOOKS: list[train.Hook] = []


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(
            f"unexpected arguments {argv[1:]}; usage: python -m bertjax sweep "
            "--config=FILE:ARG --workdir=DIR [--print_commands=local]"
        )
    base = common.required(common.CONFIG)
    workdir = common.required(common.WORKDIR)
    spec = config_flags.get_config_filename(flags.FLAGS["config"])
    runs = sweep.load_sweep(spec)
    if _PRINT.value:
        overrides = config_flags.get_override_values(flags.FLAGS["config"])
        for line in sweep.commands(spec, base, runs, workdir, _PRINT.value, overrides):
            print(line)
        return
    distributed.initialize_from_flags()
    sweep.run_sweep(base, runs, workdir, HOOKS)
