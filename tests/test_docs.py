"""Every command example in README.md and docs/*.md parses as the code stands.

Each `python -m bertjax ...` command in a fenced code block (`\\` continuations joined,
`&&` / `;` / `|` chains split, comments dropped; other commands such as pip, bash scripts
or `python benchmarks/...` ignored) is checked without running it:

  - the command is one of bertjax/__main__.py's COMMANDS, and `prepare` / `bench` name a
    subcommand the command takes;
  - every `--flag` is one absl accepts for that command: defined by the command's module
    or a module it imports at module level (bertjax/commands/flags.py's shared flags,
    bertjax/distributed.py's multi-host flags), by absl itself, or a help flag;
  - `--config=FILE:ARG` loads (bertjax/configfile.py, as `sweep` and `downstream` load
    configs) and every `--config.KEY=VALUE` override names a key of that config and
    takes the value.

The checker is `check_markdown(text, name)`; the docs are its input, and a test feeds it
bad examples to show that each kind of mistake is caught. Relative links and the
repository paths the pages name are checked too. Importing the command modules imports
JAX; a config loads in milliseconds once the first has.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import importlib
import importlib.util
import os
import re
import shlex

import pytest
from absl import flags

from bertjax import configfile
from bertjax.__main__ import COMMANDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [
    "README.md",
    *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))),
]

# Config specs written with placeholders in a page's examples, and the config each stands
# for (so that its overrides are still checked). Anything else after --config= must load.
PLACEHOLDER_SPECS = {
    "configs/pretrain.py:PRESET": "configs/pretrain.py:bert_base",
    "configs/pretrain.py:PRESET[,runlocal]": "configs/pretrain.py:bert_base",
    "configs/finetune.py:DATASET[,PRESET][,runlocal]": "configs/finetune.py:sst2",
    "configs/distill.py:TEACHER_to_STUDENT[,runlocal]": (
        "configs/distill.py:bert_base_to_distilbert_base"
    ),
}
# `--config.KEY=VALUE` written literally stands for any override.
PLACEHOLDER_KEY = "KEY"
# A value in capitals (N, DIR, DATA_512) is a placeholder: only its key is checked.
PLACEHOLDER_VALUE = re.compile(r"[A-Z][A-Z0-9_]*")
# Commands that take a subcommand, when the command module declares no HELP table.
SUBCOMMAND_COMMANDS = ("prepare", "bench")
# Commands that take positional arguments beyond a subcommand: (fewest, most).
POSITIONALS = {"compare": (1, None), "fill_mask": (1, 1)}

_SHELL_SEPARATORS = {"&&", "||", ";", "|", "&", ";;"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclasses.dataclass(frozen=True)
class Example:
    """One `python -m bertjax` command of a page: where it starts and its arguments."""

    where: str  # PAGE:LINE
    args: tuple[str, ...]  # after `python -m bertjax`

    def __str__(self) -> str:
        return f"{self.where}: python -m bertjax {shlex.join(self.args)}"


# --- reading commands out of Markdown ----------------------------------------------------


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """The fenced code blocks of a Markdown text: (line number of the block's first line,
    its lines)."""
    blocks, current, start, fence = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        m = _FENCE.match(line)
        if current is None:
            if m:
                current, start, fence = [], number + 1, m.group(1)
        elif m and m.group(1) == fence and not line.strip()[len(fence) :].strip():
            blocks.append((start, current))
            current = None
        else:
            current.append(line)
    return blocks


def _strip_comment(line: str) -> str:
    """The line without a shell comment: a `#` outside quotes that starts a word."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(lines: list[str], first: int) -> list[tuple[int, list[str]]]:
    """The simple commands of a block of shell lines: (line number, words), with
    continuations joined, comments dropped and `&&` / `||` / `;` / `|` chains split."""
    logical: list[tuple[int, str]] = []
    pending, start = "", first
    for number, raw in enumerate(lines, start=first):
        line = _strip_comment(raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    if pending:
        logical.append((start, pending))
    out = []
    for number, line in logical:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, ""
        try:
            words = list(lexer)
        except ValueError:  # unbalanced quotes: not a shell line (output, prose)
            continue
        command: list[str] = []
        for word in [*words, ";"]:
            if word in _SHELL_SEPARATORS:
                if command:
                    out.append((number, command))
                command = []
            else:
                command.append(word)
    return out


def bertjax_examples(text: str, name: str) -> list[Example]:
    """Every `python -m bertjax` command in the fenced code blocks of a page."""
    examples = []
    for first, lines in code_blocks(text):
        for number, words in shell_commands(lines, first):
            while words and _ASSIGNMENT.match(words[0]):  # VAR=value python -m ...
                words = words[1:]
            if (
                len(words) >= 3
                and re.fullmatch(r"python[0-9.]*", os.path.basename(words[0]))
                and words[1:3] == ["-m", "bertjax"]
            ):
                examples.append(Example(f"{name}:{number}", tuple(words[3:])))
    return examples


# --- what each command accepts ---------------------------------------------------------


def _module_level_imports(module: str) -> set[str]:
    """The bertjax modules `module` imports when it is imported: its module-level import
    statements (those inside functions run after the flags are parsed)."""
    spec = importlib.util.find_spec(module)
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    found = set()
    for name in names:
        if not name.startswith("bertjax"):
            continue
        try:
            if importlib.util.find_spec(name) is not None:
                found.add(name)
        except (ImportError, AttributeError, ValueError):  # a name inside a module
            pass
    return found


def accepted_flags(command: str) -> set[str]:
    """The flags absl accepts when `python -m bertjax COMMAND` runs: those defined by the
    command's module and the bertjax modules it imports at module level, absl's own, and
    the help flags bertjax/__main__.py answers itself."""
    module = COMMANDS[command][0]
    importlib.import_module(module)  # defines its flags
    closure, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo.extend(_module_level_imports(name))
    by_module = flags.FLAGS.flags_by_module_dict()
    names = {
        f.name for m, fs in by_module.items() if m in closure or m.startswith("absl") for f in fs
    }
    main = importlib.import_module("bertjax.__main__")
    for arg in (*getattr(main, "HELP_ARGS", ()), *getattr(main, "HELP_FULL_ARGS", ())):
        if arg.startswith("--"):
            names.add(arg[2:])
    return names


def subcommands(command: str) -> list[str]:
    """The subcommands `command` takes ([] for none): from its module's HELP table
    ("prepare data" -> "data") when it declares one, else from the usage error its main()
    raises for an unknown subcommand."""
    module = importlib.import_module(COMMANDS[command][0])
    table = getattr(module, "HELP", None)
    if table is not None:
        return [key.split(" ", 1)[1] for key in table if key.startswith(f"{command} ")]
    if command not in SUBCOMMAND_COMMANDS:
        return []
    entry = getattr(module, f"main_{command}", None) or module.main
    try:
        entry([f"bertjax {command}", "no-such-subcommand"])
    except ValueError as e:
        words = re.findall(rf"\b{command} ([a-z][a-z|-]*)", str(e))
        return [w for group in words for w in group.split("|")]
    raise AssertionError(f"{command} accepted the subcommand 'no-such-subcommand'")


def _flag(args: list[str], i: int, known: set[str]) -> tuple[str, str | None, int]:
    """(name, value or None, index of the next argument) of the flag at args[i]."""
    name, eq, value = args[i][2:].partition("=")
    if eq:
        return name, value, i + 1
    if name in known and not _boolean(name, known) and i + 1 < len(args):
        return name, args[i + 1], i + 2  # --flag VALUE
    return name, None, i + 1


def _boolean(name: str, known: set[str]) -> bool:
    """Whether --name takes no value: an absl boolean, or a help flag (not absl's)."""
    return name in known and (name not in flags.FLAGS or flags.FLAGS[name].boolean)


def check_config(spec: str, overrides: list[tuple[str, str]]) -> list[str]:
    """Problems with `--config=spec` and its `--config.KEY=VALUE` overrides."""
    spec = PLACEHOLDER_SPECS.get(spec, spec)
    try:
        config = configfile.load_config(spec, "--config")
    except Exception as e:  # noqa: BLE001 -- any failure to load is the finding
        return [f"--config={spec}: {type(e).__name__}: {e}"]
    problems = []
    for key, value in overrides:
        if key == PLACEHOLDER_KEY:
            continue
        node = config
        *parents, leaf = key.split(".")
        try:
            for part in parents:
                node = node[part]
            current = node[leaf]
        except (KeyError, TypeError, AttributeError):
            problems.append(f"--config.{key}: unknown config key in {spec}")
            continue
        if PLACEHOLDER_VALUE.fullmatch(value) and not isinstance(current, str):
            continue
        try:
            configfile.set_key(config, key, value, f"--config.{key}")
        except ValueError as e:
            problems.append(str(e))
    return problems


def check_example(example: Example) -> list[str]:
    """Problems with one command example (empty when it parses)."""
    args = example.args
    if not args:
        return ["no command"]
    command = args[0]
    if command not in COMMANDS:
        return [f"unknown command {command!r}"]
    known = accepted_flags(command)
    subs = subcommands(command)
    # `[--flag=VALUE]` marks an optional flag and `...` an elision: read past both.
    args_ = [a[1:-1] if a.startswith("[-") and a.endswith("]") else a for a in args[1:]]
    args_ = [a for a in args_ if a not in ("...", "[...]")]
    problems, positional, spec, overrides = [], [], None, []
    i = 0
    while i < len(args_):
        arg = args_[i]
        if not arg.startswith("-"):
            positional.append(arg)
            i += 1
        elif arg.startswith("--config."):
            key, eq, value = arg[len("--config.") :].partition("=")
            if not eq:
                problems.append(f"{arg}: expected --config.KEY=VALUE")
            overrides.append((key, value))
            i += 1
        else:
            name, value, i = _flag(args_, i, known)
            if name.startswith("no") and _boolean(name[2:], known) and value is None:
                continue  # --noflag
            if name not in known:
                problems.append(f"--{name}: not a flag of `{command}`")
            elif name == "config":
                spec = value
    if subs:
        if not positional:
            problems.append(f"`{command}` needs a subcommand: {', '.join(subs)}")
        elif positional[0] not in subs:
            problems.append(
                f"`{command} {positional[0]}`: unknown subcommand (expected {', '.join(subs)})"
            )
        positional = positional[1:]
    least, most = POSITIONALS.get(command, (0, 0))
    if len(positional) < least or (most is not None and len(positional) > most):
        problems.append(
            f"`{command}` takes {least if least == most else f'{least}+'} "
            f"positional argument(s), got {positional}"
        )
    if spec is not None:
        problems += check_config(spec, overrides)
    elif overrides:
        problems.append("--config.KEY=VALUE overrides without --config")
    return problems


def check_markdown(text: str, name: str) -> list[str]:
    """Every problem of every `python -m bertjax` example in a page, one line each."""
    return [
        f"{example}\n    {problem}"
        for example in bertjax_examples(text, name)
        for problem in check_example(example)
    ]


def _read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


# --- the pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_command_example_parses(page):
    problems = check_markdown(_read(page), page)
    assert not problems, "\n".join(problems)


def test_the_pages_have_command_examples():
    """The extraction finds the examples (an empty result would pass vacuously)."""
    counts = {page: len(bertjax_examples(_read(page), page)) for page in PAGES}
    assert counts["README.md"] >= 5, counts
    for page in (
        "data",
        "training",
        "finetuning",
        "ablations",
        "conversion",
        "accelerators",
        "benchmarks",
    ):
        assert counts[f"docs/{page}.md"] >= 1, counts
    commands = {e.args[0] for page in PAGES for e in bertjax_examples(_read(page), page)}
    assert commands == set(COMMANDS), f"commands without an example: {set(COMMANDS) - commands}"


def test_readme_is_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 200


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: str) -> set[str]:
    seen: dict[str, int] = {}
    outside = _read(page).splitlines()
    in_code = False
    for line in outside:
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            slug = _slug(line.lstrip("#"))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            if n:
                seen[f"{slug}-{n}"] = 1
    return set(seen)


def _prose(page: str) -> str:
    """The page without its fenced code blocks."""
    text, in_code = [], False
    for line in _read(page).splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code:
            text.append(line)
    return "\n".join(text)


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(os.path.join(ROOT, file)):
            problems.append(f"{target}: {file} does not exist")
        elif anchor and file.endswith(".md") and anchor not in _anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_named_repository_paths_exist(page):
    """A path the prose names in backticks (`bertjax/tools/aot.py`, `configs/`) exists."""
    pattern = r"`((?:bertjax|configs|tests|benchmarks|launch|notebooks|docs)/[\w./-]*)`"
    missing = sorted(
        {p for p in re.findall(pattern, _prose(page)) if not os.path.exists(os.path.join(ROOT, p))}
    )
    assert not missing, missing


def test_help_names_existing_pages():
    """The docs pages the commands' --help points at (a HELP table's Usage.docs) exist."""
    for module in sorted({m for m, _ in COMMANDS.values()}):
        table = getattr(importlib.import_module(module), "HELP", None) or {}
        for key, usage in table.items():
            page = getattr(usage, "docs", "")
            if page:
                assert os.path.exists(os.path.join(ROOT, "docs", page.split("#")[0])), (key, page)


# --- the checker itself --------------------------------------------------------------------

GOOD = """
Some prose with `python -m bertjax trian` inline (not checked: not in a fenced block).

```bash
# a comment line, then a chain with continuations and an environment variable
python3 -m venv .venv && . .venv/bin/activate \\
  && XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m bertjax train \\
       --config=configs/pretrain.py:bert_tiny,runlocal --workdir=/tmp/run \\
       --config.train.steps=N --config.data.source='bert:/data/*.txt#x'  # a comment
python -m bertjax bench prepare --config=configs/pretrain.py:PRESET [--workers=1,2]
python -m bertjax import --from=DIR --out=/tmp/x --nolowercase
python -m bertjax fill_mask --checkpoint=/tmp/m --top_k 3 "a [MASK] b"
python -m bertjax prepare data --help
python benchmarks/demo_tasks.py --no-such-flag
```
"""

BAD = """
```bash
python -m bertjax trian --config=configs/pretrain.py:bert_tiny
python -m bertjax train --config=configs/pretrain.py:bert_tiny --wrokdir=/tmp/x
python -m bertjax train --config=configs/pretrain.py:bert_tiny --workdir=/tmp/x \\
    --config.train.stesp=3
python -m bertjax train --config=configs/pretrain.py:bert_tinyy --workdir=/tmp/x
python -m bertjax train --config=configs/pretrain.py:bert_tiny --config.train.steps=many
python -m bertjax describe --config=configs/pretrain.py:bert_tiny --config.modle.num_layers=2
python -m bertjax prepare dta --config=configs/pretrain.py:bert_tiny
python -m bertjax fill_mask --checkpoint=/tmp/m --workers=2 "a [MASK] b"
python -m bertjax train --config=configs/no_such_file.py:x --workdir=/tmp/x
python -m bertjax export --checkpoint=/tmp/m --config.train.steps=3 --out=/tmp/hf
```
"""


def test_the_checker_reads_chains_continuations_and_placeholders():
    examples = bertjax_examples(GOOD, "GOOD")
    assert [e.args[0] for e in examples] == ["train", "bench", "import", "fill_mask", "prepare"]
    assert examples[0].where == "GOOD:6"
    assert examples[0].args[-1] == "--config.data.source=bert:/data/*.txt#x"
    assert check_markdown(GOOD, "GOOD") == []


def test_the_checker_catches_each_kind_of_mistake():
    problems = check_markdown(BAD, "BAD")
    lines = [p.split(":", 2)[1] for p in problems]
    # one problem per bad example, each on its own line of BAD
    assert lines == ["3", "4", "5", "7", "8", "9", "10", "11", "12", "13"], "\n".join(problems)
    text = "\n".join(problems)
    for word in (
        "unknown command 'trian'",
        "--wrokdir",
        "train.stesp",
        "bert_tinyy",
        "train.steps=many",
        "modle.num_layers",
        "unknown subcommand",
        "--workers: not a flag of `fill_mask`",
        "no_such_file.py",
        "overrides without --config",
    ):
        assert word in text, (word, text)


def test_the_cloud_tpu_rehearsal_runs_against_the_emulator_as_written(bucket):
    """docs/cloud_tpu.md's last block, run command by command with only the bucket name
    changed: the emulator and its environment variables are this test process's own
    (tests/gcs.py), so the block's first two lines are the ones left out."""
    import subprocess
    import sys

    from bertjax import paths

    blocks = code_blocks(_read("docs/cloud_tpu.md"))
    first, lines = blocks[-1]
    commands = shell_commands(lines, first)
    assert commands[0][1][:2] == ["python", "tests/gcs_emulator.py"]
    assert commands[1][1][0] == "export" and all(
        f"{v}=" in " ".join(commands[1][1])
        for v in ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL")
    )
    name = bucket.removeprefix("gs://") + "-rehearsal"  # the block creates its bucket
    bucket = f"gs://{name}"
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for number, words in commands[2:]:
        words = [w.replace("my-bucket", name) for w in words]
        assert words[0] == "python", (number, words)
        r = subprocess.run(
            [sys.executable, *words[1:]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, (number, r.stderr[-3000:])
    assert paths.isfile(f"{bucket}/data/manifest.json")
    assert paths.isfile(f"{bucket}/runs/tiny/model/config.json")
    assert paths.isfile(f"{bucket}/hf/tiny/model.safetensors")
