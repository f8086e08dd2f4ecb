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


def _profiles() -> set[str]:
    """Profile names defined in nextflow.config and the config files it includes."""
    names = set()
    for path in [REPO / "nextflow.config", *sorted((REPO / "conf").glob("*.config"))]:
        text = path.read_text()
        for match in re.finditer(r"^profiles \{\n", text, flags=re.M):
            body = text[match.end(): text.index("\n}\n", match.end())]
            names |= set(re.findall(r"^    (\w+) \{", body, flags=re.M))
    return names


def _readme_profile_uses() -> list[tuple[str, str]]:
    """``(profile, line)`` for every ``-profile a,b`` in the README (placeholders skipped)."""
    uses = []
    for line in (REPO / "README.md").read_text().splitlines():
        for value in re.findall(r"-profile[ =]([\w,.-]+)", line):
            uses += [(name, line.strip()) for name in value.strip(".,").split(",") if name]
    return uses


def test_readme_profiles_exist():
    profiles = _profiles()
    assert {"test", "local", "docker", "podman", "gpu"} <= profiles
    uses = _readme_profile_uses()
    assert uses, "no -profile in the README"
    missing = [(name, line) for name, line in uses if name not in profiles]
    assert not missing


def test_readme_first_command_builds_the_images():
    """The first command of the quick start works on a fresh machine: no image is published."""
    readme = (REPO / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):]
    first_block = quick[quick.index("```bash") + len("```bash"): quick.index("```", quick.index("```bash") + 7)]
    commands = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[0] == "bash tools/build_images.sh"
    assert (REPO / "tools" / "build_images.sh").is_file()
    assert "-profile test,podman" in commands[1]
