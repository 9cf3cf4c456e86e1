#!/usr/bin/env python3
"""Compare two .npz files output by output (reference vs. candidate) and fail on a mismatch.

For every key of REF.npz it prints the max absolute error, max|ref|, their ratio and the
cosine similarity between the flattened arrays (computed in float64). A float output fails
when  max_abs_err > rtol_max * max|ref|  or  cos < min_cos.  NaNs must sit at the same
positions in both arrays and infinities must match exactly; those positions are then left
out of the numbers. When the reference is all zeros the cosine is 1 if the candidate is also
all zeros, else 0. Integer and bool outputs must be exactly equal. A missing key, a shape
mismatch, or a float/integer kind mismatch is a failure; keys only in GOT.npz are listed but
are not a failure. Exit status: 0 all passed, 1 some output failed, 2 usage / file error.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npzio import load_npz  # noqa: E402


def compare_one(ref: np.ndarray, got: np.ndarray, rtol_max: float, min_cos: float) -> tuple[bool, str]:
    if ref.shape != got.shape:
        return False, f"shape mismatch: ref {list(ref.shape)} vs got {list(got.shape)}"
    rk, gk = ref.dtype.kind, got.dtype.kind
    if rk in "biu" or gk in "biu":
        if (rk in "fc") != (gk in "fc"):
            return False, f"dtype kind mismatch: ref {ref.dtype} vs got {got.dtype}"
        eq = np.asarray(ref == got)
        n_bad = int(eq.size - np.count_nonzero(eq))
        note = "" if ref.dtype == got.dtype else f" (dtypes {ref.dtype} / {got.dtype})"
        if n_bad:
            idx = np.unravel_index(int(np.argmin(eq.ravel())), ref.shape) if ref.ndim else ()
            return False, (f"exact: {n_bad}/{eq.size} elements differ, first at {list(map(int, idx))}: "
                           f"ref {ref[idx]} got {got[idx]}{note}")
        return True, f"exact: equal ({eq.size} elements){note}"
    if rk not in "fc" or gk not in "fc":
        return False, f"unsupported dtypes ref {ref.dtype} / got {got.dtype}"

    r = ref.astype(np.complex128 if rk == "c" else np.float64).ravel()
    g = got.astype(np.complex128 if gk == "c" else np.float64).ravel()
    rn, gn = np.isnan(r), np.isnan(g)
    if not np.array_equal(rn, gn):
        return False, f"NaN positions differ (ref {int(rn.sum())} NaNs, got {int(gn.sum())})"
    ri, gi = np.isinf(r), np.isinf(g)
    if not np.array_equal(ri, gi) or not np.array_equal(r[ri], g[gi]):
        return False, f"Inf positions/signs differ (ref {int(ri.sum())} Infs, got {int(gi.sum())})"
    keep = ~(rn | ri)
    r, g = r[keep], g[keep]
    if r.size == 0:
        return True, "no finite elements; NaN/Inf pattern equal"
    err = float(np.max(np.abs(r - g)))
    ref_max = float(np.max(np.abs(r)))
    rn2, gn2 = float(np.linalg.norm(r)), float(np.linalg.norm(g))
    if rn2 == 0.0 or gn2 == 0.0:
        cos = 1.0 if rn2 == gn2 else 0.0
    else:
        cos = float(np.real(np.vdot(r, g)) / (rn2 * gn2))
    ratio = err / ref_max if ref_max > 0 else (0.0 if err == 0 else float("inf"))
    ok = err <= rtol_max * ref_max and cos >= min_cos
    why = []
    if err > rtol_max * ref_max:
        why.append(f"ratio {ratio:.3g} > {rtol_max:g}")
    if cos < min_cos:
        why.append(f"cos {cos:.9f} < {min_cos}")
    msg = (f"max_abs_err {err:.4g}  max|ref| {ref_max:.4g}  ratio {ratio:.3g}  cos {cos:.9f}"
           + (f"  FAIL: {', '.join(why)}" if why else ""))
    return ok, msg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("ref", metavar="REF.npz", help="reference outputs (e.g. from ort_run.py)")
    ap.add_argument("got", metavar="GOT.npz", help="outputs to check")
    ap.add_argument("--rtol-max", type=float, default=1e-3,
                    help="allowed max_abs_err relative to max|ref| (default 1e-3)")
    ap.add_argument("--min-cos", type=float, default=0.99999,
                    help="minimum cosine similarity (default 0.99999)")
    args = ap.parse_args()

    try:
        ref, got = load_npz(args.ref), load_npz(args.got)
    except (OSError, ValueError) as e:
        print(f"error: cannot read npz: {e}", file=sys.stderr)
        return 2
    if not ref:
        print(f"error: {args.ref} holds no arrays", file=sys.stderr)
        return 2

    failed = 0
    width = max(len(k) for k in ref)
    for key in ref:
        r = ref[key]
        if key not in got:
            print(f"{key:<{width}}  FAIL: missing from {args.got} (it has {sorted(got)})")
            failed += 1
            continue
        ok, msg = compare_one(r, got[key], args.rtol_max, args.min_cos)
        shape = f"{r.dtype}{list(r.shape)}"
        print(f"{key:<{width}}  {'ok  ' if ok else 'FAIL'}  {shape}  {msg}")
        failed += not ok
    extra = sorted(set(got) - set(ref))
    if extra:
        print(f"note: keys only in {args.got} (not compared): {extra}")
    print(f"{len(ref) - failed}/{len(ref)} outputs passed"
          f" (rtol_max {args.rtol_max:g}, min_cos {args.min_cos})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
