"""spatialmap: the Python logic behind the pipeline's ``bin/`` scripts.

Each module does one thing (reading slides, QC, signatures, mapping, report
tables); the scripts in ``bin/`` are thin command-line wrappers around them.
"""

__version__ = "0.1.0"
