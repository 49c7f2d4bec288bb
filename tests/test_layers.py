"""The design's layers, read from the source (ast; nothing is imported, so no import runs):

`common` (the snapshot format, errors, files) imports nothing of ours, and every other package may
import it; `augment` imports nothing of ours but `common`; `pipelines` imports `augment` but never
`lm`; the `lm` core (modules directly in `lm/`) imports neither `lm.distill`, `lm.ship`, `pipelines`
nor `augment`; `lm.ship` imports the core only; no import circle anywhere, lazy (in-function)
imports included.
And no product module over 400 lines, no product function over 60: past that a module holds more
than one job, and a function more than one step.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "augment", "pipelines", "lm")
MAX_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports, anywhere in its file (`from lm import data` -> lm.data)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import lm.data.x` style names: the longest known prefix
                t = t.rpartition(".")[0]
            if t and t.split(".")[0] in PACKAGES and t != name:
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = product_modules()
    return {n: imports_of(n, p, set(mods)) for n, p in mods.items()}


def layer(name: str) -> str:
    """common, augment, pipelines, lm (the core), lm.distill or lm.ship."""
    parts = name.split(".")
    if parts[0] == "lm" and len(parts) > 1 and parts[1] in ("distill", "ship"):
        return f"lm.{parts[1]}"
    return "lm" if parts[0] == "lm" else parts[0]


FORBIDDEN = {
    "common": {"augment", "pipelines", "lm", "lm.distill", "lm.ship"},
    "augment": {"pipelines", "lm", "lm.distill", "lm.ship"},
    "pipelines": {"lm", "lm.distill", "lm.ship"},
    "lm": {"lm.distill", "lm.ship", "pipelines", "augment"},
    "lm.ship": {"lm.distill", "pipelines", "augment"},
    "lm.distill": {"lm.ship"},
}


def test_imports_point_down_the_layers(graph: dict[str, set[str]]) -> None:
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                 if layer(t) in FORBIDDEN[layer(m)])
    assert not bad, "imports against the layers: " + "; ".join(bad)


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    circles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                circles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The reader resolves the import forms the project uses, so a wrong arrow would be caught."""
    src = tmp_path / "lm" / "x.py"
    src.parent.mkdir()
    src.write_text("import os\nfrom lm import data\nfrom lm.distill.judge import quantile_filter\n"
                   "def f():\n    from pipelines.spec import parse_spec\n")
    known = {"lm", "lm.data", "lm.distill", "lm.distill.judge", "pipelines", "pipelines.spec", "lm.x"}
    found = imports_of("lm.x", src, known)
    assert found == {"lm.data", "lm.distill.judge", "pipelines.spec"}
    assert {layer(t) for t in found} & FORBIDDEN["lm"] == {"lm.distill", "pipelines"}
    bottom = tmp_path / "common" / "y.py"
    bottom.parent.mkdir()
    bottom.write_text("from common.errors import ScarceError\nfrom lm.errors import DataError\n")
    found = imports_of("common.y", bottom, known | {"common", "common.errors", "common.y", "lm.errors"})
    assert found == {"common.errors", "lm.errors"}
    assert {layer(t) for t in found} & FORBIDDEN["common"] == {"lm"}


def test_no_product_module_over_400_lines() -> None:
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in product_modules().items()}
    assert not {n: k for n, k in long.items() if k > MAX_LINES}, "modules past 400 lines hold more than one job"


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """Functions and methods of a file longer than `limit` lines (decorators and docstring included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {f"{path.name}:{n.lineno} {n.name}": n.end_lineno - n.lineno + 1 for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > limit}


def test_no_product_function_over_60_lines() -> None:
    long = {k: v for p in product_modules().values() for k, v in long_functions(p).items()}
    assert not long, f"functions past {MAX_FUNCTION_LINES} lines: split them into steps: {long}"


def test_the_function_check_sees_a_long_one(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 60 + "    return x\n")
    assert long_functions(src) == {"m.py:5 long": 62}
