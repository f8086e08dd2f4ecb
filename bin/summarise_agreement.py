#!/usr/bin/env python3
"""The command-line script summarise_agreement.py: its code, docstring and --help are in spatialmap.scripts.summarise_agreement."""

from spatialmap import cli
from spatialmap.scripts.summarise_agreement import main

if __name__ == "__main__":
    cli.run(main)
