#!/usr/bin/env bash
# Fuzzes kvant's ONNX loader (fuzz/fuzz_targets/load_model.rs) with cargo-fuzz for SECONDS
# (default 300), one job, 2 GiB RSS limit. The corpus (fuzz/corpus/load_model) is seeded from
# the ONNX node-test models (KVANT_NODE_TESTS, default .cache/node-tests, made by
# scripts/gen_node_tests.py). Crashes land in fuzz/artifacts/load_model/.
# Needs cargo-fuzz (installed if missing) and a nightly toolchain; without nightly the stable
# toolchain is used with RUSTC_BOOTSTRAP=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
node_tests=${KVANT_NODE_TESTS:-$root/.cache/node-tests}
corpus=$root/fuzz/corpus/load_model

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

if [ ! -d "$node_tests" ]; then
  echo "error: $node_tests is missing: create it with scripts/gen_node_tests.py" >&2
  exit 1
fi
mkdir -p "$corpus"
# Seeds are (re)added on every run, so an interrupted seeding or a pruned corpus heals.
# Small models only: libFuzzer mutates best on short inputs (see -max_len below).
for model in "$node_tests"/*/model.onnx; do
  seed="$corpus/seed-$(basename "$(dirname "$model")").onnx"
  if [ ! -e "$seed" ] && [ "$(stat -c %s "$model")" -le 65536 ]; then
    cp "$model" "$seed"
  fi
done
echo "corpus: $(ls "$corpus" | wc -l) files"

cd "$root/fuzz"
cargo "${toolchain[@]}" fuzz run load_model "$corpus" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
