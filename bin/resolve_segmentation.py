#!/usr/bin/env python3
"""The command-line script resolve_segmentation.py: its code, docstring and --help are in spatialmap.scripts.resolve_segmentation."""

from spatialmap import cli
from spatialmap.scripts.resolve_segmentation import main

if __name__ == "__main__":
    cli.run(main)
