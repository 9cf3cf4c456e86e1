#!/usr/bin/env python3
"""Build a realistic input .npz for an ONNX model (one array per graph input).

Keys are the graph input names (initializers that are listed as graph inputs are left out).
Arrays are written like numpy.savez does (uncompressed .npy members, little-endian).

Dimension resolution, per input and axis:
  1. a static dim (dim_value > 0) is used as is;
  2. --dim NAME=VALUE sets every dim whose dim_param is NAME, and --dim INPUT:AXIS=VALUE one axis
     of one input (for unnamed dims, e.g. --dim x:2=48); these override static dims too;
  3. axis 0 and dims named like a batch (batch, N, p2o.DynamicDimension.0 ...) take --batch;
  4. the spatial dims (axes 2, 3) of a 4-D float NCHW image input (C = 1 or 3) take the
     preset's size: det 640x640, rec 48x320, cls 48x192, generic 224x224;
  5. any other dynamic dim takes --default-dim (16).
The preset comes from --preset, or with "auto" from the model file name (det / rec / cls in
it, as in ppocr_det.onnx), else "generic".

Filling:
  * 4-D float NCHW inputs with 1 or 3 channels get a synthetic document-like image (smooth
    paper-coloured gradient, filled rectangles / ellipses, rows of dark glyph-like strokes,
    Gaussian noise), quantised to uint8 and normalised like PP-OCR's preprocessing:
    (x / 255 - 0.5) / 0.5, so values are in [-1, 1];
  * other float inputs get smooth noise (sum of sinusoids plus N(0, 0.1)), roughly N(0, 1);
  * integer inputs: names with "mask" -> 1 (ones); "token_type"/"segment" -> 0; names with
    "len" -> the length of the last dynamic axis; otherwise indices in [0, V) where V is the
    size of the table they index (found through Gather/GatherElements/Embedding-like uses of
    the input in the graph), or [0, 100) when no table is found;
  * bool inputs: True.
Everything is drawn from numpy.random.default_rng(--seed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":  # started with another interpreter: re-run with the project venv
    _venv = Path(__file__).resolve().parent.parent / ".venv"
    if (_venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(str(_venv / "bin" / "python"), [str(_venv / "bin" / "python"), *sys.argv])

import argparse
import re

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npzio import save_npz  # noqa: E402

PRESET_HW = {"det": (640, 640), "rec": (48, 320), "cls": (48, 192), "generic": (224, 224)}
BATCH_NAME = re.compile(r"(^|[^a-z])(batch|bs|n|b|batch_size|p2o\.dynamicdimension\.0)$", re.I)


def guess_preset(model_path: str | Path) -> str:
    stem = Path(model_path).stem.lower()
    for p in ("det", "rec", "cls"):
        if re.search(rf"(^|[^a-z]){p}([^a-z]|$)", stem):
            return p
    return "generic"


def parse_dims(specs: list[str]) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
    by_name: dict[str, int] = {}
    by_axis: dict[tuple[str, int], int] = {}
    for s in specs or []:
        if "=" not in s:
            raise SystemExit(f"error: --dim {s!r} is not NAME=VALUE or INPUT:AXIS=VALUE")
        key, val = s.rsplit("=", 1)
        try:
            v = int(val)
        except ValueError:
            raise SystemExit(f"error: --dim {s!r}: {val!r} is not an integer") from None
        m = re.fullmatch(r"(.*):(-?\d+)", key)
        if m:
            by_axis[(m.group(1), int(m.group(2)))] = v
        else:
            by_name[key] = v
    return by_name, by_axis


def _np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _is_image(elem_type: int, rank: int, dims) -> bool:
    if rank != 4 or not np.issubdtype(_np_dtype(elem_type), np.floating):
        return False
    c = dims[1]
    return c.HasField("dim_value") and c.dim_value in (1, 3)


def resolve_shape(vi: onnx.ValueInfoProto, preset: str, batch: int, default_dim: int,
                  by_name: dict[str, int], by_axis: dict[tuple[str, int], int]) -> tuple[int, ...]:
    tt = vi.type.tensor_type
    dims = list(tt.shape.dim)
    image = _is_image(tt.elem_type, len(dims), dims)
    shape = []
    for axis, d in enumerate(dims):
        for key in ((vi.name, axis), (vi.name, axis - len(dims))):
            if key in by_axis:
                shape.append(by_axis[key])
                break
        else:
            if d.dim_param and d.dim_param in by_name:
                shape.append(by_name[d.dim_param])
            elif d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif axis == 0 or (d.dim_param and BATCH_NAME.search(d.dim_param)):
                shape.append(batch)
            elif image and axis in (2, 3):
                shape.append(PRESET_HW[preset][axis - 2])
            else:
                shape.append(default_dim)
    return tuple(shape)


# ---------------------------------------------------------------------------------------
# value generators
# ---------------------------------------------------------------------------------------


def synthetic_image(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """A document/scene-like uint8 image, HxWxC."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = yy / max(h - 1, 1), xx / max(w - 1, 1)
    img = np.empty((h, w, c), np.float32)
    base = rng.uniform(170, 225, size=c)
    for ch in range(c):
        gx, gy = rng.uniform(-35, 35, size=2)
        fx, fy, ph = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        img[..., ch] = base[ch] + gx * xn + gy * yn + 10 * np.sin(2 * np.pi * (fx * xn + fy * yn) + ph)

    # filled shapes (rectangles and ellipses), drawn in their bounding boxes only
    for _ in range(int(rng.integers(2, 6))):
        bh, bw = int(rng.integers(max(h // 10, 2), max(h // 3, 3))), int(rng.integers(max(w // 10, 2), max(w // 3, 3)))
        y0, x0 = int(rng.integers(0, max(h - bh, 1))), int(rng.integers(0, max(w - bw, 1)))
        color = rng.uniform(30, 250, size=c)
        if rng.random() < 0.5:
            img[y0:y0 + bh, x0:x0 + bw] = 0.7 * color + 0.3 * img[y0:y0 + bh, x0:x0 + bw]
        else:
            ly, lx = np.mgrid[0:bh, 0:bw]
            m = ((ly - bh / 2) / (bh / 2)) ** 2 + ((lx - bw / 2) / (bw / 2)) ** 2 <= 1.0
            img[y0:y0 + bh, x0:x0 + bw][m] = color

    # text lines: rows of glyph-like dark strokes
    line_h = int(np.clip(h // 3 if h <= 64 else rng.integers(14, 40), 6, 64))
    pitch = int(line_h * 1.5)
    slots = max((h - line_h) // pitch, 1)
    n_lines = 1 if h <= 64 else int(rng.integers(min(3, slots), slots + 1))
    rows = [(h - line_h) // 2] if n_lines == 1 else \
        sorted(int(r) * pitch + int(rng.integers(0, pitch - line_h + 1)) for r in rng.choice(slots, n_lines, replace=False))
    for ty in rows:
        tx = int(rng.integers(0, max(w // 8, 1)))
        tx_end = w - int(rng.integers(0, max(w // 8, 1))) if n_lines == 1 else min(w, tx + int(rng.integers(w // 4, w)))
        ink = rng.uniform(0, 70, size=c)
        gw = max(int(line_h * rng.uniform(0.6, 0.9)), 3)
        stroke = max(line_h // 8, 1)
        x = tx
        while x + gw < tx_end:
            for _ in range(int(rng.integers(2, 5))):  # 2-4 strokes per glyph
                if rng.random() < 0.5:  # vertical stroke
                    sx = x + int(rng.integers(0, gw - stroke + 1))
                    sy0 = ty + int(rng.integers(0, line_h // 3 + 1))
                    sy1 = ty + line_h - int(rng.integers(0, line_h // 3 + 1))
                    img[sy0:sy1, sx:sx + stroke] = ink
                else:  # horizontal stroke
                    sy = ty + int(rng.integers(0, line_h - stroke + 1))
                    sx0 = x + int(rng.integers(0, gw // 3 + 1))
                    sx1 = x + gw - int(rng.integers(0, gw // 3 + 1))
                    img[sy:sy + stroke, sx0:sx1] = ink
            x += gw + max(int(gw * rng.uniform(0.1, 0.4)), 1)
            if rng.random() < 0.12:
                x += gw  # word gap

    img += rng.normal(0, 4.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def image_tensor(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    n, c, h, w = shape
    out = np.empty(shape, np.float32)
    for i in range(n):
        img = synthetic_image(rng, h, w, c).astype(np.float32)
        out[i] = ((img / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out.astype(dtype)


def smooth_tensor(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if len(shape) == 0 or 0 in shape:
        return rng.normal(size=shape).astype(dtype)
    flat = int(np.prod(shape))
    t = np.linspace(0, 1, flat, dtype=np.float64)
    x = np.zeros(flat)
    for _ in range(4):
        x += rng.normal(0, 0.7) * np.sin(2 * np.pi * rng.uniform(1, 40) * t + rng.uniform(0, 6.3))
    x += rng.normal(0, 0.1, size=flat)
    return x.reshape(shape).astype(dtype)


def index_bound(model: onnx.ModelProto, name: str) -> int | None:
    """Size of the table that input `name` indexes via Gather-like nodes, if found."""
    g = model.graph
    shapes = {t.name: list(t.dims) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            shapes[node.output[0]] = list(node.attribute[0].t.dims)
    # follow cheap pass-through ops (Cast, Reshape, Unsqueeze, Squeeze, Identity, Flatten)
    names, bounds = {name}, []
    for _ in range(4):
        grew = False
        for node in g.node:
            if node.op_type in ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten") \
                    and node.input and node.input[0] in names and node.output[0] not in names:
                names.add(node.output[0])
                grew = True
        if not grew:
            break
    for node in g.node:
        if node.op_type in ("Gather", "GatherElements", "GatherND") and len(node.input) > 1 \
                and node.input[1] in names and node.input[0] in shapes:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = shapes[node.input[0]]
            if dims:
                bounds.append(dims[axis])
    return min(bounds) if bounds else None


def build_inputs(model_path: str | Path, seed: int = 0, batch: int = 1, dims: list[str] | None = None,
                 preset: str = "auto", default_dim: int = 16) -> dict[str, np.ndarray]:
    model = onnx.load(str(model_path), load_external_data=False)
    if preset == "auto":
        preset = guess_preset(model_path)
    by_name, by_axis = parse_dims(dims or [])
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if vi.type.WhichOneof("value") != "tensor_type":
            raise SystemExit(f"error: input {vi.name!r} is not a tensor "
                             f"({vi.type.WhichOneof('value')}); not supported")
        tt = vi.type.tensor_type
        shape = resolve_shape(vi, preset, batch, default_dim, by_name, by_axis)
        dtype = _np_dtype(tt.elem_type)
        lname = vi.name.lower()
        if dtype == np.bool_:
            arr = np.ones(shape, np.bool_)
        elif np.issubdtype(dtype, np.floating):
            if _is_image(tt.elem_type, len(shape), list(tt.shape.dim)):
                arr = image_tensor(rng, shape, dtype)
            else:
                arr = smooth_tensor(rng, shape, dtype)
        elif np.issubdtype(dtype, np.integer):
            if "mask" in lname:
                arr = np.ones(shape, dtype)
            elif "token_type" in lname or "segment" in lname:
                arr = np.zeros(shape, dtype)
            elif "len" in lname:
                dyn = [s for s, d in zip(shape, tt.shape.dim) if not d.dim_value]
                arr = np.full(shape, dyn[-1] if dyn else default_dim, dtype)
            else:
                hi = index_bound(model, vi.name) or 100
                arr = rng.integers(0, hi, size=shape).astype(dtype)
        else:
            raise SystemExit(f"error: input {vi.name!r} has unsupported dtype {dtype}")
        feeds[vi.name] = arr
    return feeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", metavar="MODEL", help="ONNX model file")
    ap.add_argument("out", metavar="OUT.npz", help="output .npz")
    ap.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    ap.add_argument("--batch", type=int, default=1, help="batch size for dynamic batch dims (default 1)")
    ap.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                    help="set a symbolic dim by name, or INPUT:AXIS=VALUE; repeatable")
    ap.add_argument("--preset", choices=["auto", *PRESET_HW], default="auto",
                    help="image size preset for dynamic NCHW inputs (default: from the file name)")
    ap.add_argument("--default-dim", type=int, default=16, help="size of other dynamic dims (default 16)")
    args = ap.parse_args()

    feeds = build_inputs(args.model, args.seed, args.batch, args.dim, args.preset, args.default_dim)
    save_npz(args.out, feeds)
    for k, v in feeds.items():
        rng_s = f"[{v.min()}, {v.max()}]" if v.size else "[]"
        print(f"{k}: {v.dtype} {list(v.shape)} range {rng_s}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
