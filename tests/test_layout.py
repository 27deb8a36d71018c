"""The shape of the code: commands are leaves, imports form no cycle, tasks live in their
own files and the training loop knows none of them, families declare themselves once.

The import graph is read from the source with `ast` (every import, at module level or
inside a function, except `if TYPE_CHECKING:` blocks), so it sees lazy imports too.
"""

from __future__ import annotations

import ast
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
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


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
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: _imports(m) for m in MODULES}


def _is_command(module: str) -> bool:
    return module == "bertjax.__main__" or module.startswith("bertjax.commands")


def test_the_graph_sees_the_package():
    assert "bertjax.train" in GRAPH and "bertjax.commands.train" in GRAPH
    assert "bertjax.train" in GRAPH["bertjax.commands.train"]
    # A lazy import inside a function counts: hfdir reads the tokenizer lazily.
    assert "bertjax.data.tokenizers" in GRAPH["bertjax.convert.hfdir"]


def test_no_library_module_imports_a_command_module():
    bad = sorted((m, dep) for m, deps in GRAPH.items() if not _is_command(m)
                 for dep in deps if _is_command(dep))
    assert not bad, bad
    # Commands do not import each other either: each is a leaf.
    shared = {"bertjax.commands", "bertjax.commands.flags"}
    crossed = sorted((m, dep) for m, deps in GRAPH.items() if _is_command(m)
                     for dep in deps if _is_command(dep) and dep not in shared)
    assert not crossed, crossed


def test_tooling_lives_in_tools_and_sits_on_the_core():
    """bertjax/ holds the core; what the commands run around it is in bertjax/tools/, and
    a command with no other user holds its own logic (fill_mask, evaluate)."""
    tools = {"aot", "tpu_compile", "bench_train", "describe", "seeds", "downstream", "sweep",
             "compare"}
    assert {f"bertjax.tools.{t}" for t in tools} <= set(MODULES)
    at_root = {f"bertjax.{t}" for t in tools | {"fill_mask", "evaluate"}} & set(MODULES)
    assert not at_root, sorted(at_root)
    # Tools import the core, not the other way round; the one exception is the loop's
    # ahead-of-time memory check, which `compile` and `bench train` share.
    inward = sorted((m, dep) for m, deps in GRAPH.items()
                    if not _is_command(m) and not m.startswith("bertjax.tools")
                    for dep in deps if dep.startswith("bertjax.tools"))
    assert inward == [("bertjax.train", "bertjax.tools.aot")], inward


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in sorted(GRAPH[m]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
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
    defining = sorted(m for m, path in MODULES.items()
                      if "flags.DEFINE_" in open(path, encoding="utf-8").read())
    assert all(_is_command(m) or m == "bertjax.distributed" for m in defining), defining
    users = sorted(m for m, deps in GRAPH.items() if "bertjax.distributed" in deps)
    assert users and all(_is_command(m) for m in users), users


def _code_words(path: str) -> set[str]:
    """Identifiers, attribute names and string constants of a file, docstrings left out."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            words.add(node.value)
    return {w.lower() for w in words}


TASK_WORDS = ("mlm", "nsp", "sop", "electra", "distill", "teacher", "generator",
              "discriminator", "masked_lm", "pair_label")


def test_the_training_loop_holds_no_task_specific_code():
    words = _code_words(MODULES["bertjax.train"])
    found = sorted(w for w in words if any(t in w for t in TASK_WORDS))
    assert not found, found
    assert not any(m.startswith("bertjax.tasks.") and m != "bertjax.tasks.base"
                   for m in GRAPH["bertjax.train"])


def test_each_pretraining_task_lives_in_one_file():
    from bertjax import tasks

    registry = tasks.registry()
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
                consts = [c.value for c in ast.walk(node)
                          if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                text = ast.unparse(node)
                if any(c in FAMILIES for c in consts) and ("family" in text or "fam" in text):
                    offenders.append(f"{m}:{node.lineno}: {text}")
    assert not offenders, offenders
