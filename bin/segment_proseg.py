#!/usr/bin/env python3
"""The command-line script segment_proseg.py: its code, docstring and --help are in spatialmap.scripts.segment_proseg."""

from spatialmap import cli
from spatialmap.scripts.segment_proseg import main

if __name__ == "__main__":
    cli.run(main)
