#!/usr/bin/env bash
# Fetches the PP-OCR ONNX models (PaddleOCR PP-OCRv4 det + rec, PP-OCR mobile v2.0 angle cls)
# that the rapidocr-onnxruntime wheel on PyPI bundles, into a cache folder:
#
#   CACHE_DIR/ppocr_det.onnx   <- rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
#   CACHE_DIR/ppocr_rec.onnx   <- rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx
#   CACHE_DIR/ppocr_cls.onnx   <- rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx
#   CACHE_DIR/ppocr_keys.txt   <- the rec model's character dictionary: a keys .txt from the
#                                 wheel if it has one, else the model's "character" metadata
#                                 entry (one character per line; needs the venv's onnx)
#
# Usage: scripts/fetch_models.sh [CACHE_DIR]     (default: <repo>/.cache/models)
# Idempotent: files already present (and matching their pinned sha256) are kept, and nothing
# is downloaded when all are there.
# Needs network access to PyPI (pip download --no-deps rapidocr-onnxruntime==1.4.4).
set -euo pipefail

case "${1:-}" in
  -h|--help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-"$root/.cache/models"}
pkg="rapidocr-onnxruntime==1.4.4"

# Python used for pip and for the metadata extraction: the project venv when it exists.
if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# wheel member (basename) -> cache name
declare -A want=(
  [ch_PP-OCRv4_det_infer.onnx]=ppocr_det.onnx
  [ch_PP-OCRv4_rec_infer.onnx]=ppocr_rec.onnx
  [ch_ppocr_mobile_v2.0_cls_infer.onnx]=ppocr_cls.onnx
)

# sha256 of the models inside rapidocr-onnxruntime 1.4.4
declare -A sha=(
  [ppocr_det.onnx]=d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
  [ppocr_rec.onnx]=48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
  [ppocr_cls.onnx]=e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c
)
sha_ok() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "${sha[$(basename "$1")]}" ]; }

missing=0
for dst in "${want[@]}"; do
  if [ -s "$cache/$dst" ] && ! sha_ok "$cache/$dst"; then
    echo "checksum mismatch: $cache/$dst; fetching it again"
    rm -f "$cache/$dst"
  fi
done
for dst in "${want[@]}" ppocr_keys.txt; do
  if [ -s "$cache/$dst" ]; then echo "present: $cache/$dst"; else missing=1; fi
done
if [ "$missing" = 0 ]; then
  echo "all PP-OCR models present in $cache; nothing to do"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

need_wheel=0
for dst in "${want[@]}"; do [ -s "$cache/$dst" ] || need_wheel=1; done
# keys can only come from the wheel or the rec model; fetch the wheel if neither helps
if [ ! -s "$cache/ppocr_keys.txt" ] && [ ! -s "$cache/ppocr_rec.onnx" ]; then need_wheel=1; fi

wheel_dir="$tmp/wheel"
if [ "$need_wheel" = 1 ]; then
  echo "downloading $pkg from PyPI ..."
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp/dl" "$pkg"
  whl=$(ls "$tmp"/dl/*.whl)
  echo "downloaded $(basename "$whl") ($(du -h "$whl" | cut -f1))"
  "$py" - "$whl" "$wheel_dir" <<'EOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
EOF
  for src in "${!want[@]}"; do
    dst=${want[$src]}
    if [ -s "$cache/$dst" ]; then continue; fi
    found=$(find "$wheel_dir" -type f -name "$src" | head -n1)
    if [ -z "$found" ]; then
      echo "error: $src not found in $(basename "$whl")" >&2
      exit 1
    fi
    cp "$found" "$cache/$dst.part"
    if [ "$(sha256sum "$cache/$dst.part" | cut -d' ' -f1)" != "${sha[$dst]}" ]; then
      rm -f "$cache/$dst.part"
      echo "error: $src from $(basename "$whl") has an unexpected sha256" >&2
      exit 1
    fi
    mv "$cache/$dst.part" "$cache/$dst"
    echo "copied: ${found#"$wheel_dir"/} -> $cache/$dst ($(du -h "$cache/$dst" | cut -f1))"
  done
fi

if [ ! -s "$cache/ppocr_keys.txt" ]; then
  keys=""
  if [ -d "$wheel_dir" ]; then
    keys=$(find "$wheel_dir" -type f \( -name 'ppocr_keys*.txt' -o -name '*dict*.txt' -o -name '*keys*.txt' \) | head -n1)
  fi
  if [ -n "$keys" ]; then
    cp "$keys" "$cache/ppocr_keys.txt"
    echo "copied: ${keys#"$wheel_dir"/} -> $cache/ppocr_keys.txt"
  elif "$py" -c 'import onnx' 2>/dev/null; then
    if "$py" - "$cache/ppocr_rec.onnx" "$cache/ppocr_keys.txt" <<'EOF'
import sys, onnx
m = onnx.load(sys.argv[1], load_external_data=False)
meta = {p.key: p.value for p in m.metadata_props}
if "character" not in meta:
    sys.exit(1)
chars = meta["character"].splitlines()
with open(sys.argv[2] + ".part", "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(chars) + "\n")
import os
os.replace(sys.argv[2] + ".part", sys.argv[2])
print(f"extracted: {len(chars)} characters from ppocr_rec.onnx metadata 'character' -> {sys.argv[2]}")
EOF
    then :; else echo "note: the wheel has no keys file and the rec model no 'character' metadata; no ppocr_keys.txt"; fi
  else
    echo "note: no keys file in the wheel and no python with onnx to read the rec model's metadata; run scripts/setup-python.sh first for ppocr_keys.txt"
  fi
fi

echo "done: $cache"
ls -l "$cache"
