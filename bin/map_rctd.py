#!/usr/bin/env python3
"""The command-line script map_rctd.py: its code, docstring and --help are in spatialmap.scripts.map_rctd."""

from spatialmap import cli
from spatialmap.scripts.map_rctd import main

if __name__ == "__main__":
    cli.run(main)
