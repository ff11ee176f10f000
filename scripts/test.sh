#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
# The README's test command and CI (.ci/run) both run exactly this script.
#
# Every run installs ldct into a NEW virtual environment (.venv-test, recreated each time; pip's download
# cache is reused), so a dependency that ldct imports but does not declare fails here, as on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
# Independent readers/viewers the tests check our output against (dcmtk, dcm2niix) and a real browser for the report.
if ! command -v dcmdump >/dev/null || ! command -v dcm2niix >/dev/null || ! command -v chromium >/dev/null \
        || ! command -v Orthanc >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk dcm2niix chromium orthanc >/dev/null
fi

VENV="${LDCT_TEST_VENV:-.venv-test}"
python3 -m venv --clear "$VENV"
PY="$VENV/bin/python"
# torch first, pinned to the CPU wheel, so nothing resolves another (CUDA) build.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".[dev]"
# The installed console script must be the one the tests call (tests run `ldct` through this interpreter).
export PATH="$PWD/$VENV/bin:$PATH"

exec "$PY" -m pytest -q "$@"
