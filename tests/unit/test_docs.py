"""README, parameter schema and nextflow.config say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# config files whose top-level params block defines pipeline parameters
PARAM_CONFIGS = ("nextflow.config", "conf/cloud.config", "conf/slurm.config")


def _params_blocks() -> str:
    blocks = []
    for name in PARAM_CONFIGS:
        path = REPO / name
        if not path.exists():
            continue
        text = path.read_text()
        match = re.search(r"^params \{", text, flags=re.M)
        if match:
            blocks.append(text[match.start(): text.index("\n}\n", match.start())])
    return "\n".join(blocks)


def _config_params() -> set[str]:
    return set(re.findall(r"^\s+(\w+)\s*=", _params_blocks(), flags=re.M))


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
    text = _params_blocks()
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    for section in schema["$defs"].values():
        for name, entry in section["properties"].items():
            match = re.search(rf"^\s+{name}\s*=\s*(.+?)\s*(//.*)?$", text, flags=re.M)
            raw = match.group(1)
            if raw == "null":
                assert "default" not in entry, name
            else:
                assert str(entry["default"]).lower() == raw.strip("'").lower(), name
