"""README, parameter schema and nextflow.config say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _config_params() -> set[str]:
    text = (REPO / "nextflow.config").read_text()
    block = text[text.index("params {"): text.index("\n}\n", text.index("params {"))]
    return set(re.findall(r"^\s+(\w+)\s*=", block, flags=re.M))


def _schema_params() -> set[str]:
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    return {p for section in schema["$defs"].values() for p in section["properties"]}


def test_every_parameter_is_in_the_schema():
    assert _config_params() == _schema_params()


def test_every_parameter_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = sorted(p for p in _config_params() if f"`--{p}`" not in readme)
    assert not missing


def test_schema_defaults_match_the_config():
    text = (REPO / "nextflow.config").read_text()
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    for section in schema["$defs"].values():
        for name, entry in section["properties"].items():
            match = re.search(rf"^\s+{name}\s*=\s*(.+?)\s*(//.*)?$", text, flags=re.M)
            raw = match.group(1)
            if raw == "null":
                assert "default" not in entry, name
            else:
                assert str(entry["default"]).lower() == raw.strip("'").lower(), name
