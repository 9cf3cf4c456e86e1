#!/usr/bin/env bash
# kvant's main job on a bundled example. Until quantization lands this runs the float path:
# three real PP-OCR models (text detection, recognition, direction classification, fetched
# from the rapidocr-onnxruntime wheel on PyPI) through kvant's runtime, checks the outputs
# against ONNX Runtime on the same inputs, and compares latency and peak memory with ONNX
# Runtime at 1 and 2 threads.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/prepare_test_data.sh >/dev/null
cargo build --release -q -p kvant-cli
kvant="$root/target/release/kvant"
py="$root/.venv/bin/python"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for m in det rec cls; do
  model=".cache/models/ppocr_$m.onnx"
  echo "== ppocr_$m: kvant vs ONNX Runtime outputs"
  "$kvant" run "$model" --input ".cache/models/ppocr_$m.input.npz" --output "$out/$m.npz" >/dev/null
  "$py" scripts/compare_npz.py ".cache/models/ppocr_$m.expected.npz" "$out/$m.npz"
done
for m in det rec cls; do
  echo "== ppocr_$m: speed and memory against ONNX Runtime"
  "$py" bench/compare_ort.py ".cache/models/ppocr_$m.onnx" --input ".cache/models/ppocr_$m.input.npz" \
    --threads 1 2 --iters 10 --rounds 2
done
