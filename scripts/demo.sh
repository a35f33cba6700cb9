#!/usr/bin/env bash
# The main job on a fresh machine: install citypilot in .venv, then run the control centre on embedded
# defaults with the simulated Dijon métropole living in it (citypilot demo). It prints the URL and a
# login. Extra arguments go to `citypilot demo` (e.g. --speed 60, --scenario flood). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_venv.sh
exec citypilot demo "$@"
