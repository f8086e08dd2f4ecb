#!/usr/bin/env python3
"""The command-line script slide_qc.py: its code, docstring and --help are in spatialmap.scripts.slide_qc."""

from spatialmap import cli
from spatialmap.scripts.slide_qc import main

if __name__ == "__main__":
    cli.run(main)
