"""spatialmap: the Python logic behind the pipeline's ``bin/`` scripts.

Each module does one thing (reading slides, QC, signatures, mapping, report
tables); the scripts in ``bin/`` are thin command-line shims around
``spatialmap.scripts`` (also the ``spatialmap`` entry point and ``python -m spatialmap``).
"""

import sys as _sys
from pathlib import Path as _Path

__version__ = "0.1.0"  # the manifest version of nextflow.config (a unit test checks they agree)


def _check_checkout() -> None:
    """Warn when a script of one checkout runs with another checkout's package.

    The project's virtualenv (tools/setup.sh) is shared by every checkout on a machine, and its
    editable install of this package points at the checkout that last ran setup.sh: a tool of
    checkout A (``python A/tools/x.py``) would otherwise run checkout B's code without a word.
    (A copy of a checkout, as pytest-workflow makes without --symlink, warns too: harmless.)
    """
    script = _sys.argv[0] if getattr(_sys, "argv", None) else ""
    if not script or script.startswith("-"):
        return
    package = _Path(__file__).resolve().parent
    for root in list(_Path(script).resolve().parents)[:3]:
        own = root / "bin" / "spatialmap"
        if (own / "__init__.py").is_file():
            if own.resolve() != package:
                print(
                    f"WARNING: {script} is in the checkout {root} but runs with the spatialmap package of "
                    f"{package.parent.parent}: run `bash {root}/tools/setup.sh` (the environment's editable "
                    f"install points at one checkout) or set PYTHONPATH={own.parent}",
                    file=_sys.stderr,
                )
            return


_check_checkout()
