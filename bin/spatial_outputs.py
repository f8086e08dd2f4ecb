#!/usr/bin/env python3
"""The command-line script spatial_outputs.py: its code, docstring and --help are in spatialmap.scripts.spatial_outputs."""

from spatialmap import cli
from spatialmap.scripts.spatial_outputs import main

if __name__ == "__main__":
    cli.run(main)
