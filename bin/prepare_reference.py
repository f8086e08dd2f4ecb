#!/usr/bin/env python3
"""The command-line script prepare_reference.py: its code, docstring and --help are in spatialmap.scripts.prepare_reference."""

from spatialmap import cli
from spatialmap.scripts.prepare_reference import main

if __name__ == "__main__":
    cli.run(main)
