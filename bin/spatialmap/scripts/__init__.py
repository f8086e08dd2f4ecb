"""The pipeline's command-line scripts: one module per ``bin/<name>.py``, each with ``main(argv)``.

``bin/<name>.py`` (what a Nextflow process calls) is a shim that runs ``<name>.main`` here through
``cli.run`` (a user error: one ``ERROR:`` line, exit status 1). The same scripts run as subcommands
of the ``spatialmap`` entry point (pyproject.toml) and of ``python -m spatialmap``: the command is the
module's name with dashes, ``spatialmap map-rctd --slide ...`` runs ``map_rctd.py --slide ...``. The
commands are the modules present in this folder; nothing else lists them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import sys

PROG = "spatialmap"


def commands() -> dict[str, str]:
    """``{command: module name}`` for every script module here (``map-rctd``: ``map_rctd``)."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg and not m.name.startswith("_"))
    return {name.replace("_", "-"): name for name in names}


def summary(module: str) -> str:
    """The first paragraph of a script module's docstring on one line, read without importing the module."""
    spec = importlib.util.find_spec(f"{__name__}.{module}")
    with open(spec.origin, encoding="utf-8") as handle:
        doc = ast.get_docstring(ast.parse(handle.read())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def usage() -> str:
    from spatialmap import __version__

    table = commands()
    width = max(map(len, table))
    lines = [
        f"usage: {PROG} <command> [options]   ({PROG} <command> --help: the command's options)",
        "",
        f"spatialmap {__version__}: the pipeline's scripts (bin/<command with underscores>.py runs the same).",
        "",
        "commands:",
    ]
    lines += [f"  {command:<{width}}  {summary(module)}" for command, module in table.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run ``spatialmap <command> [options]``; returns the exit status (a script's own exits pass through)."""
    from spatialmap import __version__, cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(usage())
        return 2
    if argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    table = commands()
    command = argv[0]
    if command not in table:
        print(f"{PROG}: unknown command {command!r}; the commands: {', '.join(table)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{table[command]}")
    # argparse names the program after sys.argv[0]: "usage: spatialmap map-rctd ..."
    saved = sys.argv[0] if sys.argv else None
    sys.argv[:1] = [f"{PROG} {command}"]
    try:
        cli.run(module.main, argv[1:])
    finally:
        if saved is None:
            sys.argv[:1] = []
        else:
            sys.argv[0] = saved
    return 0
