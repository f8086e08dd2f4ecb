#!/usr/bin/env python3
"""The command-line script read_slide.py: its code, docstring and --help are in spatialmap.scripts.read_slide."""

from spatialmap import cli
from spatialmap.scripts.read_slide import main

if __name__ == "__main__":
    cli.run(main)
