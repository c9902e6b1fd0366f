"""The tree's three parts keep their rules: imports run only cli -> viz -> library and cli -> library,
only the CLI prints, and no unit grows past what one can read (modules 400 lines, functions 60)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dropblock"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def part(path: Path) -> str:
    """'cli', 'viz' or 'library' for a module of the package (``__main__.py``, ``python -m dropblock``, is
    the command line's)."""
    rel = path.relative_to(PACKAGE).parts
    if rel == ("__main__.py",):
        return "cli"
    return rel[0] if rel[0] in ("cli", "viz") else "library"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported(tree: ast.AST) -> set[str]:
    """Every module name an import statement anywhere in the tree names (inside functions too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


FORBIDDEN = {
    "library": ("typer", "rich", "matplotlib", "dropblock.cli", "dropblock.viz"),
    "viz": ("typer", "rich", "dropblock.cli"),
    "cli": (),
}


def breaks_rule(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def bad_imports(source: str, where: str) -> list[str]:
    """The modules ``source`` imports that a module of part ``where`` must not."""
    return sorted(n for n in imported(ast.parse(source)) if breaks_rule(n, FORBIDDEN[where]))


def print_calls(source: str) -> list[int]:
    """The lines of ``source`` that call print()."""
    return [n.lineno for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def too_long(source: str, name: str) -> list[str]:
    """``name`` when ``source`` passes MAX_MODULE_LINES, and each function that passes MAX_FUNCTION_LINES."""
    found = []
    if len(source.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{name}: {len(source.splitlines())} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_only_cli_to_viz_to_library(path: Path) -> None:
    bad = bad_imports(path.read_text(), part(path))
    assert not bad, f"{part(path)} module {path.name} imports {bad}"


@pytest.mark.parametrize("path", [p for p in modules() if part(p) != "cli"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_prints(path: Path) -> None:
    calls = print_calls(path.read_text())
    assert not calls, f"{path.name} calls print() on lines {calls}"


def test_no_module_or_function_too_long_to_read() -> None:
    found = [line for path in modules() for line in too_long(path.read_text(), str(path.relative_to(PACKAGE)))]
    assert not found, "\n".join(found)


def test_the_rules_would_catch_a_breach() -> None:
    """The functions the checks above run report each kind of breach: a library module importing rich
    (at the top or inside a function), a viz module importing the CLI, a print() outside the CLI, a
    function of 61 lines and a module of 401. Breaking one of bad_imports, print_calls, too_long or
    part (e.g. ignoring imports inside functions, or counting a function's lines wrong) fails here."""
    library = "import torch\nfrom rich.console import Console\ndef f():\n    import typer\n"
    assert bad_imports(library, "library") == ["rich.console", "rich.console.Console", "typer"]
    assert bad_imports("from dropblock.cli.app import app\nimport richer\n", "viz") == [
        "dropblock.cli.app", "dropblock.cli.app.app"]
    assert bad_imports("import rich\nfrom dropblock.viz import save_figure\n", "cli") == []
    assert print_calls("x = 1\nif x:\n    print(x)\n") == [3] and print_calls("log.print(1)\n") == []
    body = "    x = 1\n"
    assert too_long("def f():\n" + body * (MAX_FUNCTION_LINES - 1), "m") == []
    assert too_long("def f():\n" + body * MAX_FUNCTION_LINES, "m") == [f"m:1 f: {MAX_FUNCTION_LINES + 1} lines"]
    assert too_long("x = 1\n" * (MAX_MODULE_LINES + 1), "m") == [f"m: {MAX_MODULE_LINES + 1} lines"]
    assert {part(PACKAGE / "cli" / "app.py"), part(PACKAGE / "viz" / "masks.py"), part(PACKAGE / "gamma.py"),
            part(PACKAGE / "models" / "base.py")} == {"cli", "viz", "library"}
    assert part(PACKAGE / "models" / "base.py") == "library" and part(PACKAGE / "__main__.py") == "cli"
