#!/usr/bin/env python3
"""The command-line script map_tangram.py: its code, docstring and --help are in spatialmap.scripts.map_tangram."""

from spatialmap import cli
from spatialmap.scripts.map_tangram import main

if __name__ == "__main__":
    cli.run(main)
