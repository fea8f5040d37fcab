"""The rules of docs/architecture.md that can be checked mechanically, by reading the source
(ast; nothing is imported): no import cycles in the package, one native-library loader, every
exception class on the error base, one `require` and one `Environment`."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_files() -> dict[str, Path]:
    """Module name -> file, for every module of the installed package: pyproject's wheel
    mapping puts models/ and calibration/ under axial_deploy too."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["scikit-build"]["wheel"]["packages"]
    modules = {}
    for package, folder in mapping.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = package.split("/") + list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = package_files()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _resolve(name: str) -> str | None:
    """The package module that `name` (a module or a name in one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(imported package module, the import node) for every import in `module`, wherever it is
    (top level, inside functions, under TYPE_CHECKING: each is a dependency)."""
    is_package = MODULES[module].name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: None if is_package else -1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved and resolved != module:
                found.append((resolved, node))
    return found


def _functions_around(tree: ast.Module) -> dict[ast.AST, ast.FunctionDef]:
    """Each node inside a top-level function -> that function."""
    owner = {}
    for top in tree.body:
        if isinstance(top, ast.FunctionDef):
            for node in ast.walk(top):
                owner[node] = top
    return owner


def _warns_deprecation(function: ast.FunctionDef | None) -> bool:
    return function is not None and any(
        _name(node) == "DeprecationWarning" for node in ast.walk(function)
    )


# A lazy alias kept for one release after a name moved up a layer: the only imports allowed
# to point back up, each inside the module's __getattr__ (which warns DeprecationWarning).
DEPRECATED_ALIASES: dict[tuple[str, str], str] = {}  # none at present


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module, tree in TREES.items():
        owner = _functions_around(tree)
        for target, node in _imports(module, tree):
            if (module, target) in DEPRECATED_ALIASES:
                function = owner.get(node)
                assert function is not None and function.name == "__getattr__", (
                    f"{module} imports {target} outside its deprecated __getattr__ alias"
                )
                assert _warns_deprecation(function), f"{module}.__getattr__ must warn"
                continue
            graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_scan_sees_the_package():
    expected = {"axial_deploy.pipeline.deploy", "axial_deploy.rewrite.locate"}
    expected |= {"axial_deploy.models.registry", "axial_deploy.calibration.ranges"}
    assert expected <= set(MODULES)
    graph = import_graph()
    assert "axial_deploy.pipeline.records" in graph["axial_deploy.pipeline.report"]
    assert "axial_deploy.rewrite.records" in graph["axial_deploy.rewrite.locate"]  # relative


def test_cycles_are_found():
    """The detector itself, on a graph with one cycle of three and one self-import."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles (a module must not import one that imports it): {found}"


def test_the_moved_torch_op_says_where_it_went():
    """kernel.axial_attention (the torch op) moved up to torch_op: no alias back (it would be an
    import cycle), an AttributeError naming the new place instead."""
    from axial_deploy.op import kernel

    with pytest.raises(AttributeError, match=r"axial_deploy\.op\.torch_op"):
        kernel.axial_attention  # noqa: B018


# Files that may call ctypes' loaders themselves, and why. Everything of ours goes through
# axial_deploy.native.load (resolver, ABI check, one message).
NATIVE_LOADERS = {
    "axial_deploy/native.py": "the loader itself (native.load), register_plugin_library's "
    "preliminary load of the TensorRT plugin (TensorRT's registry opens it) and cuda_driver "
    "(libcuda.so.1, a system library with no ABI of ours to check)",
}
LOADER_NAMES = {"CDLL", "PyDLL", "LibraryLoader", "cdll", "pydll", "WinDLL", "OleDLL"}


def _name(node: ast.AST | None) -> str:
    """The last name of `x` or `a.b.x`."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _ctypes_loader_uses(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            name = (
                function.attr
                if isinstance(function, ast.Attribute)
                else getattr(function, "id", "")
            )
            inner = function.value if isinstance(function, ast.Attribute) else None
            inner_name = (
                inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", "")
            )
            if (
                name in LOADER_NAMES or inner_name in LOADER_NAMES
            ):  # CDLL(...), cdll.LoadLibrary(...)
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "ctypes":
            lines += [node.lineno for alias in node.names if alias.name in LOADER_NAMES]
    return lines


def test_one_native_library_loader():
    users = {}
    for path in MODULES.values():
        lines = _ctypes_loader_uses(ast.parse(path.read_text()))
        if lines:
            users[path.relative_to(ROOT).as_posix()] = lines
    unexpected = {path: lines for path, lines in users.items() if path not in NATIVE_LOADERS}
    assert not unexpected, (
        f"ctypes loads a library outside axial_deploy.native: {unexpected}; use "
        "native.load(LIBRARY) (add the library's NativeLibrary record there)"
    )
    assert set(users) == set(NATIVE_LOADERS), "an allow-listed file no longer loads: drop it"


def test_the_loader_check_sees_a_second_loader():
    tree = ast.parse(
        "import ctypes\nlib = ctypes.CDLL('x.so')\nother = ctypes.cdll.LoadLibrary('y')"
    )
    assert _ctypes_loader_uses(tree) == [2, 3]


BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}  # fmt: skip
WARNINGS = {name for name in BUILTIN_EXCEPTIONS if issubclass(getattr(builtins, name), Warning)}


def _base_names(node: ast.ClassDef) -> list[str]:
    return [_name(base) for base in node.bases]


def exception_classes(trees: dict[str, ast.Module]) -> dict[str, bool]:
    """'module.Class' -> whether it derives from AxialDeployError, for every exception class
    (one whose bases lead to a builtin exception; warnings are not errors)."""
    classes = {
        f"{module}.{node.name}": (node.name, _base_names(node))
        for module, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    bases_of = {name: bases for name, bases in classes.values()}

    def chain(name: str, seen: frozenset = frozenset()) -> set[str]:
        if name in seen or name not in bases_of:
            return {name}
        result = {name}
        for base in bases_of[name]:
            result |= chain(base, seen | {name})
        return result

    found = {}
    for qualified, (name, _) in classes.items():
        ancestors = chain(name)
        if ancestors & BUILTIN_EXCEPTIONS and not ancestors & WARNINGS:
            found[qualified] = "AxialDeployError" in ancestors
    return found


def test_every_exception_class_is_on_the_error_base():
    found = exception_classes(TREES)
    assert "axial_deploy.errors.CheckFailedError" in found and len(found) > 30
    off_base = sorted(name for name, on_base in found.items() if not on_base)
    assert not off_base, (
        f"exception classes not derived from axial_deploy.errors.AxialDeployError: {off_base}"
    )


def test_the_error_check_sees_a_class_off_the_base():
    source = """
class AxialDeployError(Exception): pass
class A(ValueError): pass
class B(A): pass
class C(errors.AxialDeployError, RuntimeError): pass
class W(UserWarning): pass
class D: pass
"""
    assert exception_classes({"m": ast.parse(source)}) == {
        "m.AxialDeployError": True, "m.A": False, "m.B": False, "m.C": True,
    }  # fmt: skip


def _definitions(kind: type, name: str) -> list[str]:
    return sorted(
        module
        for module, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, kind) and node.name == name
    )


@pytest.mark.parametrize(
    ("kind", "name", "home"),
    [
        (ast.FunctionDef, "require", "axial_deploy.extras"),
        (ast.ClassDef, "Environment", "axial_deploy.engine.manifest"),
        (ast.FunctionDef, "relative_error", "axial_deploy.numerics"),
        (ast.FunctionDef, "resolve_trace_size", "axial_deploy.export"),
    ],
)
def test_one_definition_of_each_shared_helper(kind, name, home):
    assert _definitions(kind, name) == [home]


def test_no_private_relative_error_floor():
    """Relative errors go through numerics (relative_error / max_relative_error): no module
    divides by a private floor such as max(..., 1e-30)."""
    floors = [
        f"{module}:{node.lineno}"
        for module, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        and isinstance(node.right, ast.Call) and getattr(node.right.func, "id", "") == "max"
        and any(isinstance(a, ast.Constant) and isinstance(a.value, float) and 0 < a.value < 1e-20
                for a in node.right.args)
    ]  # fmt: skip
    assert not floors, f"relative errors with their own floor (use numerics): {floors}"


def test_every_module_is_in_the_architecture_table():
    """docs/architecture.md's "Where each piece lives" names every module and subpackage of
    axial_deploy/ (a new module gets its row, a removed one loses it)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("## Where each piece lives", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(?:axial_deploy/)?([a-z_]+\.py|[a-z_]+/)`", table))
    folder = ROOT / "axial_deploy"
    tree = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
    tree |= {f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").is_file()}
    assert not tree - named, f"modules missing from docs/architecture.md: {sorted(tree - named)}"
    files = {path.name for path in MODULES.values()}  # e.g. cli/args.py is named `args.py`
    stale = {name for name in named if name.endswith(".py") and name not in files}
    assert not stale, f"docs/architecture.md names modules that do not exist: {sorted(stale)}"
