#!/usr/bin/env bash
# Creates the project's Python virtualenv (.venv) with pinned packages: the ONNX Runtime oracle,
# the onnx wheel (node-test definitions, checker) and numpy. Idempotent: a venv whose stamp matches
# the pinned list is reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/scripts/requirements.txt"
stamp="$venv/.kvant-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
