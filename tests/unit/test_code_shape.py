"""The shape of the pipeline's code (issue 18), read with ``ast`` from every ``.py`` under ``bin/``.

- Every function is at most ``MAX_LINES`` lines (``def`` to last line, docstring included) unless
  it says why: a comment ``# long: <reason>`` on the line above its ``def`` (above its decorators,
  if any) or between its ``def`` and its first statement (the signature and first body line).
- Nothing under ``bin/`` imports ``testdata``: the test-data generators live in ``tools/testdata``
  and are not part of the pipeline.
- Every ``bin/<name>.py`` (what a process calls) is the same few-line shim of the module
  ``spatialmap.scripts.<name>``, which holds the script's code and a ``main(argv)``; the two are one-to-one.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
MAX_LINES = 80
LONG_REASON = re.compile(r"#\s*long:\s*\S")


def _python_files() -> list[Path]:
    return sorted(p for p in BIN.rglob("*.py") if "__pycache__" not in p.parts)


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, ``def`` line, length) of every function over ``max_lines`` without a ``# long:`` reason."""
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if length > max_lines and not _says_why(child, lines):
                    found.append((name, child.lineno, length))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _says_why(func: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> bool:
    """A ``# long: <reason>`` comment above the function (and its decorators) or from ``def`` to its first statement."""
    top = min([func.lineno] + [d.lineno for d in func.decorator_list])
    candidates = range(top - 1, func.body[0].lineno + 1)  # 1-based: the line above, decorators, signature, first line
    return any(1 <= n <= len(lines) and LONG_REASON.search(lines[n - 1]) for n in candidates)


def _offenders() -> dict[str, list[tuple[str, int, int]]]:
    out = {}
    for path in _python_files():
        found = long_functions(path.read_text(encoding="utf-8"))
        if found:
            out[path.relative_to(REPO).as_posix()] = found
    return out


def _report(offenders: dict[str, list[tuple[str, int, int]]]) -> str:
    rows = [
        f"{path}:{line} {name} ({length} lines)" for path, found in offenders.items() for name, line, length in found
    ]
    text = f"functions over {MAX_LINES} lines without a '# long: <reason>' comment:\n  " + "\n  ".join(rows)
    print(text)
    return text


def test_the_checker_counts_and_reads_the_reasons():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))  # def line + MAX_LINES = one too many
    method_body = "".join(f"    {line}" for line in body.splitlines(keepends=True))
    source = (
        f"def plain():\n{body}\n"
        f"# long: one table of cases, clearer in one place\ndef above():\n{body}\n"
        f"def inside():  # long: a generated table\n{body}\n"
        f"def first_line():\n    # long: one state machine\n{body}\n"
        f"@decorated\n# long: a reason above the def, under the decorator\ndef under_decorator():\n{body}\n"
        f"# long:\ndef empty_reason():\n{body}\n"
        f"class K:\n    def method(self):\n{method_body}\n"
        f"def short():\n    return 1\n"
    )
    names = [name for name, _, _ in long_functions(source)]
    assert names == ["plain", "empty_reason", "K.method"]


def test_functions_are_short_or_say_why():
    offenders = {path: found for path, found in _offenders().items() if found}
    assert not offenders, _report(offenders)


def _imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """Every module an ``import``, ``from ... import`` or ``importlib.import_module``/``__import__`` call names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [(f"{base}.{alias.name}" if base.strip(".") else f"{base}{alias.name}", node.lineno)
                      for alias in node.names]  # fmt: skip
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, node.lineno))
    return found


def test_nothing_under_bin_imports_testdata():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, line in _imported_modules(tree):
            if "testdata" in module.strip(".").split("."):
                offenders.append(f"{path.relative_to(REPO).as_posix()}:{line} imports {module}")
    if offenders:
        print("\n".join(offenders))
    assert not offenders, "the pipeline imports the test-data generators (tools/testdata):\n" + "\n".join(offenders)


def test_the_import_check_sees_every_form():
    source = (
        "import testdata\nimport testdata.synth as s\nfrom testdata import synth_hd\nfrom tools.testdata.silver import x\n"
        "from . import testdata\nimport importlib\nimportlib.import_module('testdata.synth')\n__import__('testdata')\n"
        "import spatialmap.io\nfrom spatialmap import keys\n"
    )
    hits = [m for m, _ in _imported_modules(ast.parse(source)) if "testdata" in m.strip(".").split(".")]
    assert len(hits) == 7, hits


# what every bin/<name>.py is, word for word: Nextflow calls the script (bin/ is on the task's PATH), and
# Python imports first from the script's own folder, so the package beside it is the one imported
SHIM = """#!/usr/bin/env python3
\"\"\"The command-line script {name}.py: its code, docstring and --help are in spatialmap.scripts.{name}.\"\"\"

from spatialmap import cli
from spatialmap.scripts.{name} import main

if __name__ == "__main__":
    cli.run(main)
"""
SCRIPTS = BIN / "spatialmap" / "scripts"


def test_every_bin_script_is_a_shim_of_its_package_module():
    shims = sorted(BIN.glob("*.py"))
    assert len(shims) >= 20
    wrong = [p.name for p in shims if p.read_text(encoding="utf-8") != SHIM.format(name=p.stem)]
    assert not wrong, f"not the shim (tests/unit/test_code_shape.py SHIM): {wrong}"
    assert all(os.access(p, os.X_OK) for p in shims), "a bin/ script is not executable"


def test_scripts_modules_and_bin_scripts_are_one_to_one_and_each_has_main():
    modules = {p.stem for p in SCRIPTS.glob("*.py") if p.stem != "__init__"}
    assert modules == {p.stem for p in BIN.glob("*.py")}
    for name in sorted(modules):
        tree = ast.parse((SCRIPTS / f"{name}.py").read_text(encoding="utf-8"))
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert len(mains) == 1, name
        args = mains[0].args
        assert [a.arg for a in args.args] == ["argv"] and len(args.defaults) == 1, name  # main(argv=None)
        assert ast.get_docstring(tree), f"{name}: the docstring is the script's description"
        assert "__main__" not in (SCRIPTS / f"{name}.py").read_text(encoding="utf-8"), f"{name}: the shim runs it"
