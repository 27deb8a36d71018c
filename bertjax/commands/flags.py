"""Flags shared by several commands, defined once (absl forbids defining a flag twice)."""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and preset, e.g. configs/pretrain.py:bert_base; "
    "override any key with --config.KEY=VALUE.", lock_config=True)
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "bertjax model directory to read.")
OUT = flags.DEFINE_string("out", None, "Output directory (must not exist unless --overwrite).")
WORKDIR = flags.DEFINE_string("workdir", None, "train: checkpoints, logs and the final model; "
                              "sweep: one directory per run. Re-running with the same one "
                              "resumes.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
FROM = flags.DEFINE_string("from", None, "import: HF PyTorch model dir or Google TF checkpoint "
                           "dir; prepare import-google: the train TFRecords (comma-separated "
                           "globs).")
LOWERCASE = flags.DEFINE_bool("lowercase", None, "Google vocab.txt files: lowercase input "
                              "(default: guessed from the directory name, 'uncased').")


def required(flag: flags.FlagHolder) -> object:
    """The flag's value, or a one-line error naming it."""
    if flag.value is None or flag.value == "":
        raise ValueError(f"--{flag.name} is required")
    return flag.value
