#!/usr/bin/env python3
"""The command-line script map_cell2location.py: its code, docstring and --help are in spatialmap.scripts.map_cell2location."""

from spatialmap import cli
from spatialmap.scripts.map_cell2location import main

if __name__ == "__main__":
    cli.run(main)
