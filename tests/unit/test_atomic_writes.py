"""Every file the bin scripts and the package publish is written through cli.atomic_path.

A write is a call of ``.write_h5ad(``, ``.savefig(``, ``.to_csv(``, ``.write_text(`` or
``open(..., "w")``; it must write to the temporary path the ``with cli.atomic_path(...) as tmp``
block yields (named ``tmp``), so that a task killed mid-write leaves no file under the final
name (the pipeline test "no partial results after a kill mid-write" checks one such kill).
A SpatialData store (a directory) is written with ``sdata.write(tmp)`` to ``<name>.zarr.tmp`` and
renamed when complete. Besides these checks of the code, two failures are simulated: a write of
``samplesheet.valid.csv`` (CHECK_SAMPLESHEET) and of the zarr store (SPATIAL_OUTPUTS) that fail
half-way leave nothing behind.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parents[2] / "bin"
WRITERS = {"write_h5ad", "savefig", "to_csv", "write_text"}
TMP = re.compile(r"^(str\()?\w*tmp\w*\)?$")
# writers that open the path they are given (samplesheet.write_checked: every caller passes it
# atomic_path's tmp, checked below); the test-data generators live in tools/, outside bin/
KNOWN = {("samplesheet.py", "open(path, 'w', newline='')")}


def _code_files() -> list[Path]:
    """The scripts and every module of the package (its stage folders included)."""
    return sorted([*BIN.glob("*.py"), *(BIN / "spatialmap").rglob("*.py")])


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def _write_target(call: ast.Call) -> ast.AST | None:
    """The path a write call writes to, or None when the call is not a write."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in WRITERS:
        if func.attr == "write_text":
            return func.value.attr if isinstance(func.value, ast.Attribute) else func.value
        return call.args[0] if call.args else None
    if isinstance(func, ast.Name) and func.id == "open" and len(call.args) >= 2:
        mode = call.args[1]
        if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "w" in mode.value:
            return call.args[0]
    return None


def _writes(path: Path) -> list[tuple[int, str]]:
    """Writes whose target is not the temporary path of an atomic_path block."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        target = _write_target(node)
        if target is None:
            continue
        name = target if isinstance(target, str) else _text(target)
        if not TMP.match(name.strip()):
            found.append((node.lineno, _text(node)))
    return found


def test_published_files_are_written_atomically():
    offenders = []
    for path in _code_files():
        for number, code in _writes(path):
            if not any(path.name == name and snippet in code for name, snippet in KNOWN):
                offenders.append(f"{path.relative_to(BIN)}:{number}: {code}")
    assert not offenders, "\n".join(offenders)


def test_the_scan_finds_writes_in_the_stage_folders():
    """The scan reaches the package's subfolders and sees a write split over several lines."""
    assert any((BIN / "spatialmap" / "methods").glob("*.py"))
    sample = ast.parse("frame.to_csv(\n    out_path,\n)\nwith x as tmp:\n    frame.to_csv(tmp)\n")
    targets = [_text(_write_target(n)) for n in ast.walk(sample) if isinstance(n, ast.Call) and _write_target(n)]
    assert targets == ["out_path", "tmp"]


def test_spatialdata_stores_are_written_to_a_temporary_store():
    """SpatialData stores are directories: SpatialData.write must target the temporary store."""
    offenders = []
    for path in _code_files():
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if (
                isinstance(node, ast.Call)
                and isinstance(func, ast.Attribute)
                and func.attr == "write"
                and "sdata" in _text(func.value)
                and node.args
                and not TMP.match(_text(node.args[0]).strip())
            ):
                offenders.append(f"{path.relative_to(BIN)}:{node.lineno}: {_text(node)}")
    assert not offenders, "\n".join(offenders)


def test_the_checked_samplesheet_is_written_through_a_temporary_path():
    """samplesheet.write_checked opens the path it is given: every caller must give it atomic_path's tmp."""
    calls = []
    for path in _code_files():
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if isinstance(node, ast.Call) and name == "write_checked" and node.args:
                calls.append((path.name, node.lineno, _text(node.args[-1])))
    assert calls, "no caller of write_checked found"
    assert all(TMP.match(target) for _, _, target in calls), calls


def test_check_samplesheet_leaves_no_half_written_csv(tmp_path, monkeypatch):
    """A failure while samplesheet.valid.csv is written leaves no file (no partial, no temporary)."""
    from types import SimpleNamespace

    from spatialmap.scripts import check_samplesheet

    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,h5ad\ns1,s1.h5ad\n")
    slides = [
        SimpleNamespace(
            sample="s1", input_type="h5ad", path=str(tmp_path / "s1.h5ad"), group="all", segmentation="none"
        )
    ]
    monkeypatch.setattr(check_samplesheet, "read_samplesheet", lambda *a, **k: slides)

    def half_then_fail(found, path):
        Path(path).write_text("sample,input_type,path,group\ns1,h5")
        raise OSError("disk full")

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(check_samplesheet, "write_checked", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        check_samplesheet.main(
            [str(sheet), "--output", str(out / "samplesheet.valid.csv"), "--versions", str(out / "versions.yml")]
        )
    assert sorted(p.name for p in out.iterdir()) == [], "a failed write left files behind"

    def whole(found, path):
        Path(path).write_text(
            "sample,input_type,path,group\n" + "".join(f"{s.sample},{s.input_type},{s.path},{s.group}\n" for s in found)
        )

    monkeypatch.setattr(check_samplesheet, "write_checked", whole)
    check_samplesheet.main(
        [str(sheet), "--output", str(out / "samplesheet.valid.csv"), "--versions", str(out / "versions.yml")]
    )
    assert sorted(p.name for p in out.iterdir()) == ["samplesheet.valid.csv", "versions.yml"]
    assert (out / "samplesheet.valid.csv").read_text().splitlines()[1].startswith("s1,h5ad,")


def _tiny_table():
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scipy import sparse

    return ad.AnnData(
        X=sparse.csr_matrix(np.eye(3, dtype=np.float32)),
        obs=pd.DataFrame(index=["a", "b", "c"]),
        var=pd.DataFrame(index=["g1", "g2", "g3"]),
    )


def test_a_failed_store_write_leaves_no_store(tmp_path, monkeypatch):
    """SPATIAL_OUTPUTS' zarr: written as <name>.zarr.tmp, renamed when complete; a failure leaves neither."""
    spatialdata = pytest.importorskip("spatialdata")
    from spatialmap.io import outputs as so

    real_write = spatialdata.SpatialData.write

    def half_then_fail(self, file_path, *args, **kwargs):
        Path(file_path).mkdir()
        (Path(file_path) / "zarr.json").write_text("{}")  # a store begun, not finished
        raise OSError("killed mid-write")

    store = tmp_path / "s.spatialdata.zarr"
    monkeypatch.setattr(spatialdata.SpatialData, "write", half_then_fail)
    with pytest.raises(OSError, match="killed mid-write"):
        so.write_store(store, {}, {}, _tiny_table())
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed write left a store behind"

    # a temporary store left by a killed attempt is replaced; the finished store is complete
    (tmp_path / "s.spatialdata.zarr.tmp").mkdir()
    (tmp_path / "s.spatialdata.zarr.tmp" / "stale").write_text("x")
    monkeypatch.setattr(spatialdata.SpatialData, "write", real_write)
    so.write_store(store, {}, {}, _tiny_table())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.spatialdata.zarr"]
    assert not (store / "stale").exists()
    back = spatialdata.read_zarr(store)
    assert back.tables["table"].n_obs == 3
