#!/usr/bin/env python3
"""The command-line script compare_methods.py: its code, docstring and --help are in spatialmap.scripts.compare_methods."""

from spatialmap import cli
from spatialmap.scripts.compare_methods import main

if __name__ == "__main__":
    cli.run(main)
