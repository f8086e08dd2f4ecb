"""``python -m spatialmap <command> [options]``: the same as the ``spatialmap`` entry point."""

import sys

from spatialmap.scripts import main

if __name__ == "__main__":
    sys.exit(main())
