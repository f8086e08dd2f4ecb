#!/usr/bin/env python3
"""The command-line script compute_rctd_q.py: its code, docstring and --help are in spatialmap.scripts.compute_rctd_q."""

from spatialmap import cli
from spatialmap.scripts.compute_rctd_q import main

if __name__ == "__main__":
    cli.run(main)
