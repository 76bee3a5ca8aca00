#!/usr/bin/env bash
# The GPU run in one line, on a box without network: unpack the carried wheels of what this Python lacks (tensorboardX,
# protobuf, packaging; see offline.py), put them and the repository on PYTHONPATH, then run the suite with the
# arguments given (default: --out device-out). The project is not pip-installed: PYTHONPATH is enough.
#
#   benchmarks/device/run.sh --out "$OUT" --budget 420
#
# Environment: PYTHON (default python3), RLROBOT_WHEELS (default <repo>/.whl), RLROBOT_SITE (default
# /tmp/rlrobot-site).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SITE=${RLROBOT_SITE:-/tmp/rlrobot-site}
"$PY" -m benchmarks.device.offline --wheels "${RLROBOT_WHEELS:-$PWD/.whl}" --target "$SITE"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$#" -eq 0 ]; then set -- --out device-out; fi
exec "$PY" -m benchmarks.device "$@"
