"""Every mapping method follows the one interface (spatialmap.methods.base), its QC JSON carries the
fields the report reads, and the package has no import cycle."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import spatialmap
import spatialmap.methods
from conftest import BIN
from spatialmap.methods import base

TEST_DATA = BIN.parent / "assets" / "test_data"
PACKAGE = BIN / "spatialmap"


def method_modules():
    """The modules of spatialmap.methods that define ``NAME`` (found by reading, not importing heavy ones)."""
    found = []
    for info in pkgutil.iter_modules(spatialmap.methods.__path__):
        tree = ast.parse((PACKAGE / "methods" / f"{info.name}.py").read_text())
        names = {
            t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
        }
        if "NAME" in names:
            found.append(f"spatialmap.methods.{info.name}")
    return found


def test_the_six_methods_are_found():
    assert sorted(m.rsplit(".", 1)[1] for m in method_modules()) == [
        "cell2location",
        "celltypist",
        "flashdeconv",
        "nnls",
        "rctd",
        "tangram",
    ]


@pytest.mark.parametrize("module_name", method_modules())
def test_each_method_implements_the_protocol(module_name):
    module = importlib.import_module(module_name)
    for attr in base.PROTOCOL:
        assert hasattr(module, attr), (module_name, attr)
    assert module.NAME == module_name.rsplit(".", 1)[1]
    assert isinstance(module.LABEL, str) and module.LABEL
    assert callable(module.run)
    assert isinstance(module.REPORT_COLUMNS, dict) and module.REPORT_COLUMNS
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in module.REPORT_COLUMNS.items())
    assert 1 <= len(module.HEADLINE) <= 3 and set(module.HEADLINE) <= set(module.REPORT_COLUMNS)


def test_method_constants_import_without_the_heavy_packages():
    """base and every method module import with torch, pyro, rctd, flashdeconv, tangram and celltypist absent."""
    code = (
        "import sys\n"
        "for name in ('torch', 'pyro', 'rctd', 'flashdeconv', 'tangram', 'cell2location', 'scvi', 'celltypist', 'sklearn'):\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        "import importlib\n"
        f"for m in {method_modules() + ['spatialmap.methods.base', 'spatialmap.methods.script']!r}:\n"
        "    mod = importlib.import_module(m)\n"
        "    getattr(mod, 'NAME', None)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=BIN)  # python -c imports from its cwd


def test_nnls_qc_json_has_the_report_fields(tmp_path):
    """A real QC JSON (NNLS on slide1): the contract fields, and every REPORT_COLUMNS key the run has."""
    import anndata as ad

    from spatialmap import keys
    from spatialmap.io import visium as io
    from spatialmap.methods import nnls
    from spatialmap.qc import slide as qc

    raw = io.read_spaceranger(TEST_DATA / "slide1" / "outs", "slide1")
    slide = raw[:, ~qc.find_mt_genes(raw.var_names)].copy()
    slide.obs[keys.SAMPLE] = "slide1"
    result = nnls.run(slide, ad.read_h5ad(TEST_DATA / "reference.h5ad"), "cell_type")
    result.qc["selection"] = "test"
    assert isinstance(result, base.MethodResult) and result.method == "nnls" and result.sample == "slide1"
    paths = base.write_outputs(slide, result, nnls, "slide1", outdir=tmp_path)
    record = json.loads(paths["json"].read_text())
    assert record["method"] == "nnls" and record["sample"] == "slide1" and record["label"] == "NNLS"
    assert list(record["report_columns"]) == list(nnls.REPORT_COLUMNS)  # every column is produced
    assert record["headline"] == list(nnls.HEADLINE)
    assert set(record["mean_proportions"]) == set(result.proportions.columns)
    assert sum(record["mean_proportions"].values()) == pytest.approx(1.0)


def _imports(path, module: str) -> set[str]:
    """spatialmap modules ``module`` (file ``path``) imports, at any depth of the file."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "spatialmap"}
        elif isinstance(node, ast.ImportFrom):
            base_name = node.module or ""
            if node.level:
                base_name = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base_name])
            if base_name.split(".")[0] != "spatialmap":
                continue
            found.add(base_name.rstrip("."))
            found |= {f"{base_name}.{a.name}" for a in node.names}
    return found


def test_the_package_has_no_import_cycle():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(BIN).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert spatialmap.__name__ in graph
