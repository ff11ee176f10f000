#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
# The README's test command and CI (.ci/run) both run exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
# Independent readers/viewers the tests check our output against (dcmtk, dcm2niix) and a real browser for the report.
if ! command -v dcmdump >/dev/null || ! command -v dcm2niix >/dev/null || ! command -v chromium >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk dcm2niix chromium >/dev/null
fi

# torch first, pinned, so nothing resolves another (CUDA) build.
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[dev]"

exec python3 -m pytest -q "$@"
