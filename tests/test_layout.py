"""The package's layout: floors with imports pointing only downward, no import circles, short modules.

The import graph is read from the source with ``ast`` (nothing is imported), so the test also sees
imports that only run in some code paths. The floor list below is the layout's contract: a module may
import modules of its own floor or of lower floors, never of a higher one, and the graph has no cycle.

Exempt from the floor rule: code that only runs when a module is the program (``__main__.py`` files and
``if __name__ == "__main__":`` blocks), which is by definition the top of the stack.

Size: no module over 400 lines and no function over 80, except where the module's docstring has a
line ``Long: <name> ...`` saying why (``Long: this module ...`` for the module itself).

Imports inside functions: of the package's own modules only on the commands floor, where a command
loads the library (and TensorFlow) once its arguments are parsed so that ``--help`` answers at once;
of other packages only where needed (tfmot, torch and the like). Each says why in a comment, on the
import line or on a comment line heading its block of imports.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rtmdet_keras"

# Bottom to top. A module belongs to the first floor with a matching pattern.
FLOORS = [
    ("base", ["rtmdet_keras", "rtmdet_keras.config", "rtmdet_keras.config_*", "rtmdet_keras.boxes", "rtmdet_keras.levels",
              "rtmdet_keras.files",
              "rtmdet_keras.tensorflow_startup"]),
    ("data and models", ["rtmdet_keras.data", "rtmdet_keras.data.*", "rtmdet_keras.models", "rtmdet_keras.models.*"]),
    ("postprocess and evaluation", ["rtmdet_keras.postprocess", "rtmdet_keras.evaluation", "rtmdet_keras.evaluation_plots",
                                    "rtmdet_keras.operating_point",
                                    "rtmdet_keras.evaluation.*"]),
    ("training", ["rtmdet_keras.training", "rtmdet_keras.training.*"]),
    ("runtime", ["rtmdet_keras.runtime", "rtmdet_keras.runtime.*"]),
    ("export", ["rtmdet_keras.export", "rtmdet_keras.export.*"]),
    ("qat", ["rtmdet_keras.qat", "rtmdet_keras.qat.*"]),
    ("commands", ["rtmdet_keras.commands", "rtmdet_keras.commands.*", "rtmdet_keras.cli",
                  "rtmdet_keras.train", "rtmdet_keras.evaluate", "rtmdet_keras.predict",
                  "rtmdet_keras.checkpoint_convert"]),
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _floor(module: str) -> int:
    for i, (_, patterns) in enumerate(FLOORS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    return -1


def _is_main_guard(node) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _targets(module: str, is_package: bool, node, modules) -> list:
    """The package's modules an import statement names."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "rtmdet_keras"]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] == "rtmdet_keras":
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
    out = []
    for name in names:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            out.append(name)
    return out


@functools.lru_cache(maxsize=1)  # the tests below read the same tree
def _scan():
    """(modules, import edges, lazy internal imports, unexplained lazy imports, what is too long)."""
    modules = _modules()
    edges, lazy_internal, lazy_unexplained, too_long = {}, [], [], []
    for module, path in modules.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        is_package = path.name == "__init__.py"
        entry = path.name == "__main__.py"
        doc = ast.get_docstring(tree) or ""
        long_ok = [line[5:].strip() for line in doc.splitlines() if line.startswith("Long:")]
        main_nodes = {id(n) for top in tree.body if _is_main_guard(top) for n in ast.walk(top)}
        deps = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or entry or id(node) in main_nodes:
                continue
            deps.update(_targets(module, is_package, node, modules))
        edges[module] = deps
        if len(lines) > MAX_MODULE_LINES and not any(r.startswith("this module") for r in long_ok):
            too_long.append(f"{module}: {len(lines)} lines")
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and not any(r.split()[0].strip("`") == node.name for r in long_ok if r):
                too_long.append(f"{module}.{node.name}: {n} lines")
            for sub in ast.walk(node):
                if not isinstance(sub, (ast.Import, ast.ImportFrom)) or id(sub) in main_nodes:
                    continue
                where = f"{module}.{node.name} line {sub.lineno}"
                internal = _targets(module, is_package, sub, modules) or (isinstance(sub, ast.ImportFrom) and sub.level)
                if internal and FLOORS[_floor(module)][0] != "commands":
                    lazy_internal.append(where)
                elif not _explained(lines, sub.lineno):
                    lazy_unexplained.append(where)
    return modules, edges, sorted(set(lazy_internal)), sorted(set(lazy_unexplained)), too_long


def _explained(lines, lineno: int) -> bool:
    """A comment on the import's line, or a comment line above the block of imports it belongs to."""
    i = lineno - 1
    if "#" in lines[i]:
        return True
    while i > 0:
        i -= 1
        text = lines[i].strip()
        if text.startswith("#"):
            return True
        if not text.startswith(("from ", "import ")):
            return False
    return False


def _cycles(edges) -> list:
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor_and_imports_only_downward():
    modules, edges, *_ = _scan()
    unplaced = [m for m in modules if _floor(m) < 0 and not m.endswith(".__main__")]
    assert not unplaced, f"modules on no floor (add them to FLOORS or move them): {unplaced}"
    upward = [f"{m} ({FLOORS[_floor(m)][0]}) imports {d} ({FLOORS[_floor(d)][0]})"
              for m, deps in sorted(edges.items()) for d in sorted(deps)
              if not m.endswith(".__main__") and _floor(d) > _floor(m)]
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    _, edges, *_ = _scan()
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_package_imports_sit_at_module_level():
    *_, lazy_internal, lazy_unexplained, _ = _scan()
    assert not lazy_internal, "imports of the package's own modules inside functions:\n" + "\n".join(lazy_internal)
    assert not lazy_unexplained, ("imports inside functions without a comment saying why they are lazy:\n"
                                  + "\n".join(lazy_unexplained))


def test_modules_and_functions_are_short():
    *_, too_long = _scan()
    assert not too_long, (f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function "
                          "without a 'Long:' line in the module docstring:\n" + "\n".join(too_long))


def test_a_lazy_import_needs_a_reason():
    lines = ["def f():", "    # lazy: tfmot switches tf.keras", "    import a", "    import b", "    x = 1", "    import c",
             "    import d  # lazy: optional"]
    assert [_explained(lines, n) for n in (3, 4, 6, 7)] == [True, True, False, True]
