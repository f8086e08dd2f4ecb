#!/usr/bin/env python3
"""Write ``docs/parameters.md``, the parameter tables, from ``nextflow_schema.json``.

One table per group of the schema (its ``$defs``, in the schema's order) with each parameter's
name, type, default, description and allowed values, so that the page cannot say anything the
schema does not. ``tests/unit/test_docs.py`` fails while the committed page differs.

Usage::

    python3 tools/schema_docs.py            # rewrite docs/parameters.md
    python3 tools/schema_docs.py --check    # exit 1 when docs/parameters.md is out of date

Standard library only: any Python 3.9+ runs it, the project's environment included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "nextflow_schema.json"
OUTPUT = REPO / "docs" / "parameters.md"
COMMAND = "python3 tools/schema_docs.py"

FORMATS = {"file-path": "a file", "directory-path": "a folder", "path": "a path"}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no pipes or line breaks, no HTML tags."""
    return text.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _code(value) -> str:
    """A value as inline code (JSON spelling for numbers and booleans)."""
    shown = value if isinstance(value, str) else json.dumps(value)
    if shown == "":
        return "empty"
    return f"`{shown}`".replace("|", "\\|")


def _type(entry: dict) -> str:
    kind = entry.get("type", "string")
    return " or ".join(kind) if isinstance(kind, list) else kind


def _default(entry: dict) -> str:
    return _code(entry["default"]) if "default" in entry else ""


def _allowed(entry: dict) -> str:
    """Allowed values: enum, list entries, range, pattern, file or folder, the samplesheet's schema."""
    parts = []
    if "enum" in entry:
        parts.append("one of " + ", ".join(_code(v) for v in entry["enum"]))
    if "x-list-enum" in entry:
        parts.append("comma-separated list of " + ", ".join(_code(v) for v in entry["x-list-enum"]))
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in entry:
            parts.append(f"{sign} {json.dumps(entry[key])}")
    if "format" in entry:
        parts.append(FORMATS.get(entry["format"], entry["format"]))
    if "pattern" in entry:
        parts.append(f"matches {_code(entry['pattern'])}")
    if "schema" in entry:
        parts.append(f"rows checked against [`{entry['schema']}`](../{entry['schema']})")
    return "; ".join(parts)


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def render(schema: dict) -> str:
    """The Markdown page of every parameter of ``schema``, grouped as the schema groups them."""
    groups = schema["$defs"]
    lines = [
        "# Parameters",
        "",
        "<!-- generated from nextflow_schema.json by tools/schema_docs.py: do not edit by hand -->",
        "",
        "Every parameter of the pipeline, generated from [`nextflow_schema.json`](../nextflow_schema.json)",
        f"by `{COMMAND}` (a unit test fails while this page and the schema differ). The pipeline",
        "checks every value against the same schema before any task starts. On the command line:",
        "`nextflow run main.nf --help` lists them all, `--help <parameter>` prints one entry in full.",
        "",
    ]
    lines += [f"- [{group.get('title', key)}](#{_anchor(group.get('title', key))})" for key, group in groups.items()]
    for key, group in groups.items():
        required = set(group.get("required", []))
        lines += ["", f"## {group.get('title', key)}", ""]
        if group.get("description"):
            lines += [group["description"], ""]
        lines += ["| parameter | type | default | description | allowed values |", "|---|---|---|---|---|"]
        for name, entry in group["properties"].items():
            shown = f"`--{name}`" + (" (required)" if name in required else "")
            cells = [shown, _type(entry), _default(entry), _cell(entry.get("description", "")), _allowed(entry)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check: exit 1 when the page is out of date")
    parser.add_argument("--schema", type=Path, default=SCHEMA, help="the schema (default: nextflow_schema.json)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the page (default: docs/parameters.md)")
    args = parser.parse_args(argv)
    text = render(json.loads(args.schema.read_text()))
    if args.check:
        if not args.output.is_file() or args.output.read_text() != text:
            print(f"ERROR: {args.output} differs from {args.schema.name}: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
