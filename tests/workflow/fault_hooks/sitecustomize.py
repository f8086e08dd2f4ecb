"""Test-only fault hook (conf/test_faults.config puts this folder on PYTHONPATH of one task).

When SPATIALMAP_FAULT_KILL_WRITE_FILE names a file, the Python process SIGKILLs itself at
the moment that file would be moved into place: its content has been written under the
temporary name (spatialmap.cli.atomic_path) but the rename has not happened, which is the
last instant of a write a kill can interrupt.
"""

import os
import signal
import sys

_target = os.environ.get("SPATIALMAP_FAULT_KILL_WRITE_FILE")

if _target:
    _replace = os.replace

    def _killing_replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == _target:
            print(
                f"test fault: killing the task while it writes {_target} (temporary file {os.fspath(src)})",
                file=sys.stderr,
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)

    os.replace = _killing_replace
