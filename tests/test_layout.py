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
    """'cli', 'viz' or 'library' for a module of the package."""
    rel = path.relative_to(PACKAGE).parts
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


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_only_cli_to_viz_to_library(path: Path) -> None:
    bad = sorted(n for n in imported(ast.parse(path.read_text())) if breaks_rule(n, FORBIDDEN[part(path)]))
    assert not bad, f"{part(path)} module {path.name} imports {bad}"


@pytest.mark.parametrize("path", [p for p in modules() if part(p) != "cli"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_prints(path: Path) -> None:
    calls = [n.lineno for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert not calls, f"{path.name} calls print() on lines {calls}"


def test_no_module_or_function_too_long_to_read() -> None:
    too_long = []
    for path in modules():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


def test_the_rules_would_catch_a_breach() -> None:
    """The checks above are not vacuous: a library import of rich, a viz import of the CLI and a long
    function are all seen."""
    assert breaks_rule("rich.console", FORBIDDEN["library"]) and breaks_rule("dropblock.cli.app", FORBIDDEN["viz"])
    assert not breaks_rule("richer", FORBIDDEN["library"])
    tree = ast.parse("def f():\n    from matplotlib.figure import Figure\n" + "    x = 1\n" * 70)
    assert "matplotlib.figure" in imported(tree)
    fn = tree.body[0]
    assert fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
    assert {part(PACKAGE / "cli" / "app.py"), part(PACKAGE / "viz" / "masks.py"), part(PACKAGE / "gamma.py")} == {
        "cli", "viz", "library"}
