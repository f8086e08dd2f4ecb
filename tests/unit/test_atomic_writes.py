"""Every file the bin scripts and the package publish is written through cli.atomic_path.

A write is a call of ``.write_h5ad(``, ``.savefig(``, ``.to_csv(``, ``.write_text(`` or
``open(..., "w")``; it must write to the temporary path the ``with cli.atomic_path(...) as tmp``
block yields (named ``tmp``), so that a task killed mid-write leaves no file under the final
name (the pipeline test "no partial results after a kill mid-write" checks one such kill).
"""

from __future__ import annotations

import re
from pathlib import Path

BIN = Path(__file__).resolve().parents[2] / "bin"
# (object).method(first argument   /   open(first argument, "w")
WRITE = re.compile(r"([\w.]*)\.(write_h5ad|savefig|to_csv|write_text)\(([^,)]*)|open\(([^,)]*),\s*[\"']w")
TMP = re.compile(r"^(str\()?\w*tmp\w*\)?$")
# test-data generators (their output is committed, not published by the pipeline), and
# writers owned by other modules that are known not to go through atomic_path yet
EXEMPT = {"make_test_data.py", "make_hd_test_data.py", "synth.py", "synth_hd.py"}
KNOWN = {("samplesheet.py", "open(path, \"w\", newline=\"\")")}


def _writes(path: Path) -> list[tuple[int, str]]:
    """Writes whose target is not the temporary path of an atomic_path block."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#")[0]
        for match in WRITE.finditer(code):
            obj, method, arg, opened = match.groups()
            target = obj if method == "write_text" else (arg if method else opened)
            if not TMP.match((target or "").strip().split(".")[-1] if method == "write_text" else (target or "").strip()):
                found.append((number, code.strip()))
    return found


def test_published_files_are_written_atomically():
    offenders = []
    for path in sorted([*BIN.glob("*.py"), *(BIN / "spatialmap").glob("*.py")]):
        if path.name in EXEMPT:
            continue
        for number, code in _writes(path):
            if not any(path.name == name and snippet in code for name, snippet in KNOWN):
                offenders.append(f"{path.relative_to(BIN)}:{number}: {code}")
    assert not offenders, "\n".join(offenders)
