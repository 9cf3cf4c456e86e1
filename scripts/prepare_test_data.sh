#!/usr/bin/env bash
# Creates everything the test suite reads, under .cache/ (idempotent, a few minutes at most):
#   .venv/                      pinned Python packages (ONNX Runtime is the oracle)
#   .cache/models/              PP-OCRv4 det / rec and mobile cls from the rapidocr wheel, each
#                               with <name>.input.npz and ONNX Runtime's <name>.expected.npz
#   .cache/test-models/         the project's generated CNN / transformer / RNN / control-flow
#                               / detector models, with inputs and ORT outputs
#   .cache/node-tests/          the ONNX backend node tests
#   .cache/fidelity-models/     models that exercise every field of the ONNX schema
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv/bin/python"
bash "$root/scripts/setup-python.sh"
bash "$root/scripts/fetch_models.sh" "$root/.cache/models"
for m in det rec cls; do
  model="$root/.cache/models/ppocr_$m.onnx"
  if [ ! -f "$root/.cache/models/ppocr_$m.expected.npz" ]; then
    "$py" "$root/scripts/make_inputs.py" "$model" "$root/.cache/models/ppocr_$m.input.npz" --seed 1
    "$py" "$root/scripts/ort_run.py" "$model" "$root/.cache/models/ppocr_$m.input.npz" \
      "$root/.cache/models/ppocr_$m.expected.npz" --threads 1
  fi
done
[ -f "$root/.cache/test-models/models.json" ] || "$py" "$root/scripts/make_test_models.py" "$root/.cache/test-models"
"$py" "$root/scripts/gen_node_tests.py" "$root/.cache/node-tests"
if [ -f "$root/scripts/make_fidelity_models.py" ]; then
  "$py" "$root/scripts/make_fidelity_models.py" "$root/.cache/fidelity-models"
fi
