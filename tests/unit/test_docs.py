"""README, docs/, parameter schema and nextflow.config say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# hand-written pages; docs/parameters.md is generated from the schema
DOC_PAGES = ("README.md", "docs/usage.md", "docs/output.md", "docs/testing.md", "docs/benchmarks.md")


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
            blocks.append(text[match.start() : text.index("\n}\n", match.start())])
    return "\n".join(blocks)


def _config_params() -> set[str]:
    return set(re.findall(r"^\s+(\w+)\s*=", _params_blocks(), flags=re.M))


def _schema_params() -> set[str]:
    return set(_schema_defaults())


def test_every_parameter_is_in_the_schema():
    assert _config_params() == _schema_params()


def _schema() -> dict:
    return json.loads((REPO / "nextflow_schema.json").read_text())


def _schema_defaults() -> dict:
    return {
        name: entry.get("default")
        for section in _schema()["$defs"].values()
        for name, entry in section["properties"].items()
    }


def _page(name: str) -> str:
    return (REPO / name).read_text()


def test_parameters_page_is_generated_from_the_schema():
    """docs/parameters.md is exactly what tools/schema_docs.py makes of nextflow_schema.json."""
    import schema_docs  # tools/schema_docs.py (tools/ is on pytest's pythonpath)

    expected = schema_docs.render(_schema())
    actual = (REPO / "docs" / "parameters.md").read_text()
    assert actual == expected, (
        "docs/parameters.md differs from nextflow_schema.json: run `python3 tools/schema_docs.py` "
        "and commit docs/parameters.md"
    )
    for name in _config_params():
        assert f"`--{name}`" in actual, name


def test_docs_name_only_schema_parameters():
    """Every --some_parameter the README and docs name exists (a renamed parameter is caught)."""
    known = set(_schema_defaults())
    unknown = sorted(
        {
            (page, name)
            for page in DOC_PAGES
            for name in re.findall(r"(?<![\w-])--([a-z0-9]+_[a-z0-9_]+)", _page(page))
            if name not in known
        }
    )
    assert not unknown, f"not parameters of nextflow_schema.json: {unknown}"


# how the pages state a default: `--x` (default `v`) / `--x`, default `v` / `--x` (v, ...) /
# `--x v` (default) / `--x v`, the default / a table row | `--x` | `v` |
_DEFAULT_PATTERNS = (
    r"`--(\w+)`,?\s+\(?default:?\s+`?([^`\s,;)]+)`?",
    r"`--(\w+)`\s+\(`?([0-9][0-9,.e+-]*|[a-z_]+(?=`))`?[,;)]",
    r"`--(\w+) ([^`\s]+)`,?\s+\(?(?:default[;:,)]|the default)",
    r"(?m)^\| `--(\w+)` \| `([^`]*)` \|",
)


def _same(stated: str, default) -> bool:
    if isinstance(default, bool):
        return stated.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(stated.replace(",", "")) == float(default)
        except ValueError:
            return False
    return stated == str(default)


def test_documented_defaults_match_the_schema():
    """A default the README or docs state is the schema's (the README once said spot_weighted)."""
    defaults = _schema_defaults()
    found, wrong = 0, []
    for page in DOC_PAGES:
        text = _page(page)
        for pattern in _DEFAULT_PATTERNS:
            for name, stated in re.findall(pattern, text):
                if name not in defaults:
                    continue
                found += 1
                if not _same(stated, defaults[name]):
                    wrong.append((page, f"--{name}", stated, defaults[name]))
    assert found >= 10, "the default patterns no longer match the pages"
    assert not wrong, f"(page, parameter, stated, schema default): {wrong}"


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
            body = text[match.end() : text.index("\n}\n", match.end())]
            names |= set(re.findall(r"^    (\w+) \{", body, flags=re.M))
    return names


def _readme_profile_uses() -> list[tuple[str, str]]:
    """``(profile, line)`` for every ``-profile a,b`` in the README and docs (placeholders skipped)."""
    uses = []
    for page in DOC_PAGES:
        for line in _page(page).splitlines():
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


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def test_readme_quick_start_is_two_commands():
    """The quick start: the main job on the test data, then the tests; each sets itself up."""
    quick = _section(_page("README.md"), "## Quick start")
    block = quick[quick.index("```bash\n") + 8 : quick.index("\n```", quick.index("```bash"))]
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.split("#")[0].strip()]
    assert [c[:2] for c in commands] == [["bash", "tools/run_test_profile.sh"], ["bash", "tools/test.sh"]]
    for script in ("tools/run_test_profile.sh", "tools/test.sh"):
        assert "tools/setup.sh" in _page(script), f"{script} does not set itself up"
    assert "-profile test,local" in _page("tools/run_test_profile.sh")


def test_readme_is_short_and_its_intro_names_every_platform_and_method():
    readme = _page("README.md")
    assert len(readme.splitlines()) <= 250
    intro = readme[: readme.index("```")]
    assert len([line for line in intro.splitlines() if line.strip() and not line.startswith("#")]) <= 10
    methods = [m for m in _schema()["$defs"]["mapping_options"]["properties"]["methods"]["x-list-enum"] if m != "auto"]
    missing = [
        w
        for w in ["Visium", "Visium HD", "Xenium", "StarDist", "ProSeg", "consensus", *methods]
        if w.lower() not in intro.lower()
    ]
    assert not missing, f"the README's intro does not name {missing}"


def test_readme_layout_names_every_module():
    """The Layout section names every process, subworkflow and package module."""
    layout = _section(_page("README.md"), "## Layout")
    words = set(re.findall(r"[\w.]+", layout))
    names = [p.name for p in (REPO / "modules" / "local").iterdir() if (p / "main.nf").is_file()]
    names += [p.stem for p in (REPO / "subworkflows" / "local").glob("*.nf")]
    package = REPO / "bin" / "spatialmap"
    names += [p.stem for p in package.rglob("*.py") if p.stem != "__init__"]
    names += [p.name for p in package.iterdir() if (p / "__init__.py").is_file()]
    missing = sorted(n for n in names if n not in words)
    assert not missing, f"README's Layout does not name {missing}"


def test_doc_links_resolve():
    """Relative links of the README and docs point at files that exist."""
    broken = []
    for page in (*DOC_PAGES, "docs/parameters.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _page(page)):
            if not re.match(r"[a-z]+:", target) and not ((REPO / page).parent / target).exists():
                broken.append((page, target))
    assert not broken
