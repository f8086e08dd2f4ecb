#!/usr/bin/env python3
"""The command-line script segment_patch.py: its code, docstring and --help are in spatialmap.scripts.segment_patch."""

from spatialmap import cli
from spatialmap.scripts.segment_patch import main

if __name__ == "__main__":
    cli.run(main)
