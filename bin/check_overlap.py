#!/usr/bin/env python3
"""The command-line script check_overlap.py: its code, docstring and --help are in spatialmap.scripts.check_overlap."""

from spatialmap import cli
from spatialmap.scripts.check_overlap import main

if __name__ == "__main__":
    cli.run(main)
