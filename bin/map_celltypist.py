#!/usr/bin/env python3
"""The command-line script map_celltypist.py: its code, docstring and --help are in spatialmap.scripts.map_celltypist."""

from spatialmap import cli
from spatialmap.scripts.map_celltypist import main

if __name__ == "__main__":
    cli.run(main)
