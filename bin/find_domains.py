#!/usr/bin/env python3
"""The command-line script find_domains.py: its code, docstring and --help are in spatialmap.scripts.find_domains."""

from spatialmap import cli
from spatialmap.scripts.find_domains import main

if __name__ == "__main__":
    cli.run(main)
