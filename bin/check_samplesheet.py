#!/usr/bin/env python3
"""The command-line script check_samplesheet.py: its code, docstring and --help are in spatialmap.scripts.check_samplesheet."""

from spatialmap import cli
from spatialmap.scripts.check_samplesheet import main

if __name__ == "__main__":
    cli.run(main)
