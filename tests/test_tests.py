"""The tests' own layout, read from the source (ast; nothing is imported):

no test module imports another. What more than one module needs is in tests/helpers.py (plain
functions and constants) or in a conftest.py (fixtures); a file under tests/ may import those two
and nothing else of tests/, lazy (in-function) and relative imports included.
"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ALLOWED = {"tests.helpers", "tests.conftest"}


def module_name(path: Path, tests: Path) -> str:
    """tests/lm/test_train.py -> tests.lm.test_train (a package's __init__.py -> the package)."""
    parts = [tests.name, *path.relative_to(tests).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(tests: Path) -> dict[str, Path]:
    return {module_name(p, tests): p for p in sorted(tests.rglob("*.py")) if "__pycache__" not in p.parts}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports, anywhere in its file, relative imports resolved
    (`from tests.helpers import x` -> tests.helpers, `from . import test_b` -> tests.lm.test_b)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return out


def foreign_imports(tests: Path) -> list[str]:
    """`module imports target` for each import of a module of tests/ (or of a bare `test_*` name)
    other than the helpers module and conftest."""
    modules = modules_of(tests)
    known = set(modules)
    def ours(target: str) -> bool:
        first = target.split(".")[0]
        return first == tests.name or first.startswith("test_")

    return sorted(f"{name} imports {t}" for name, path in modules.items()
                  for t in imported(name, path, known) if ours(t) and t not in ALLOWED)


def test_no_test_module_imports_another() -> None:
    bad = foreign_imports(TESTS)
    assert not bad, "move what they share to tests/helpers.py or a conftest.py: " + "; ".join(bad)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """Each form a test module could import another by is caught, one at a time; the helpers,
    conftest and everything outside tests/ are not."""
    tests = tmp_path / "tests"
    (tests / "lm").mkdir(parents=True)
    for f in ("__init__.py", "helpers.py", "conftest.py", "lm/__init__.py", "lm/test_b.py"):
        (tests / f).write_text("import os\n")
    fine = ("import json\nfrom pathlib import Path\nfrom lm.data import pack\nfrom tests.helpers import gl_lines\n"
            "from tests import conftest\nfrom ..helpers import TINY\nimport helpers\n")
    test_a = tests / "lm" / "test_a.py"
    test_a.write_text(fine)
    assert foreign_imports(tests) == []
    for line, target in [("from tests.lm.test_b import x", "tests.lm.test_b"), ("from tests.lm import test_b", "tests.lm.test_b"),
                         ("from . import test_b", "tests.lm.test_b"), ("from .test_b import y", "tests.lm.test_b"),
                         ("import tests.lm.test_b", "tests.lm.test_b"), ("import test_lm_corpus", "test_lm_corpus"),
                         ("def f():\n    from test_lm_train import z", "test_lm_train"),
                         ("from tests.test_layers import ROOT", "tests.test_layers")]:
        test_a.write_text(fine + line + "\n")
        assert foreign_imports(tests) == [f"tests.lm.test_a imports {target}"], line
    test_a.write_text(fine)
    (tests / "helpers.py").write_text("from tests.lm.test_b import x\n")  # the helpers import no test either
    assert foreign_imports(tests) == ["tests.helpers imports tests.lm.test_b"]
