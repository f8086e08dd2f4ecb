#!/usr/bin/env python3
"""The command-line script make_report.py: its code, docstring and --help are in spatialmap.scripts.make_report."""

from spatialmap import cli
from spatialmap.scripts.make_report import main

if __name__ == "__main__":
    cli.run(main)
