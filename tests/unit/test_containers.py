"""The container images: pinned to requirements.lock, named by every module, usable by any user.

Static checks of ``containers/`` and ``modules/``; building the images and running the
pipeline in them is ``tools/test_containers.sh``.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

import image_families  # tools/image_families.py (tools/ is on pytest's pythonpath)

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
DOCKERFILE = CONTAINERS / "Dockerfile"
FAMILIES = sorted(path.parent.name for path in CONTAINERS.glob("*/requirements.in"))
MODULES = sorted(REPO.glob("modules/local/*/main.nf"))


def load_sync():
    """containers/sync_requirements.py, by its path: containers/ is the images' build context, not a package."""
    spec = importlib.util.spec_from_file_location("sync_requirements", CONTAINERS / "sync_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = load_sync()


def all_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


def stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """``{stage: (parent, its instructions after FROM)}``."""
    found, current = {}, None
    for keyword, args in all_instructions():
        if keyword == "FROM":
            parent, _, name = args.partition(" AS ")
            current = name.strip()
            found[current] = (parent.strip(), [])
        elif current is not None:
            found[current][1].append((keyword, args))
    return found


def instructions(family: str) -> list[tuple[str, str]]:
    """Every instruction that makes ``family``'s image: its ancestors' stages, then its own."""
    chain, name, table = [], family, stages()
    while name in table:
        parent, steps = table[name]
        chain = [("FROM", parent)] + steps + chain
        name = parent
    return chain


def env_of(family: str) -> dict[str, str]:
    env = {}
    for keyword, args in instructions(family):
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def requirement_pins(path: Path) -> dict[str, tuple[str, str]]:
    """``{normalized name: (name, version)}`` of an exact-pin requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.relative_to(REPO)}: {line!r} is not an exact pin"
            pins[sync.normalize(name)] = (name, version)
    return pins


def copied_files(family: str) -> list[str]:
    """Files a family's stage copies from containers/ (a COPY --from=<stage> copies from another stage)."""
    return [
        args.split()[0]
        for keyword, args in instructions(family)
        if keyword == "COPY" and not args.startswith("--from=")
    ]


def test_every_family_has_its_stage():
    assert FAMILIES == ["annotation", "cell2location", "core", "deconv", "spatial", "tangram"]
    assert set(FAMILIES) <= set(stages()), "containers/Dockerfile lacks a stage per family"


@pytest.mark.parametrize(
    "path",
    [CONTAINERS / "torch.txt"] + [CONTAINERS / f / "requirements.txt" for f in FAMILIES],
    ids=lambda p: str(p.relative_to(CONTAINERS)),
)
def test_every_pin_is_the_locked_version(path):
    lock = sync.read_lock()
    pins = requirement_pins(path)
    assert pins, f"{path} pins nothing"
    for key, (name, version) in pins.items():
        if key in lock:
            assert version == lock[key][1], f"{path.name}: {name}=={version}, but requirements.lock has {lock[key][1]}"
        else:
            assert key in sync.FREEZE_OMITS, f"{path.name}: {name} is not in requirements.lock"


def test_requirement_files_are_the_closure_of_the_lock():
    """Each file is what sync_requirements.py writes now: every dependency, nothing else."""
    stale = [
        str(path.relative_to(REPO))
        for path, text in sync.expected().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"out of date (run containers/sync_requirements.py): {stale}"


@pytest.mark.parametrize("family", FAMILIES)
def test_image_has_the_packages_its_scripts_import(family):
    """The families hold the libraries the issue names for them, at the locked versions."""
    wanted = {
        "annotation": {
            "novae",
            "torch",
            "torch-geometric",
            "spatialleiden",
            "decoupler",
            "celltypist",
            "scikit-learn",
            "scanpy",
            "leidenalg",
        },
        "core": {"scanpy", "anndata", "multiqc", "pyarrow", "pyyaml"},
        "cell2location": {"cell2location", "scvi-tools", "pyro-ppl", "torch", "scanpy"},
        "tangram": {"tangram-sc", "torch", "scanpy"},
        "deconv": {"rctd-py", "flashdeconv", "torch", "scanpy", "scipy"},
        "spatial": {"sopa", "spatialdata", "spatialdata-io", "scanpy", "pyarrow", "tensorflow-cpu", "stardist"},
    }[family]
    held = set(requirement_pins(CONTAINERS / family / "requirements.txt"))
    if "torch.txt" in copied_files(family):
        held |= set(requirement_pins(CONTAINERS / "torch.txt"))
    assert wanted <= held, f"{family} image lacks {sorted(wanted - held)}"
    if family in ("core", "spatial"):
        assert "torch" not in held, f"the {family} image must stay free of torch"


@pytest.mark.parametrize("family", FAMILIES)
def test_dockerfile_installs_exactly_the_pinned_files(family):
    copies = copied_files(family)
    for source in copies:
        assert (CONTAINERS / source).is_file(), f"{family}: COPY {source}: no such file in containers/"
    needs_torch = "torch" in sync.family_pins(family)
    assert ("torch.txt" in copies) == needs_torch, (
        f"{family}: the torch layer is {'missing' if needs_torch else 'unneeded'}"
    )
    assert f"{family}/requirements.txt" in copies
    installs = [
        args for keyword, args in instructions(family) if keyword == "RUN" and "install_requirements.sh" in args
    ]
    assert installs and all(re.search(r"install_requirements\.sh /opt/spatialmap/\S+\.txt", run) for run in installs)
    script = (CONTAINERS / "install_requirements.sh").read_text()
    pip_installs = [line for line in script.splitlines() if line.strip().startswith("pip install")]
    assert pip_installs and all("--no-deps" in line and '-r "$file"' in line for line in pip_installs), (
        "install_requirements.sh: every pip install takes exact pins only"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_dockerfile_runs_as_any_user(family):
    env = env_of(family)
    for var in ("HOME", "MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
        assert var in env, f"{family}: ENV {var} is not set"
    runs = " && ".join(args for keyword, args in instructions(family) if keyword == "RUN")
    made = re.findall(r"mkdir -p -m 1777 ([^&]+)", runs)
    writable = " ".join(made).split()
    for var in ("HOME", "MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
        assert env[var] in writable, f"{family}: {var}={env[var]} is not created world-writable (mkdir -m 1777)"
    assert env["PATH"].startswith("/opt/venv/bin:"), f"{family}: the venv must come first on PATH"
    assert not any(keyword == "USER" for keyword, _ in instructions(family)), (
        f"{family}: no USER: the engine's -u / --userns chooses the user"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_dockerfile_installs_procps_for_nextflow_metrics(family):
    runs = [args for keyword, args in instructions(family) if keyword == "RUN"]
    assert any(re.search(r"apt-get install .*\bprocps\b", run) for run in runs), f"{family}: procps is not installed"


@pytest.mark.parametrize("family", FAMILIES)
def test_dockerfile_bakes_in_no_certificate(family):
    for keyword, args in instructions(family):
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"\.(crt|pem|cer)\b", args), (
                f"{family}: {keyword} {args}: mount CA bundles, never copy"
            )


@pytest.mark.parametrize("family", FAMILIES)
def test_default_base_image_is_the_locks_python(family):
    """The lock's wheels are for this interpreter: the base image has the same Python."""
    first = all_instructions()[0]
    assert first[0] == "ARG" and first[1].startswith("BASE_IMAGE="), "containers/Dockerfile: start with ARG BASE_IMAGE"
    assert instructions(family)[0] == ("FROM", "${BASE_IMAGE}")
    python = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    assert python in first[1], f"default base {first[1]} is not {python}"


def ancestry(family: str) -> list[str]:
    names, table = [family], stages()
    while table[names[-1]][0] in table:
        names.append(table[names[-1]][0])
    return names


def test_images_share_one_base_stage_and_one_torch_layer():
    """Every family builds on the base stage; those that need torch on the torch stage."""
    for family in FAMILIES:
        chain = ancestry(family)
        assert chain[-1] == "base", f"{family} does not build on the base stage: {chain}"
        needs_torch = "torch" in sync.family_pins(family)
        assert ("torch" in chain) == needs_torch, f"{family}: torch stage {'missing' if needs_torch else 'unneeded'}"
    torch_steps = stages()["torch"][1]
    assert any(k == "COPY" and a.startswith("torch.txt ") for k, a in torch_steps)
    assert sum(k == "COPY" and a.startswith("torch.txt ") for k, a in all_instructions()) == 1, (
        "the torch layer is written once, in the torch stage"
    )


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.parent.name)
def test_module_names_an_image_family_with_a_stage(module):
    """registry/spatialmap-<family>:tag, the family literal or chosen per task between literals."""
    found = re.findall(r'^\s*container\s+(?:\{\s*)?"([^"]+)"', module.read_text(), flags=re.M)
    assert len(found) == 1, f"{module.parent.name}: one container directive expected, found {found}"
    match = re.fullmatch(r"\$\{params\.container_registry\}/spatialmap-(.+):\$\{params\.container_tag\}", found[0])
    assert match, f"{module.parent.name}: container {found[0]!r} is not registry/spatialmap-<family>:tag"
    choice = match.group(1)
    families = re.findall(r"'([a-z0-9]+)'", choice) if choice.startswith("${") else [choice]
    if choice.startswith("${"):
        families = families[-2:]  # the two branches of `cond ? 'a' : 'b'`
        assert re.fullmatch(r"\$\{[^}]*\?\s*'[a-z0-9]+'\s*:\s*'[a-z0-9]+'\s*\}", choice), (
            f"{module.parent.name}: a per-task family is `cond ? 'a' : 'b'`, got {choice}"
        )
    for family in families:
        assert family in FAMILIES, (
            f"{module.parent.name}: no image family {family} (containers/<family>/requirements.in)"
        )


def test_default_image_tag_is_the_pipeline_version():
    """tools/build_images.sh tags the images with manifest.version; the modules ask for container_tag."""
    config = (REPO / "nextflow.config").read_text()
    tag = re.search(r"^\s*container_tag\s*=\s*'([^']+)'", config, flags=re.M)
    manifest = re.search(r"^manifest\s*\{[^}]*?^\s*version\s*=\s*'([^']+)'", config, flags=re.M | re.S)
    assert tag and manifest, "nextflow.config: params.container_tag or manifest.version not found"
    assert tag.group(1) == manifest.group(1), (
        f"params.container_tag {tag.group(1)} is not manifest.version {manifest.group(1)}"
    )


def test_every_engine_and_cloud_profile_is_defined():
    text = (REPO / "nextflow.config").read_text() + (REPO / "conf" / "cloud.config").read_text()
    for profile in ("docker", "podman", "singularity", "apptainer", "gpu", "awsbatch", "google_batch"):
        assert re.search(rf"^\s*{profile}\s*\{{", text, flags=re.M), f"no {profile} profile"
    assert "includeConfig 'conf/cloud.config'" in (REPO / "nextflow.config").read_text()


def test_verified_record_names_every_family_once():
    """containers/verified.tsv: one row per image family (the heavy tier tests a family whose inputs differ)."""
    rows = image_families.read_rows()
    assert sorted(rows) == FAMILIES
    assert all(len(row) == 3 and re.fullmatch(r"[0-9a-f]{16}", row[0]) for row in rows.values())


def test_inputs_hash_follows_the_family_pins_only(tmp_path):
    """A family's hash changes with its own pins and the shared inputs, not with another family's pins."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(CONTAINERS, copy / "containers")
    before = {f: image_families.inputs_hash(f, copy) for f in FAMILIES}
    with open(copy / "containers" / "core" / "requirements.txt", "a") as handle:
        handle.write("# changed\n")
    after = {f: image_families.inputs_hash(f, copy) for f in FAMILIES}
    assert [f for f in FAMILIES if before[f] != after[f]] == ["core"]
    dockerfile = copy / "containers" / "Dockerfile"
    # a comment, or a new family's stage, changes no image
    dockerfile.write_text(DOCKERFILE.read_text() + "\n# changed\nFROM base AS newfamily\nRUN true\n")
    assert {f: image_families.inputs_hash(f, copy) for f in FAMILIES} == after
    # a step of the torch stage changes the torch families only; one of the base stage, every family
    text = DOCKERFILE.read_text()
    dockerfile.write_text(text.replace("COPY torch.txt", "RUN true\nCOPY torch.txt"))
    torch_families = {
        f for f in FAMILIES if "torch" in image_families.stage_chain(f, image_families.dockerfile_stages(text)[1])
    }
    assert torch_families >= {"cell2location", "tangram", "deconv"} and "core" not in torch_families
    assert {f for f in FAMILIES if image_families.inputs_hash(f, copy) != after[f]} == torch_families
    dockerfile.write_text(text.replace("FROM ${BASE_IMAGE} AS base", "FROM ${BASE_IMAGE} AS base\nRUN true"))
    assert all(image_families.inputs_hash(f, copy) != after[f] for f in FAMILIES)
    # and the files a stage copies: the shared install script
    dockerfile.write_text(text)
    (copy / "containers" / "install_requirements.sh").write_text("# changed\n")
    assert all(image_families.inputs_hash(f, copy) != after[f] for f in FAMILIES)


def test_changed_families_are_those_unlike_the_record(tmp_path):
    record = tmp_path / "verified.tsv"
    record.write_text("".join(f"{f}\t{image_families.inputs_hash(f)}\t2026-01-01\tx\n" for f in FAMILIES))
    assert image_families.changed(record=record) == []
    record.write_text("".join(f"{f}\t{'0' * 16}\t2026-01-01\tx\n" for f in FAMILIES[:1]))
    assert image_families.changed(record=record) == FAMILIES


def test_families_config_runs_other_processes_natively():
    """With some families only, every other family's process gets no container; a chosen one keeps its own."""
    containers = image_families.process_containers()
    assert len(containers) == len(MODULES)  # every module's container line is understood
    config = image_families.nextflow_config(["deconv"])
    lines = {
        process: [line for line in config.splitlines() if f"withName: '{process}'" in line] for process in containers
    }
    for process, (kind, family) in containers.items():
        if kind == "expr":  # the family chosen per task (READ_SLIDE): kept only when it is a tested one
            assert len(lines[process]) == 1 and "family in ['deconv']" in lines[process][0]
        elif family == "deconv":
            assert lines[process] == []
        else:
            assert len(lines[process]) == 1 and "container = null" in lines[process][0]


def test_native_processes_of_a_families_config_get_the_local_environment():
    """The container profile gives a native task no environment: the config puts the local one first on
    its PATH (a task in its image keeps the image's own)."""
    config = image_families.nextflow_config(["deconv"], native_env="/cache/env")
    path = 'export PATH="/cache/env/bin:$PATH"'
    for process, (kind, family) in image_families.process_containers().items():
        line = [row for row in config.splitlines() if f"withName: '{process}'" in row]
        if kind == "name" and family != "deconv":
            assert path in line[0]
        elif kind == "expr":
            assert f"family in ['deconv'] ? '' : '{path}'" in line[0]
    assert "beforeScript" not in image_families.nextflow_config(["deconv"])
