#!/usr/bin/env python3
"""The command-line script summarise_regions.py: its code, docstring and --help are in spatialmap.scripts.summarise_regions."""

from spatialmap import cli
from spatialmap.scripts.summarise_regions import main

if __name__ == "__main__":
    cli.run(main)
