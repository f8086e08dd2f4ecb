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

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
FAMILIES = sorted(path.parent.name for path in CONTAINERS.glob("*/Dockerfile"))
MODULES = sorted(REPO.glob("modules/local/*/main.nf"))


def load_sync():
    spec = importlib.util.spec_from_file_location("sync_requirements", CONTAINERS / "sync_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = load_sync()


def instructions(family: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined, comments dropped."""
    text = (CONTAINERS / family / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


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
    return [args.split()[0] for keyword, args in instructions(family) if keyword == "COPY"]


def test_the_three_families_exist():
    assert FAMILIES == ["cell2location", "core", "tangram"]


@pytest.mark.parametrize("path", [CONTAINERS / "torch.txt"] + [CONTAINERS / f / "requirements.txt" for f in FAMILIES],
                         ids=lambda p: str(p.relative_to(CONTAINERS)))
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
    stale = [str(path.relative_to(REPO)) for path, text in sync.expected().items()
             if not path.exists() or path.read_text() != text]
    assert not stale, f"out of date (run containers/sync_requirements.py): {stale}"


@pytest.mark.parametrize("family", FAMILIES)
def test_image_has_the_packages_its_scripts_import(family):
    """The families hold the libraries the issue names for them, at the locked versions."""
    wanted = {
        "core": {"scanpy", "anndata", "multiqc", "pyarrow", "pyyaml"},
        "cell2location": {"cell2location", "scvi-tools", "pyro-ppl", "torch", "scanpy"},
        "tangram": {"tangram-sc", "torch", "scanpy"},
    }[family]
    held = set(requirement_pins(CONTAINERS / family / "requirements.txt"))
    if "torch.txt" in copied_files(family):
        held |= set(requirement_pins(CONTAINERS / "torch.txt"))
    assert wanted <= held, f"{family} image lacks {sorted(wanted - held)}"
    if family == "core":
        assert "torch" not in held, "the core image must stay free of torch"


@pytest.mark.parametrize("family", FAMILIES)
def test_dockerfile_installs_exactly_the_pinned_files(family):
    copies = copied_files(family)
    for source in copies:
        assert (CONTAINERS / source).is_file(), f"{family}: COPY {source}: no such file in containers/"
    needs_torch = "torch" in sync.family_pins(family)
    assert ("torch.txt" in copies) == needs_torch, f"{family}: the torch layer is {'missing' if needs_torch else 'unneeded'}"
    assert f"{family}/requirements.txt" in copies
    for keyword, args in instructions(family):
        if keyword == "RUN" and "pip install" in args:
            for command in args.split("&&"):
                if "pip install" in command:
                    assert "--no-deps" in command and "-r /opt/spatialmap/" in command, \
                        f"{family}: every pip install takes exact pins only: {command.strip()}"


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
    assert not any(keyword == "USER" for keyword, _ in instructions(family)), \
        f"{family}: no USER: the engine's -u / --userns chooses the user"


@pytest.mark.parametrize("family", FAMILIES)
def test_dockerfile_installs_procps_for_nextflow_metrics(family):
    runs = [args for keyword, args in instructions(family) if keyword == "RUN"]
    assert any(re.search(r"apt-get install .*\bprocps\b", run) for run in runs), f"{family}: procps is not installed"


@pytest.mark.parametrize("family", FAMILIES)
def test_dockerfile_bakes_in_no_certificate(family):
    for keyword, args in instructions(family):
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"\.(crt|pem|cer)\b", args), f"{family}: {keyword} {args}: mount CA bundles, never copy"


@pytest.mark.parametrize("family", FAMILIES)
def test_default_base_image_is_the_locks_python(family):
    """The lock's wheels are for this interpreter: the base image has the same Python."""
    first = instructions(family)[:2]
    assert first[0][0] == "ARG" and first[0][1].startswith("BASE_IMAGE="), f"{family}: start with ARG BASE_IMAGE"
    assert first[1] == ("FROM", "${BASE_IMAGE}")
    python = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    assert python in first[0][1], f"{family}: default base {first[0][1]} is not {python}"


def test_images_share_their_first_layers():
    """Same lines up to the first COPY in every image; the torch images also share the torch layer."""
    def prefix(family, upto_copies):
        steps, copies = [], 0
        for step in instructions(family):
            if step[0] == "COPY":
                copies += 1
                if copies > upto_copies:
                    break
            steps.append(step)
        return steps

    first = {family: prefix(family, 0) for family in FAMILIES}
    assert len({repr(steps) for steps in first.values()}) == 1, "the Dockerfiles differ before their first COPY"
    torch_families = [f for f in FAMILIES if "torch.txt" in copied_files(f)]
    assert len(torch_families) >= 2
    layers = {family: prefix(family, 1) for family in torch_families}
    assert all(steps[-2][0] == "COPY" and steps[-2][1].startswith("torch.txt ") for steps in layers.values())
    assert len({repr(steps) for steps in layers.values()}) == 1, "the torch images differ up to the torch layer"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.parent.name)
def test_module_names_an_image_family_with_a_dockerfile(module):
    found = re.findall(r'^\s*container\s+"([^"]+)"', module.read_text(), flags=re.M)
    assert len(found) == 1, f"{module.parent.name}: one container directive expected, found {found}"
    match = re.fullmatch(r"\$\{params\.container_registry\}/spatialmap-([a-z0-9]+):\$\{params\.container_tag\}", found[0])
    assert match, f"{module.parent.name}: container {found[0]!r} is not registry/spatialmap-<family>:tag"
    assert match.group(1) in FAMILIES, f"{module.parent.name}: no containers/{match.group(1)}/Dockerfile"


def test_default_image_tag_is_the_pipeline_version():
    """tools/build_images.sh tags the images with manifest.version; the modules ask for container_tag."""
    config = (REPO / "nextflow.config").read_text()
    tag = re.search(r"^\s*container_tag\s*=\s*'([^']+)'", config, flags=re.M)
    manifest = re.search(r"^manifest\s*\{[^}]*?^\s*version\s*=\s*'([^']+)'", config, flags=re.M | re.S)
    assert tag and manifest, "nextflow.config: params.container_tag or manifest.version not found"
    assert tag.group(1) == manifest.group(1), \
        f"params.container_tag {tag.group(1)} is not manifest.version {manifest.group(1)}"


def test_every_engine_and_cloud_profile_is_defined():
    text = (REPO / "nextflow.config").read_text() + (REPO / "conf" / "cloud.config").read_text()
    for profile in ("docker", "podman", "singularity", "apptainer", "gpu", "awsbatch", "google_batch"):
        assert re.search(rf"^\s*{profile}\s*\{{", text, flags=re.M), f"no {profile} profile"
    assert "includeConfig 'conf/cloud.config'" in (REPO / "nextflow.config").read_text()
