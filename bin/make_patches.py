#!/usr/bin/env python3
"""The command-line script make_patches.py: its code, docstring and --help are in spatialmap.scripts.make_patches."""

from spatialmap import cli
from spatialmap.scripts.make_patches import main

if __name__ == "__main__":
    cli.run(main)
