#!/bin/sh
# Installs one exact-pin requirements file into the image's venv, then checks it:
#     install_requirements.sh FILE [python modules to import]
# pip builds or downloads the wheels into $WHEELHOUSE, then installs from it with
# --no-deps (so the image holds exactly the pinned packages); a mounted $WHEELHOUSE
# (tools/build_images.sh mounts the project cache there) is kept, else removed.
# PIP_CERT / PIP_INDEX_URL come from the build (a proxy's CA is mounted, never copied).
set -eu
file=$1; shift
wheelhouse=${WHEELHOUSE:-/tmp/wheelhouse}
export PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
export PIP_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
pip wheel --no-deps --use-pep517 --wheel-dir "$wheelhouse" -r "$file"
pip install --no-deps --no-index --find-links "$wheelhouse" -r "$file"
mountpoint -q "$wheelhouse" || rm -rf "$wheelhouse"
if [ "$#" -gt 0 ]; then
    pip check
    check=$(mktemp -d)
    modules=$(echo "$@" | tr ' ' ',')
    MPLCONFIGDIR=$check NUMBA_CACHE_DIR=$check python -c "import $modules"
    rm -rf "$check"
fi
