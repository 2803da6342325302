#!/usr/bin/env bash
# Create the virtualenv (with a Python >= 3.12 found by find-python.sh) and install the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  python=$(scripts/find-python.sh)
  echo "Creating $venv with $python"
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r requirements-dev.txt
touch "$venv/.installed"
