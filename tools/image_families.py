#!/usr/bin/env python3
"""Which container image families need building and testing, and the record of those verified.

An image is built from its family's inputs only: the stages of ``containers/Dockerfile`` its
target builds on (its own, ``base``, ``torch`` for the torch families, the stages it copies from;
comment lines aside) and the files those stages copy (``install_requirements.sh``, the shared torch
pins ``torch.txt``, the family's own pins ``<family>/requirements.txt``). A new family's stage, or a
change to another family's stage or pins, leaves a family's hash as it was. The pipeline's code is not
in any image (Nextflow puts ``bin/`` on the task's PATH), so an image whose inputs are those
of an image that passed ``tools/test_containers.sh`` is that image again.
``containers/verified.tsv`` records, per family, the hash of the inputs that last passed the
container test; the heavy tier builds and tests only the families whose inputs differ from it.

    image_families.py all                     every family, in name order
    image_families.py changed                 families whose inputs differ from the record
    image_families.py config FAMILY [...]     a Nextflow config running only those families'
                                              processes in their images (the others natively,
                                              with --native-env ENV's bin first on their PATH)
    image_families.py record FAMILY [...]     write those families' current hashes as verified
    image_families.py hash FAMILY             one family's inputs hash
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "containers" / "verified.tsv"
# a module's container line: "${params.container_registry}/spatialmap-<family>:${params.container_tag}",
# the family a name or a Groovy expression (READ_SLIDE picks core or spatial by the input type)
CONTAINER = re.compile(r"spatialmap-(?:\$\{(?P<expr>[^{}]+)\}|(?P<name>[\w-]+)):\$\{params\.container_tag\}")
PROCESS = re.compile(r"^process\s+(\w+)\s*\{", re.M)
FROM = re.compile(r"^FROM\s+(?:--\S+\s+)*(?P<image>\S+)\s+AS\s+(?P<stage>[\w.-]+)\s*$", re.I)


def families(repo: Path = REPO) -> list[str]:
    """The image families: one folder with a requirements.in under containers/ each."""
    return sorted(p.parent.name for p in (repo / "containers").glob("*/requirements.in"))


def dockerfile_stages(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(the lines before the first stage, {stage: its lines}) of a Dockerfile, without comments or blank
    lines (they do not change an image), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(row for row in text.splitlines() if not row.lstrip().startswith("#")))
    preamble, stages, current = [], {}, None
    for line in (" ".join(row.split()) for row in joined.splitlines()):
        if not line:
            continue
        start = FROM.match(line)
        if start:
            current = start["stage"]
            stages[current] = []
        (stages[current] if current else preamble).append(line)
    return preamble, stages


def stage_chain(target: str, stages: dict[str, list[str]]) -> list[str]:
    """The stages a target is built from: its FROM parents and the stages it copies from, then itself."""
    chain: list[str] = []

    def visit(stage: str) -> None:
        if stage in chain:
            return
        for line in stages[stage]:
            parent = FROM.match(line)
            copied = re.search(r"^COPY\s+.*--from=(\S+)", line, re.I)
            for name in (parent["image"] if parent else None, copied[1] if copied else None):
                if name in stages:
                    visit(name)
        chain.append(stage)

    visit(target)
    return chain


def copied_files(lines: list[str]) -> list[str]:
    """The build-context files a stage's COPY / ADD lines take (not those copied from another stage)."""
    files = []
    for line in lines:
        words = line.split()
        if words[0].upper() in ("COPY", "ADD") and not any(w.startswith("--from=") for w in words):
            files += [w for w in words[1:-1] if not w.startswith("--")]
    return files


def inputs_hash(family: str, repo: Path = REPO) -> str:
    """sha256 (16 hex) of what the family's image is built from: its target's Dockerfile stages (and the
    lines before the first stage) and the files they copy, in build order."""
    folder = repo / "containers"
    preamble, stages = dockerfile_stages((folder / "Dockerfile").read_text())
    digest = hashlib.sha256()
    digest.update("\n".join(preamble).encode() + b"\0")
    for stage in stage_chain(family, stages):
        digest.update("\n".join(stages[stage]).encode() + b"\0")
        for name in copied_files(stages[stage]):
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def read_rows(path: Path = RECORD) -> dict[str, list[str]]:
    """{family: [inputs hash, date, verified by]} from the record (comment lines start with #)."""
    if not path.is_file():
        return {}
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {row[0]: row[1:] for row in rows}


def read_record(path: Path = RECORD) -> dict[str, str]:
    """{family: verified inputs hash}."""
    return {family: row[0] for family, row in read_rows(path).items()}


def changed(repo: Path = REPO, record: Path = RECORD) -> list[str]:
    """Families whose inputs differ from the last verified ones (or were never verified)."""
    verified = read_record(record)
    return [f for f in families(repo) if verified.get(f) != inputs_hash(f, repo)]


def process_containers(repo: Path = REPO) -> dict[str, tuple[str, str]]:
    """{process: ('name', family) or ('expr', Groovy expression giving the family)} from the modules."""
    found = {}
    for module in sorted((repo / "modules" / "local").glob("*/main.nf")):
        text = module.read_text()
        process, container = PROCESS.search(text), CONTAINER.search(text)
        if process and container:
            kind = "name" if container["name"] else "expr"
            found[process.group(1)] = (kind, container["name"] or container["expr"].strip())
    return found


def nextflow_config(tested: list[str], repo: Path = REPO, native_env: str | None = None) -> str:
    """A config that runs the tested families' processes in their images and every other process
    natively, with ``native_env``'s ``bin`` first on its PATH (the local profile's environment: the
    container profile gives a native task none)."""
    image = '"${params.container_registry}/spatialmap-${family}:${params.container_tag}"'
    path = f'export PATH="{native_env}/bin:$PATH"' if native_env else ""
    native = f"; beforeScript = '{path}'" if path else ""
    lines = ["// written by tools/image_families.py config: only these families in their images: " + ", ".join(tested)]
    lines.append("process {")
    for process, (kind, family) in sorted(process_containers(repo).items()):
        if kind == "name":
            if family not in tested:
                lines.append(f"    withName: '{process}' {{ container = null{native} }}")
            continue
        names = ", ".join(f"'{f}'" for f in tested)
        chosen = f"{{ def family = {family}; family in [{names}]"
        line = f"    withName: '{process}' {{ container = {chosen} ? {image} : null }}"
        if path:
            line += f"; beforeScript = {chosen} ? '' : '{path}' }}"
        lines.append(line + " }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_record(tested: list[str], repo: Path = REPO, record: Path = RECORD) -> None:
    """Record the tested families' current inputs as verified (the others' rows kept)."""
    rows = read_rows(record)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    today = datetime.date.today().isoformat()
    for family in tested:
        rows[family] = [
            inputs_hash(family, repo),
            today,
            f"tools/test_containers.sh at {commit.stdout.strip() or 'unknown'}",
        ]
    header = (
        "# Container image families whose inputs (tools/image_families.py hash) passed tools/test_containers.sh:\n"
        "# the heavy tier builds and tests only the families whose inputs differ from this record.\n"
        "# family\tinputs_hash\tdate\tverified_by\n"
    )
    body = "".join("\t".join([family, *row]) + "\n" for family, row in sorted(rows.items()))
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(header + body)
    tmp.replace(record)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["all", "changed", "config", "record", "hash"])
    parser.add_argument("families", nargs="*", help="image families (containers/<family>)")
    parser.add_argument("--native-env", default=None, help="config: the environment the other processes run in")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.families) - set(families()))
    if unknown:
        print(f"unknown image families: {', '.join(unknown)} (known: {', '.join(families())})", file=sys.stderr)
        return 2
    if args.command == "all":
        print(" ".join(families()))
    elif args.command == "changed":
        print(" ".join(changed()))
    elif args.command == "config":
        print(nextflow_config(args.families, native_env=args.native_env), end="")
    elif args.command == "record":
        write_record(args.families)
    else:
        for family in args.families:
            print(inputs_hash(family))
    return 0


if __name__ == "__main__":
    sys.exit(main())
