#!/usr/bin/env python3
"""The command-line script score_markers.py: its code, docstring and --help are in spatialmap.scripts.score_markers."""

from spatialmap import cli
from spatialmap.scripts.score_markers import main

if __name__ == "__main__":
    cli.run(main)
