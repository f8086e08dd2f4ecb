#!/usr/bin/env python3
"""The command-line script train_celltypist.py: its code, docstring and --help are in spatialmap.scripts.train_celltypist."""

from spatialmap import cli
from spatialmap.scripts.train_celltypist import main

if __name__ == "__main__":
    cli.run(main)
