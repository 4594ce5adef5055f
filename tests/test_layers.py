"""The import rules each package's `__init__` docstring states ("May import: ...") hold.

Every first-party package says which other first-party packages or modules it may import; a
module may import its own package's subtree and what its package's rule names, nothing else.
The rules themselves form no cycle, and no two modules import each other at load time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = (
    "servicekit",
    "budget_service",
    "pricing_service",
    "budget_client",
    "budgetctl",
    "bench",
    "devstack",
    "genproto",
)
UNGOVERNED = ("genproto",)  # generated code: imports only protobuf and itself
RULE_RE = re.compile(r"^May import:(.*?)(?:\n\s*\n|\Z)", re.S | re.M)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. budget_service.hotpath.engine
    target: str  # what it imports, resolved to a module where it names one
    line: int
    top_level: bool  # executed when the module loads (not inside a function or TYPE_CHECKING)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    """Every first-party module, by dotted name."""
    found: dict[str, Path] = {}
    for top in FIRST_PARTY:
        for path in sorted((ROOT / top).rglob("*.py")):
            found[module_name(path)] = path
    return found


def parse_rule(docstring: str) -> tuple[str, ...] | None:
    """The prefixes a package's docstring allows, or None when it states no rule."""
    match = RULE_RE.search(docstring)
    if match is None:
        return None
    text = re.sub(r"\([^)]*\)", "", match.group(1)).strip()
    if text.startswith("nothing"):
        return ()
    return tuple(part.strip() for part in re.split(r"[,\s]+", text) if part.strip())


def package_rules(modules: dict[str, Path]) -> dict[str, tuple[str, ...] | None]:
    """Package -> its rule (None where the docstring states none)."""
    rules: dict[str, tuple[str, ...] | None] = {}
    for name, path in modules.items():
        if path.name == "__init__.py" and not name.startswith(UNGOVERNED):
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            rules[name] = parse_rule(doc)
    return rules


def governing_package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path, modules: Iterable[str]) -> list[Import]:
    """First-party imports of one module, each resolved to the module it names."""
    known = set(modules)
    tree = ast.parse(path.read_text())
    package = governing_package(module, path)
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, False)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, child.lineno, top_level))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(
                        Import(module, sub if sub in known else base, child.lineno, top_level)
                    )
            else:
                visit(child, top_level)

    visit(tree, True)
    return [i for i in found if i.target.split(".")[0] in FIRST_PARTY]


def within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def violations(modules: dict[str, Path], rules: dict[str, tuple[str, ...] | None]) -> list[str]:
    """Every import that crosses its package's stated rule, as `module:line -> target`."""
    out = []
    for module, path in modules.items():
        if module.startswith(UNGOVERNED):
            continue
        package = governing_package(module, path)
        allowed = rules.get(package)
        if allowed is None:
            continue  # reported by test_every_package_states_its_import_rule
        for imp in imports_of(module, path, modules):
            if within(imp.target, package) or any(within(imp.target, p) for p in allowed):
                continue
            rule = ", ".join(allowed) or "nothing first-party"
            out.append(f"{module}:{imp.line} imports {imp.target} ({package} may import: {rule})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_every_package_states_its_import_rule() -> None:
    rules = package_rules(source_files())
    missing = sorted(package for package, rule in rules.items() if rule is None)
    assert missing == [], f"packages whose __init__ docstring has no 'May import:' line: {missing}"


def test_no_module_imports_across_its_package_rule() -> None:
    modules = source_files()
    found = violations(modules, package_rules(modules))
    assert found == [], "imports across the stated rules:\n" + "\n".join(found)


def test_the_rules_form_no_cycle() -> None:
    rules = package_rules(source_files())
    graph: dict[str, set[str]] = {}
    for package, allowed in rules.items():
        for prefix in allowed or ():
            owners = [p for p in rules if within(prefix, p)]
            owner = max(owners, key=len) if owners else prefix.split(".")[0]
            if not within(package, owner) and not within(owner, package):
                graph.setdefault(package, set()).add(owner)
    assert cycles(graph) == []


def test_no_two_modules_import_each_other_at_load_time() -> None:
    modules = source_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        for imp in imports_of(module, path, modules):
            if imp.top_level and imp.target in modules and imp.target != module:
                graph.setdefault(module, set()).add(imp.target)
    # a package's __init__ re-exporting its own modules is the usual, harmless loop
    loops = [c for c in cycles(graph) if not _init_reexport(c, modules)]
    assert loops == [], f"import cycles: {loops}"


def _init_reexport(component: list[str], modules: dict[str, Path]) -> bool:
    inits = [m for m in component if modules[m].name == "__init__.py"]
    return len(inits) == 1 and all(within(m, inits[0]) for m in component)


def test_pricing_service_imports_nothing_of_the_budget_service() -> None:
    modules = source_files()
    found = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for module, path in modules.items()
        if within(module, "pricing_service")
        for imp in imports_of(module, path, modules)
        if within(imp.target, "budget_service")
    ]
    assert found == []


def test_the_checker_catches_a_lower_layer_importing_a_higher_one(tmp_path: Path) -> None:
    """A hot-path module importing the API layer, and servicekit importing a service, fail."""
    modules = source_files()
    rules = package_rules(modules)
    engine = tmp_path / "engine_with_bad_import.py"
    engine.write_text("from budget_service.api.gateway import BudgetService\n")
    kit = tmp_path / "kit_with_bad_import.py"
    kit.write_text("def f() -> None:\n    from pricing_service import cost\n")
    bad = {"budget_service.hotpath.bad": engine, "servicekit.bad": kit}
    found = violations(bad | {"pricing_service.cost": modules["pricing_service.cost"]}, rules)
    assert [f.split(" (")[0] for f in found if "bad" in f] == [
        "budget_service.hotpath.bad:1 imports budget_service.api.gateway",
        "servicekit.bad:2 imports pricing_service.cost",
    ]


def test_the_checker_reads_each_rule_form() -> None:
    assert parse_rule("x\n\nMay import: nothing first-party (third-party only).\n") == ()
    assert parse_rule("May import: a, b.c,\n    d\n\nmore") == ("a", "b.c", "d")
    assert parse_rule("no rule here") is None
