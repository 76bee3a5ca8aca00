#!/usr/bin/env bash
# Run where PyPI is reachable: download the wheels run.sh unpacks on an offline GPU box, for that box's Python.
#
#   benchmarks/device/fetch_wheels.sh 3.12                          # -> <repo>/.whl/
#   benchmarks/device/fetch_wheels.sh 3.12 manylinux2014_x86_64 /some/dir
#
# Binary wheels only, no dependencies resolved (the list in offline.py is the whole closure beyond the box's own
# packages). The default platform tag, manylinux2014_x86_64 (glibc 2.17), suits any current x86-64 Linux.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER=${1:?usage: fetch_wheels.sh PYTHON_VERSION [PLATFORM] [DEST], e.g. fetch_wheels.sh 3.12}
PLATFORM=${2:-manylinux2014_x86_64}
DEST=${3:-$PWD/.whl}
PY=${PYTHON:-python3}
mkdir -p "$DEST"
"$PY" -m benchmarks.device.offline --requirements | while read -r requirement; do
  "$PY" -m pip download --quiet --only-binary=:all: --no-deps --python-version "$PYVER" --platform "$PLATFORM" \
    --dest "$DEST" "$requirement"
done
ls -l "$DEST"
