#!/usr/bin/env python3
"""The command-line script map_flashdeconv.py: its code, docstring and --help are in spatialmap.scripts.map_flashdeconv."""

from spatialmap import cli
from spatialmap.scripts.map_flashdeconv import main

if __name__ == "__main__":
    cli.run(main)
