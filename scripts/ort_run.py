#!/usr/bin/env python3
"""Run an ONNX model with ONNX Runtime (the reference oracle) and save every output to .npz.

Uses the CPUExecutionProvider with the default graph optimisation level (ORT_ENABLE_ALL).
Inputs are read from IN.npz by graph input name; an array whose dtype differs from the
declared one is cast (with a warning); a missing input is an error, extra keys are ignored
with a warning. Outputs are saved keyed by graph output name (uncompressed .npz). Outputs
that are not tensors (sequences, maps) are skipped with a warning.
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
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npzio import load_npz, save_npz  # noqa: E402

ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def make_session(model: str | Path, threads: int = 0, optimize: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])


def prepare_feeds(sess, arrays: dict[str, np.ndarray], warn=print) -> dict[str, np.ndarray]:
    feeds = {}
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise SystemExit(f"error: input npz lacks model inputs {missing} (has {sorted(arrays)})")
    extra = sorted(set(arrays) - set(names))
    if extra:
        warn(f"warning: ignoring npz keys that are not model inputs: {extra}")
    for i in sess.get_inputs():
        a = arrays[i.name]
        want = ORT_TYPES.get(i.type)
        if want is not None and a.dtype != want:
            warn(f"warning: casting input {i.name!r} from {a.dtype} to {np.dtype(want)}")
            a = a.astype(want)
        feeds[i.name] = a
    return feeds


def run_model(model: str | Path, feeds: dict[str, np.ndarray], threads: int = 0,
              warn=print) -> dict[str, np.ndarray]:
    sess = make_session(model, threads)
    feeds = prepare_feeds(sess, feeds, warn)
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    result = {}
    for name, val in zip(names, outs):
        if isinstance(val, np.ndarray):
            result[name] = val
        else:
            warn(f"warning: output {name!r} is a {type(val).__name__}, not a tensor; skipped")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("model", metavar="MODEL", help="ONNX model file")
    ap.add_argument("inp", metavar="IN.npz", help="inputs keyed by graph input name")
    ap.add_argument("out", metavar="OUT.npz", help="where to write the outputs")
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads (default 0 = ORT's choice: one per physical core)")
    args = ap.parse_args()

    arrays = load_npz(args.inp)
    t0 = time.perf_counter()
    outs = run_model(args.model, arrays, args.threads, warn=lambda m: print(m, file=sys.stderr))
    dt = time.perf_counter() - t0
    save_npz(args.out, outs)
    for k, v in outs.items():
        print(f"{k}: {v.dtype} {list(v.shape)}")
    print(f"wrote {args.out} ({len(outs)} outputs; session create + run {dt * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
