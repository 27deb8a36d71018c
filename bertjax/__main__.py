"""python -m bertjax <command> [flags]: dispatch only.

Each command lives in its own module of bertjax/commands with its own absl flags.
`COMMAND --help` (or `help COMMAND`) prints its flags and docs page before anything heavy
loads; `--print_config` prints the resolved config and exits. Errors that are the user's
to fix (a bad config key, a missing or malformed file) print one line and exit 1; set
BERTJAX_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from types import ModuleType

COMMANDS = {
    "init": ("bertjax.commands.init", "a freshly initialised model directory from a config"),
    "describe": ("bertjax.commands.describe", "parameter table and FLOPs per token of a config"),
    "import": ("bertjax.commands.convert", "transformers dir or Google TF checkpoint -> bertjax"),
    "export": ("bertjax.commands.convert", "bertjax model directory -> transformers dir"),
    "fill_mask": ("bertjax.commands.fill_mask", "top-k predictions for the mask token"),
    "prepare": (
        "bertjax.commands.prepare",
        "prepare tokenizer | data | import-google: vocabulary, shards, Google-format TFRecords",
    ),
    "compile": (
        "bertjax.commands.compile",
        "the train step compiled for a Cloud TPU slice: HBM, FLOPs, step time",
    ),
    "train": ("bertjax.commands.train", "train (or resume) a task: sharded, checkpointed"),
    "bench": ("bertjax.commands.bench", "bench data | prepare | train: throughput figures"),
    "evaluate": ("bertjax.commands.evaluate", "a trained model's scores on a task's dev splits"),
    "predict": ("bertjax.commands.evaluate", "a task's test-split predictions (GLUE's format)"),
    "score": ("bertjax.commands.score", "score a predictions file as the official scripts do"),
    "compare": ("bertjax.commands.compare", "runs' logs, configs and results: a table and plots"),
    "sweep": (
        "bertjax.commands.sweep",
        "run (or print the commands of) a config's ablation runs: pretraining, then fine-tuning",
    ),
    "average": (
        "bertjax.commands.average",
        "the average of saved training checkpoints as a model directory",
    ),
}


HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "-helpshort")
HELP_FULL_ARGS = ("--helpfull", "-helpfull")


def _usage() -> str:
    rows = "\n".join(f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items())
    return (
        f"usage: python -m bertjax <command> [--flags]\ncommands:\n{rows}\n"
        "python -m bertjax <command> --help (or: help <command>) lists a command's flags."
    )


def _unknown(what: str, name: str, known: list[str]) -> str:
    """ "unknown command 'trian'; did you mean 'train'?" (the hint only when one is close)."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"error: unknown {what} {name!r}{hint}"


def _help(command: str, rest: list[str], full: bool = False) -> int:
    """Prints `command`'s help (its subcommand's, when `rest` names one); exit status."""
    if command not in COMMANDS:
        print(_unknown("command", command, list(COMMANDS)), file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    from bertjax.commands import flags as common

    module = importlib.import_module(COMMANDS[command][0])
    subs = common.subcommands(command, module.HELP)
    given = [a for a in rest if not a.startswith("-")]
    sub = given[0] if subs and given else None
    if sub is not None and sub not in subs:
        print(_unknown(f"{command} subcommand", sub, subs), file=sys.stderr)
        print(common.help_text(command, module), file=sys.stderr)
        return 2
    print(common.help_text(command, module, sub, full))
    return 0


def _print_config(command: str, module: ModuleType) -> None:
    """`--print_config`: the config the command would run with, as YAML."""
    from bertjax.commands import flags as common

    if not common.reads_config(command, module.HELP):
        raise ValueError(f"--print_config: {command} takes no --config")
    print(common.required(common.CONFIG))


def one_line(e: BaseException) -> str:
    """The informative line of an error; ml_collections embeds whole tracebacks in messages."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    line = lines[-1] if lines else type(e).__name__
    return re.sub(r"^[\w.]+(Error|Exception): ", "", line)


def os_error(e: OSError) -> str:
    """ "FILE: what went wrong" rather than "[Errno 2] ...: 'FILE'"."""
    if e.filename is not None and e.strerror:
        target = f" -> {e.filename2}" if e.filename2 is not None else ""
        return f"{e.filename}{target}: {e.strerror}"
    return one_line(e)


def unknown_key(e: BaseException, args: list[str]) -> str:
    """An override of a key the config does not have, named as it was given, with
    ml_collections' suggestion (its message is the repr of two lines)."""
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(..))
        e = e.args[0]
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    leaf = lines[0].strip("'\"") if lines else ""
    given = [a.split("=", 1)[0] for a in args if a.startswith("--config.")]
    named = next((g[len("--config.") :] for g in given if g.rsplit(".", 1)[-1] == leaf), leaf)
    hint = next((ln for ln in lines[1:] if ln.startswith("Did you mean")), "")
    quoted = hint.split('"')
    hint = f"; did you mean {quoted[1]!r}?" if len(quoted) >= 3 else ""
    return f"unknown config key {named!r} in the overrides{hint}"


def _config_file(args: list[str]) -> list[str]:
    """`args` with --config's file checked (it exists, is UTF-8 Python that compiles:
    one-line ValueError naming it otherwise) and, when it is not under the working
    directory but under the repository (configs/...), named by its repository path, as
    `sweep` finds config files (bertjax/configfile.py). ml_collections would otherwise
    fail with a traceback when the file cannot be loaded and an override follows."""
    from bertjax import configfile

    out = list(args)
    end = out.index("--") if "--" in out else len(out)
    for i, arg in enumerate(out[:end]):
        flag, sep, value = arg.partition("=")
        if flag not in ("--config", "-config"):
            continue
        at = i if sep else i + 1  # --config=FILE[:ARG] or --config FILE[:ARG]
        if at >= end:
            break
        value = value if sep else out[at]
        path, colon, preset = value.partition(":")
        if not path:
            continue  # --config= : "--config is required" where the command reads it
        found = configfile.find(path, "--config")
        if found != path:
            out[at] = (f"{flag}=" if sep else "") + found + colon + preset
    return out


def _raise_config_error(value: object) -> None:
    """ml_collections keeps a config that failed to load as an object that raises on
    first use (and prints as `<_ErrorConfig object ...>`): raise its error now."""
    if type(value).__name__ == "_ErrorConfig":
        raise object.__getattribute__(value, "_error")


def main() -> int:
    args = sys.argv[1:]
    if not args:
        print(_usage(), file=sys.stderr)
        return 2
    if args[0] in HELP_ARGS + HELP_FULL_ARGS or (
        args[0] == "help" and (len(args) == 1 or args[1].startswith("-"))
    ):
        print(_usage())
        return 0
    if args[0] == "help":
        return _help(args[1], args[2:], full=any(a in HELP_FULL_ARGS for a in args[2:]))
    command = args[0]
    if command not in COMMANDS:
        print(_unknown("command", command, list(COMMANDS)), file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    options = args[1 : args.index("--")] if "--" in args else args[1:]
    if any(a in HELP_ARGS + HELP_FULL_ARGS for a in options):
        return _help(command, options, full=any(a in HELP_FULL_ARGS for a in options))
    if _EXIT_ON_ERROR:  # a command, not main() called by a test: the allocator first
        from bertjax import allocator

        try:
            allocator.reexec()
        except ValueError as e:
            return _error(str(e))
    module = importlib.import_module(COMMANDS[command][0])
    from absl import flags

    from bertjax.commands import flags as common

    entry = getattr(module, f"main_{command}", None) or module.main
    try:
        given = _config_file(sys.argv[2:])
        argv = flags.FLAGS([f"bertjax {command}", *given])
    except flags.Error as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
        print(f"error: {unknown_key(e, sys.argv[2:])}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:  # ml_collections: bad value or preset
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # ml_collections: the config file could not be read
        print(f"error: --config: {os_error(e)}", file=sys.stderr)
        return 1
    try:
        _raise_config_error(common.CONFIG.value)
        if common.PRINT_CONFIG.value:
            _print_config(command, module)
        else:
            entry(argv)
    except (ValueError, OSError, flags.Error) as e:
        if os.environ.get("BERTJAX_DEBUG") or isinstance(e, BrokenPipeError):
            raise
        return _error(os_error(e) if isinstance(e, OSError) else one_line(e))
    return 0


# Set when run as `python -m bertjax`: an error ends the process at once.
_EXIT_ON_ERROR = False


def _error(message: str) -> int:
    """Prints the one-line error. As a command, then exits straight away: the background
    threads of a failed read (Orbax, tensorstore) may otherwise print "Event loop is
    closed" tracebacks under it while the interpreter shuts down."""
    stream = sys.stderr
    if _EXIT_ON_ERROR:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 -- until the process ends
    print(f"error: {message}", file=stream, flush=True)
    if _EXIT_ON_ERROR:
        sys.stdout.flush()
        os._exit(1)
    return 1


def _quiet_native_logs() -> None:
    """Start-up chatter of TensorFlow's C++ runtime kept off the terminal, set before
    anything imports it (a variable the user set wins). TF_CPP_MIN_LOG_LEVEL=2 drops its
    INFO and WARNING lines and keeps errors (as bertjax/data/tfsetup.py sets it for the
    input pipeline, which imports TF on first use); TF_ENABLE_ONEDNN_OPTS=0
    turns off the oneDNN kernels whose INFO notice is logged, twice, through absl before
    its logging is initialised (with "WARNING: All log messages before
    absl::InitializeLog() ..."), whatever the level: TensorFlow only runs the integer ops
    of the input pipeline here, which oneDNN does not change. gRPC (multi-host runs):
    errors only."""
    for name, value in (
        ("TF_CPP_MIN_LOG_LEVEL", "2"),
        ("TF_ENABLE_ONEDNN_OPTS", "0"),
        ("GRPC_VERBOSITY", "ERROR"),
    ):
        os.environ.setdefault(name, value)


if __name__ == "__main__":
    _EXIT_ON_ERROR = True
    _quiet_native_logs()
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head` stopped reading: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 141  # 128 + SIGPIPE, as a shell tool ends
    except KeyboardInterrupt:  # Ctrl-C where no command handles it (train saves first)
        sys.stdout.flush()
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 -- background threads' noise
        os.write(2, b"error: interrupted\n")
        os._exit(130)
    sys.exit(status)
