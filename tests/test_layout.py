"""The shape of the code: the package root holds the core, modules and functions stay
short, commands are leaves, imports form no cycle, tasks and datasets are listed in
explicit registries, tasks live in their own files and the training loop knows none of
them, families declare themselves once.

The import graph is read from the source with `ast` (every import, at module level or
inside a function, except `if TYPE_CHECKING:` blocks), so it sees lazy imports too, and
as Python runs them: importing bertjax.a.b.c runs the packages bertjax.a and bertjax.a.b
(their __init__) first, unless the importer is inside them (they are already running).
"""

from __future__ import annotations

import ast
import fnmatch
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "bertjax")


def _modules() -> dict[str, str]:
    """Module name -> file, for every module of the bertjax package."""
    out = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> set[str]:
    """The bertjax modules `module` imports (a name imported from a package counts as the
    submodule when one of that name exists, else as the package)."""
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    package = module if MODULES[module].endswith("__init__.py") else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "bertjax")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            if base.split(".")[0] == "bertjax":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # The packages above an imported module run first, unless `module` is inside them.
    for m in list(found):
        parts = m.split(".")
        found.update(
            p
            for p in (".".join(parts[:i]) for i in range(2, len(parts)))
            if not (module == p or module.startswith(p + "."))
        )
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: _imports(m) for m in MODULES}


def _is_command(module: str) -> bool:
    return module == "bertjax.__main__" or module.startswith("bertjax.commands")


def test_the_graph_sees_the_package():
    assert "bertjax.train" in GRAPH and "bertjax.commands.train" in GRAPH
    assert "bertjax.train" in GRAPH["bertjax.commands.train"]
    # A lazy import inside a function counts: hfdir reads the tokenizer lazily.
    assert "bertjax.data.tokenizers" in GRAPH["bertjax.convert.hfdir"]
    # Importing a module runs its packages first: the models package (its __init__) for
    # the convert layer, but not for a module already inside it.
    assert "bertjax.models" in GRAPH["bertjax.convert.hf"]
    assert "bertjax.models" not in GRAPH["bertjax.models.config"]


# The package root: the core only (DESIGN.md's layout), tooling in bertjax/tools/, the
# rest in its packages. Beyond DESIGN.md's list: configfile (config files and dotted
# overrides outside absl, which `sweep`, `downstream` and the configs share), distributed
# (the multi-host flags and initialisation `train` needs; only commands import it),
# pretrained (init_from: any checkpoint form fitted to a task's heads, used by the loop
# and distillation), objectstore (paths.py's back end for URLs) and schedules
# (optim.py's learning-rate schedules and their lengths in tokens, split off at the
# module limit) and ema (the parameters' moving average in the optimizer state, split off
# optim.py likewise) and optim_params (which parameters the optimizer decays, freezes and
# scales per layer, split off optim.py likewise); split off train.py so that it reads as
# the loop: resume (the resume order: checkpoints, branch, init_from, the task's start),
# hosts (signals and what the hosts of a run agree on), run_outputs (WORKDIR/model,
# model_ema and best) and memory (the check that the train step fits before the first
# one, which `bench train` and `compile` reuse from bertjax/tools/); orbax_output (what
# Orbax and TensorStore print, brought to one line; split off checkpoint.py); peak_flops
# (the devices' peak FLOP/s for MFU, split off metrics.py; the loop and `bench` read it).
CORE = {
    "__init__",
    "__main__",
    "allocator",
    "checkpoint",
    "configfile",
    "distributed",
    "ema",
    "errors",
    "experiment",
    "flops",
    "hosts",
    "memory",
    "metrics",
    "modeldir",
    "objectives",
    "objectstore",
    "optim",
    "optim_params",
    "orbax_output",
    "paths",
    "peak_flops",
    "pretrained",
    "resume",
    "run_outputs",
    "schedules",
    "sharding",
    "steps",
    "train",
}
PACKAGES = {"commands", "convert", "data", "models", "scoring", "tasks", "tools"}


def test_the_package_root_holds_the_core_only():
    modules = {n[:-3] for n in os.listdir(PACKAGE) if n.endswith(".py")}
    assert modules <= CORE, sorted(modules - CORE)
    packages = {
        n for n in os.listdir(PACKAGE) if os.path.isfile(os.path.join(PACKAGE, n, "__init__.py"))
    }
    assert packages == PACKAGES, sorted(packages ^ PACKAGES)


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# Files (paths under bertjax/, fnmatch patterns) and functions ("path:name") allowed over
# the limits, each with its reason.
TOO_LONG = {}


def _too_long() -> list[str]:
    """ "path" for each module over the limit, "path:function" for each function."""
    out = []
    for path in sorted(MODULES.values()):
        rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
        source = open(path, encoding="utf-8").read()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            out.append(rel)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    out.append(f"{rel}:{node.name}")
    return out


def _excused(where: str, pattern: str) -> bool:
    """A file pattern excuses the file and its functions; "path:function" that function."""
    return fnmatch.fnmatch(where if ":" in pattern else where.split(":")[0], pattern)


def test_no_module_or_function_is_too_long():
    """Modules of at most 450 lines, functions of at most 80 (the def line to the last of
    the body, nested functions included), but for the listed exceptions; an exception
    that no longer applies is to be struck from the list."""
    long = _too_long()
    offenders = [w for w in long if not any(_excused(w, p) for p in TOO_LONG)]
    assert not offenders, offenders
    stale = [p for p in TOO_LONG if not any(_excused(w, p) for w in long)]
    assert not stale, f"no longer over the limits, strike from TOO_LONG: {stale}"


def test_no_library_module_imports_a_command_module():
    bad = sorted(
        (m, dep)
        for m, deps in GRAPH.items()
        if not _is_command(m)
        for dep in deps
        if _is_command(dep)
    )
    assert not bad, bad
    # Commands do not import each other either: each is a leaf.
    shared = {"bertjax.commands", "bertjax.commands.flags"}
    crossed = sorted(
        (m, dep)
        for m, deps in GRAPH.items()
        if _is_command(m)
        for dep in deps
        if _is_command(dep) and dep not in shared
    )
    assert not crossed, crossed


def test_tooling_lives_in_tools_and_sits_on_the_core():
    """bertjax/ holds the core; what the commands run around it is in bertjax/tools/, and
    a command with no other user holds its own logic (fill_mask, evaluate)."""
    tools = {
        "aot",
        "tpu_compile",
        "bench_train",
        "describe",
        "seeds",
        "downstream",
        "sweep",
        "compare",
    }
    assert {f"bertjax.tools.{t}" for t in tools} <= set(MODULES)
    at_root = {f"bertjax.{t}" for t in tools | {"fill_mask", "evaluate"}} & set(MODULES)
    assert not at_root, sorted(at_root)
    # Tools import the core, never the other way round (the loop's memory check is core:
    # bertjax/memory.py; `compile` and `bench train` reuse it).
    inward = sorted(
        (m, dep)
        for m, deps in GRAPH.items()
        if not _is_command(m) and not m.startswith("bertjax.tools")
        for dep in deps
        if dep.startswith("bertjax.tools")
    )
    assert not inward, inward


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in sorted(GRAPH[m]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep) :] + [dep]))
            elif dep not in state:
                walk(dep)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            walk(m)
    assert not cycles, "import cycles: " + "; ".join(cycles)
    # Every module of the package was walked, so the graph the test saw is complete.
    assert set(state) == set(GRAPH) and set(state.values()) == {2}
    assert {"bertjax.train", "bertjax.tasks.squad", "bertjax.data.demo_tasks"} <= set(GRAPH)


def test_absl_flags_are_defined_by_commands_only():
    """Importing a library module defines no flags; bertjax.distributed holds the
    multi-host flags of `train`, and only a command imports it."""
    defining = sorted(
        m for m, path in MODULES.items() if "flags.DEFINE_" in open(path, encoding="utf-8").read()
    )
    assert all(_is_command(m) or m == "bertjax.distributed" for m in defining), defining
    users = sorted(m for m, deps in GRAPH.items() if "bertjax.distributed" in deps)
    assert users and all(_is_command(m) for m in users), users


def _code_words(path: str) -> set[str]:
    """Identifiers, attribute names and string constants of a file, docstrings left out."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            words.add(node.value)
    return {w.lower() for w in words}


TASK_WORDS = (
    "mlm",
    "nsp",
    "sop",
    "electra",
    "distill",
    "teacher",
    "generator",
    "discriminator",
    "masked_lm",
    "pair_label",
)


def test_the_training_loop_holds_no_task_specific_code():
    # The loop and what was split off it (where a run starts, the memory check).
    for loop in ("bertjax.train", "bertjax.resume", "bertjax.memory"):
        words = _code_words(MODULES[loop])
        found = sorted(w for w in words if any(t in w for t in TASK_WORDS))
        assert not found, (loop, found)
        assert not any(
            m.startswith("bertjax.tasks.") and m != "bertjax.tasks.base" for m in GRAPH[loop]
        ), loop


def test_each_pretraining_task_lives_in_one_file():
    from bertjax import tasks

    registry = tasks.TASKS
    where = {name: cls.__module__ for name, cls in registry.items()}
    assert where["mlm"] == where["mlm_nsp"] == where["mlm_sop"] == "bertjax.tasks.mlm"
    assert where["electra"] == "bertjax.tasks.electra"
    assert where["distillation"] == "bertjax.tasks.distill"
    from bertjax.models.registry import FAMILIES

    assert {f.task for f in FAMILIES.values()} <= set(registry)


def test_families_are_declared_in_their_own_files_only():
    """No module outside bertjax/models/<family>.py branches on a family's name: what
    differs between families is read from their records."""
    from bertjax.models.registry import FAMILIES

    family_files = {f"bertjax.models.{name}" for name in FAMILIES}
    offenders = []
    for m, path in MODULES.items():
        if m in family_files:
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                consts = [
                    c.value
                    for c in ast.walk(node)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                ]
                text = ast.unparse(node)
                if any(c in FAMILIES for c in consts) and ("family" in text or "fam" in text):
                    offenders.append(f"{m}:{node.lineno}: {text}")
    assert not offenders, offenders


def test_tasks_and_datasets_are_listed_explicitly():
    """tasks/__init__.py lists every task class (as models/registry.py lists the families)
    and bertjax/data/datasets.py every fine-tuning dataset; nothing discovers modules."""
    from bertjax import tasks
    from bertjax.data import datasets, glue
    from bertjax.tasks.base import Task

    for m, path in MODULES.items():
        words = _code_words(path)
        assert not {"pkgutil", "iter_modules", "walk_packages"} & words, m
    init = ast.parse(open(MODULES["bertjax.tasks"], encoding="utf-8").read())
    assert any(
        isinstance(n, (ast.Assign, ast.AnnAssign)) and "TASKS" in ast.unparse(n) for n in init.body
    )
    # Every concrete task class of the package is listed, under its own name, once.
    found = {}
    for m in MODULES:
        if m.startswith("bertjax.tasks."):
            module = __import__(m, fromlist=["_"])
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, Task)
                    and value.__module__ == m
                    and vars(value).get("name")
                ):
                    found[value.name] = value
    assert found == tasks.TASKS
    # A task file declares no registry of its own.
    assert not any(
        "TASKS" in vars(__import__(m, fromlist=["_"]))
        for m in MODULES
        if m.startswith("bertjax.tasks.")
    )
    # Every dataset is trained by a listed task, which has a reader; every GLUE-like table
    # entry is a dataset by itself.
    assert {d.task for d in datasets.DATASETS.values()} <= set(tasks.TASKS)
    assert {d.task for d in datasets.DATASETS.values()} == set(datasets.READERS)
    assert set(glue.TASKS) <= set(datasets.DATASETS)


def test_model_configs_read_the_family_records_one_way():
    """ModelConfig reads the family records (config -> registry -> family files); nothing
    the records import at run time leads back to the config, lazily or not."""
    records = {
        "bertjax.models.registry",
        "bertjax.models.family",
        *(
            f"bertjax.models.{name}"
            for name in ("bert", "roberta", "albert", "distilbert", "electra", "modernbert")
        ),
    }
    assert "bertjax.models.registry" in GRAPH["bertjax.models.config"]
    seen, todo = set(), list(records)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH[m])
    assert "bertjax.models.config" not in seen and "bertjax.models" not in seen, sorted(seen)


def test_no_test_module_imports_another():
    """What several test modules share lives in tests/*lib.py (docs/extending.md), so a
    test module never runs another's module-level code, fixtures or tests."""
    tests = os.path.join(ROOT, "tests")
    found = []
    for name in sorted(os.listdir(tests)):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        tree = ast.parse(open(os.path.join(tests, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [node.module]
            else:
                continue
            found += [f"{name}: {m}" for m in imported if m.split(".")[0].startswith("test_")]
    assert not found, found
