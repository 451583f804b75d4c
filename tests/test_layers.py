"""The package's import structure: layers import downward only, with no cycle anywhere.

Every ``import`` / ``from ... import`` in every module of g2rpo_verl counts, those inside
function bodies included (parsed with ``ast``, nothing is imported). ``from pkg import name``
counts as an import of ``pkg.name`` when that is a module. Importing a submodule also runs its
package's ``__init__``; that implicit edge is Python's and is not counted.
"""

import ast
from pathlib import Path

import pytest

import g2rpo_verl

ROOT = Path(g2rpo_verl.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return mods


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of g2rpo_verl it imports`` (module level and function level)."""
    mods = _modules()
    graph = {name: set() for name in mods}
    for name, (path, is_package) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, else None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def collapse(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The graph between the package's parts at ``depth`` (``g2rpo_verl.cpu``, ``g2rpo_verl.demo``, ...)."""
    part = lambda m: ".".join(m.split(".")[: depth + 1])  # noqa: E731
    out: dict[str, set[str]] = {}
    for src, dsts in graph.items():
        out.setdefault(part(src), set()).update(part(d) for d in dsts if part(d) != part(src))
    return out


def test_the_checker_finds_a_cycle_hidden_in_a_function_body(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    source = "def f():\n    from g2rpo_verl.verl_hooks.trainer import install\n"
    names = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert names and names[0].module == "g2rpo_verl.verl_hooks.trainer"  # function-level imports are seen


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert len(graph) > 40 and graph["g2rpo_verl.verl_hooks.trainer"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_import_cycle_between_the_parts_of_the_package():
    cycle = find_cycle(collapse(import_graph(), depth=1))
    assert cycle is None, f"import cycle between parts: {' -> '.join(cycle)}"


@pytest.mark.parametrize(
    "module, never",
    [
        ("g2rpo_verl.cpu", "g2rpo_verl.demo"),  # the backend knows nothing of the demo's fixtures
        ("g2rpo_verl.verl_hooks.samples", "g2rpo_verl.verl_hooks"),  # the bottom of the wiring
        ("g2rpo_verl.verl_hooks.checks", "g2rpo_verl.verl_hooks"),
        ("g2rpo_verl.verl_compat.api", "g2rpo_verl"),  # names only
        ("g2rpo_verl.algorithms.gaussian", "g2rpo_verl"),
        ("g2rpo_verl.algorithms.advantages", "g2rpo_verl.verl_hooks"),
        # the method's core sits below every wiring, backend and driver
        ("g2rpo_verl.algorithms", "g2rpo_verl.verl_hooks"),
        ("g2rpo_verl.algorithms", "g2rpo_verl.verl_compat"),
        ("g2rpo_verl.algorithms", "g2rpo_verl.cpu"),
        ("g2rpo_verl.algorithms", "g2rpo_verl.demo"),
        ("g2rpo_verl.algorithms", "g2rpo_verl.launch"),
        ("g2rpo_verl.algorithms", "g2rpo_verl.evaluation"),
    ],
)
def test_lower_layers_do_not_import_upper_ones(module, never):
    graph = import_graph()
    sources = [m for m in graph if m == module or m.startswith(module + ".")]
    under = lambda m, top: m == top or m.startswith(top + ".")  # noqa: E731
    bad = sorted((src, dst) for src in sources for dst in graph[src] if under(dst, never) and not under(dst, module))
    assert not bad, bad


def test_the_algorithm_layer_is_pure_torch():
    """``g2rpo_verl.algorithms`` never imports verl, at module level or inside a function."""
    bad = []
    for path in (ROOT / "algorithms").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            )
            bad += [(path.name, n) for n in names if n == "verl" or n.startswith("verl.")]
    assert not bad, bad
