#!/usr/bin/env python3
"""The command-line script estimate_signatures.py: its code, docstring and --help are in spatialmap.scripts.estimate_signatures."""

from spatialmap import cli
from spatialmap.scripts.estimate_signatures import main

if __name__ == "__main__":
    cli.run(main)
