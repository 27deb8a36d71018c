"""Flags shared by several commands, defined once (absl forbids defining a flag twice), and
the `--help` text built from the flags themselves.

Each command module names what it reads in `HELP`, a {command: Usage} table (keys
"prepare data" for a subcommand), next to the absl flags it defines. `python -m bertjax
COMMAND --help` imports that module and renders its `Usage`: the module docstring, then
each flag's name, help string and default as absl holds them, so a flag is described in
one place only. Command modules therefore import nothing heavy (JAX, TensorFlow, ...) at
module level: their work imports it inside `main`.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from absl import flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file and preset, e.g. configs/pretrain.py:bert_base; "
    "override any key with --config.KEY=VALUE.",
    lock_config=True,
)
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "bertjax model directory to read.")
OUT = flags.DEFINE_string("out", None, "Output directory (must not exist unless --overwrite).")
WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "train: checkpoints, logs and the final model; "
    "sweep: one directory per run. Re-running with the same one "
    "resumes.",
)
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
FROM = flags.DEFINE_string(
    "from",
    None,
    "import: HF PyTorch model dir or Google TF checkpoint "
    "dir; prepare import-google: the train TFRecords (comma-separated "
    "globs).",
)
LOWERCASE = flags.DEFINE_bool(
    "lowercase",
    None,
    "Google vocab.txt files: lowercase input "
    "(default: guessed from the directory name, 'uncased').",
)
PRINT_CONFIG = flags.DEFINE_bool(
    "print_config",
    False,
    "Print the resolved config (the "
    "preset with every --config.KEY=VALUE override applied) "
    "and exit without doing anything.",
)


def required(flag: flags.FlagHolder) -> object:
    """The flag's value, or a one-line error naming it."""
    if flag.value is None or flag.value == "":
        raise ValueError(f"--{flag.name} is required")
    return flag.value


def check_out(out: str) -> None:
    """Refuses an existing --out without --overwrite before any work (the writers check
    again when they publish)."""
    from bertjax import paths

    if not OVERWRITE.value and paths.exists(out):
        raise FileExistsError(17, "already exists (pass --overwrite to replace it)", out)


def model_dir(flag: flags.FlagHolder) -> str:
    """The directory `flag` (--checkpoint) names, checked by `check_model_dir`."""
    return check_model_dir(str(required(flag)), f"--{flag.name}")


def check_model_dir(path: str, key: str) -> str:
    """`path`, given as `key` (--checkpoint, config.init_from): FileNotFoundError naming
    the key when there is no such directory; ValueError when it is a training workdir
    (whose config.json is the run's, not a model directory's), naming the model
    directory inside it."""
    from bertjax import paths

    if not paths.isdir(path):
        raise FileNotFoundError(2, "no such directory", f"{key}={path}")
    if paths.isdir(paths.join(path, "checkpoints")):
        inside = [
            paths.join(path, d) for d in ("model", "best") if paths.isdir(paths.join(path, d))
        ]
        hint = (
            f"did you mean {key}={' or '.join(inside)}?"
            if inside
            else f"its model directory, {paths.join(path, 'model')}, is written when "
            "training finishes"
        )
        raise ValueError(f"{key}={path} is a training workdir, not a model directory: {hint}")
    return path


@dataclasses.dataclass(frozen=True)
class Usage:
    """What `--help` says of one command beyond its module's docstring."""

    flags: tuple[Any, ...]  # the flags it reads (FlagHolders, or absl Flags), in help order
    docs: str  # its page under docs/
    args: str = ""  # positional arguments, as the usage line shows them


# The value a flag's usage line shows, by absl's flag_type().
_METAVARS = {
    "int": "INT",
    "float": "FLOAT",
    "string": "STR",
    "config object": "FILE[:ARG]",
    "comma separated list of strings": "A,B,...",
}


def _flag_lines(flag: Any) -> list[str]:
    """A flag's usage line, then its help string and default, wrapped, as absl has them."""
    f = flags.FLAGS[flag.name]
    text = f.help
    if f.boolean:
        head = f"--[no]{f.name}"
    elif getattr(f.parser, "enum_values", None):
        head = f"--{f.name}={'|'.join(f.parser.enum_values)}"
        text = text.removeprefix(f"<{'|'.join(f.parser.enum_values)}>: ")  # absl's prefix
    else:
        head = f"--{f.name}={_METAVARS.get(f.flag_type(), 'VALUE')}"
    if f.default is None and "default" in text:  # the help says what unset means
        return [f"  {head}", *(f"      {line}" for line in _wrap(text))]
    if f.default is None:
        default = "none"
    elif isinstance(f.default, bool):
        default = str(f.default).lower()
    elif isinstance(f.default, list | tuple):
        default = ",".join(map(str, f.default))
    else:
        default = repr(f.default) if isinstance(f.default, str) else str(f.default)
    return [f"  {head}", *(f"      {line}" for line in _wrap(f"{text} (default: {default})"))]


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 74, break_on_hyphens=False)  # 80 columns with the indent


def subcommands(command: str, table: Mapping[str, Usage]) -> list[str]:
    """The subcommands `table` declares for `command` ("prepare data" -> "data")."""
    return [key.split(" ", 1)[1] for key in table if key.startswith(f"{command} ")]


def usage_of(command: str, table: Mapping[str, Usage], sub: str | None = None) -> Usage:
    """The Usage of `command [sub]`: without a sub, every flag of its subcommands."""
    if sub is not None:
        return table[f"{command} {sub}"]
    if command in table:
        return table[command]
    parts = [table[f"{command} {s}"] for s in subcommands(command, table)]
    seen: dict[str, Any] = {}
    for part in parts:
        seen.update({f.name: f for f in part.flags if f.name not in seen})
    return Usage(tuple(seen.values()), parts[0].docs)


def reads_config(command: str, table: Mapping[str, Usage]) -> bool:
    """Whether `command` (any of its subcommands) takes --config, hence --print_config."""
    return any(f.name == CONFIG.name for f in usage_of(command, table).flags)


def help_text(command: str, module: ModuleType, sub: str | None = None, full: bool = False) -> str:
    """`python -m bertjax COMMAND [SUB] --help`: the usage line, the command module's
    docstring, each flag it reads with its help and default, and its docs page. With
    `full` (--helpfull), absl's list of every flag defined in this process follows."""
    table: Mapping[str, Usage] = module.HELP
    usage = usage_of(command, table, sub)
    subs = subcommands(command, table)
    name = f"{command} {sub}" if sub else command
    if subs and not sub:
        name = f"{command} {'|'.join(subs)}"
    args = f" {usage.args}" if usage.args else ""
    lines = [
        f"usage: python -m bertjax {name} [--flags]{args}",
        "",
        (module.__doc__ or "").strip(),
        "",
        "flags:",
    ]
    listed = list(usage.flags)
    if any(f.name == CONFIG.name for f in listed):
        listed.append(PRINT_CONFIG)
    for flag in listed:
        lines += _flag_lines(flag)
    lines.append("")
    if subs and not sub:
        lines.append(
            f"subcommands: {', '.join(subs)} (python -m bertjax {command} SUB --help "
            "lists one's flags)"
        )
    pages: dict[str, list[str]] = {}  # page -> the subcommands it documents
    for s in subs if subs and not sub else [sub]:
        pages.setdefault(usage_of(command, table, s).docs, []).append(f"{command} {s}")
    if len(pages) == 1:
        lines.append(f"docs: docs/{next(iter(pages))}")
    else:
        lines.append(
            "docs: "
            + ", ".join(f"docs/{page} ({', '.join(names)})" for page, names in pages.items())
        )
    if full:
        lines += ["", "every flag defined in this process (absl):", flags.FLAGS.get_help()]
    return "\n".join(lines)
